"""`bnjobs`: the BatchNorm job service from a shell, through the Python SDK (`bnjobs --help`)."""

from bnjobs.cli.app import app, main

__all__ = ["app", "main"]
