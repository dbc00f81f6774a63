"""Test helpers shared by the suites (fake upstream, servers, configs)."""
