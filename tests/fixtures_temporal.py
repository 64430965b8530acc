"""Real Temporal server fixtures (time-skipping and dev server)."""
