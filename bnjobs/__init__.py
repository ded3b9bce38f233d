"""Python SDK for the BatchNorm job service.

from bnjobs import Client
client = Client("http://127.0.0.1:8000")
job = client.jobs.create(model={"architecture": "mlp", "num_classes": 10}, dataset={"name": "digits"})
job.wait(progress=True)
model = job.model()
model.predict(x)            # class indices, a numpy array
"""

from bnjobs.client import ApiError, Client, Experiment, Job, JobFailed, Model

__all__ = ["ApiError", "Client", "Experiment", "Job", "JobFailed", "Model"]
