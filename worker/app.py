"""The Celery application and its whole configuration, one table, shared by the API and the workers."""

from typing import Any

from celery import Celery

from bncore.settings import Settings, get_settings
from bncore.training.devices import training_device

TRAIN_TASK = "worker.tasks.train_job"
PARENT_PID_VARIABLE = "BN_EMBEDDED_PARENT_PID"  # set for workers the API process starts and watches


def celery_config(settings: Settings) -> dict[str, Any]:
    config: dict[str, Any] = {
        "broker_url": settings.resolved_broker_url,
        "broker_connection_retry_on_startup": True,
        # JSON only: nothing a client can put on the broker is ever unpickled.
        "task_serializer": "json",
        "accept_content": ["json"],
        # The job store, not a Celery result backend, holds each job's state.
        "task_ignore_result": True,
        "task_default_queue": "any",
        # Acknowledge a job after it ran, so a worker lost mid-job leaves it to be delivered again.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # One training job per worker process at a time; a second one would wait behind it.
        "worker_prefetch_multiplier": 1,
        # Ordered soft < hard < visibility timeout. The training loop itself stops a job at
        # JOB_TIME_LIMIT_SECONDS (error `timeout`); Celery's limits are the backstop (prefork pools only).
        "task_soft_time_limit": settings.job_time_limit_seconds + 60,
        "task_time_limit": settings.job_time_limit_seconds + 120,
        # Redis hands an unacknowledged job to another worker after this long: longer than any job.
        "broker_transport_options": {"visibility_timeout": settings.job_time_limit_seconds + 600},
        "worker_hijack_root_logger": False,
    }
    if settings.uses_filesystem_broker:
        folder = settings.broker_folder
        for sub in ("queue", "control", "staging"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        config |= {
            "broker_transport": "worker.broker:Transport",
            "broker_transport_options": {
                "data_folder_in": str(folder / "queue"),
                "data_folder_out": str(folder / "queue"),
                "control_folder": str(folder / "control"),
                # Seconds between polls of the folder: the dispatch latency of the embedded mode.
                "polling_interval": 0.1,
            },
            # Remote control broadcasts over the broker; the folder broker has no one to listen.
            "worker_enable_remote_control": False,
        }
    return config


def create_celery(settings: Settings) -> Celery:
    app = Celery("bnjobs", include=["worker.tasks"])
    app.conf.update(celery_config(settings))
    return app


celery_app = create_celery(get_settings())


def worker_queues(settings: Settings) -> list[str]:
    """The queues this host's workers consume: WORKER_QUEUES, else by the device it has."""
    if settings.worker_queues:
        return [queue.strip() for queue in settings.worker_queues.split(",") if queue.strip()]
    return ["gpu", "any"] if training_device().type == "cuda" else ["cpu", "any"]


def enqueue_training(job_id: str, device: str) -> None:
    """Route a job to the queue of the device it asks for: `gpu`, `cpu` or `any`."""
    celery_app.send_task(TRAIN_TASK, args=[job_id], queue=device)


def broker_reachable() -> bool:
    try:
        with celery_app.connection_for_write(connect_timeout=2) as connection:
            connection.ensure_connection(max_retries=1, interval_start=0, timeout=2)
        return True
    except Exception:
        return False
