"""Helpers for tests that need a real server on loopback (see docs in each module)."""
