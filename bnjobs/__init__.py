"""Python SDK for the BatchNorm job service.

from bnjobs import Client
client = Client()   # BNJOBS_URL (default http://127.0.0.1:8000) and BNJOBS_API_KEY, as the CLI
job = client.jobs.create(model={"architecture": "mlp", "num_classes": 10}, dataset={"name": "digits"})
job.wait(progress=True)
model = job.model()
model.predict(x)            # class indices, a numpy array
"""

from bnjobs.client import ApiError, Client, Experiment, Job, JobFailed, Model, ServiceUnreachable

__all__ = ["ApiError", "Client", "Experiment", "Job", "JobFailed", "Model", "ServiceUnreachable"]
