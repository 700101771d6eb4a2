"""Benchmarks of pc-switcher against sandbox machines (``python -m bench.<name>``)."""
