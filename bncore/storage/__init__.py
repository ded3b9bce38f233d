"""Persistence: the database and its migrations, the job, model and dataset stores, artifact files."""
