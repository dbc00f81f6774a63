"""gearshift: send each LLM request to the cheapest model that can handle it, and prove quality held."""

__version__ = "0.1.0"
