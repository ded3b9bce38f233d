"""Celery adapter: a worker process that runs training jobs from the queue (`python -m worker`)."""

import os

# Set before torch is imported, which reads it once: torch's C++ side (c10d's TCPStore when a data-parallel
# gang ends, for one) writes its warnings to stderr as plain text, past the JSON log formatter. Its errors
# still come through; the gang's own outcome is reported by the job.
os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
