"""Real PostgreSQL fixtures (embedded server, one per test session)."""
