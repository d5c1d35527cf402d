"""Implementations of the CLI commands that need more than a few lines (run, compile, graph)."""
