"""Test doubles: small scripted stand-ins for external services (never used outside tests and bench/)."""
