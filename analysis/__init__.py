"""Loaders, statistics, diagnostics and plots over runs and studies (see the issue on analysis)."""
