"""`rtctl`: the command line (entry point control.cli:main)."""

from control.cli.main import main

__all__ = ["main"]
