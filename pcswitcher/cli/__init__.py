"""The command line: click commands; every user error becomes one line and an exit code."""
