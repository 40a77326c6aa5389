"""Scenario modules: each has NAME and run(ctx) -> dict (contract in bench/README.md)."""
