"""What learned routers and gates share: request features, text encoders and trained artifacts."""
