"""A sync run: its opening, its named steps, the abort path, safety, carry, cleanup, logs and display."""
