"""Reward sources as plain Python: math checking, code sandbox, judges, routing. Never imports ray."""
