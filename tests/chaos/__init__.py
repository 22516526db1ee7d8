"""Chaos tests: several ``tact run`` processes on one PostgreSQL, killed, frozen and stopped."""
