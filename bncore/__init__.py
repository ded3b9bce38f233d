"""The Batch Normalization domain: specs, networks, BN math, training, datasets and stores.

Nothing here imports FastAPI or Celery; `service/` and `worker/` adapt it to HTTP and to a queue.
"""
