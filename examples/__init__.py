"""Example apps: the same billing API on FastAPI and on Flask (see README.md here)."""
