"""Shared fixtures: a real PostgreSQL (tests/fixtures_pg.py) and real Temporal servers
(tests/fixtures_temporal.py)."""

pytest_plugins = ["tests.fixtures_pg", "tests.fixtures_temporal"]
