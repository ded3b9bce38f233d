"""Celery adapter: a worker process that runs training jobs from the queue (`python -m worker`)."""
