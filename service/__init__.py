"""FastAPI adapter: HTTP routes over the bncore domain (`python -m service`)."""
