"""The markdown report builder (see the issue on reports)."""
