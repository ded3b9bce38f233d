"""The Celery application, built from the settings it is given, and its whole configuration in one table."""

from collections.abc import Callable
from typing import Any

from celery import Celery

from bncore.settings import Settings, get_settings
from bncore.training.devices import training_device
from worker.tasks import TRAIN_TASK, add_tasks

PARENT_PID_VARIABLE = "BN_EMBEDDED_PARENT_PID"  # set for workers the API process starts and watches


def celery_config(settings: Settings) -> dict[str, Any]:
    """Every option we set; each differs from Celery's default, or is spelled out because a job's safety rests on it.

    With the folder broker, its folders are created here: a worker and the API need them to exist.
    """
    config: dict[str, Any] = {
        "broker_url": settings.resolved_broker_url,
        # A worker that starts before Redis waits for it instead of giving up.
        "broker_connection_retry_on_startup": True,
        # JSON only: nothing a client can put on the broker is ever unpickled.
        "task_serializer": "json",
        "accept_content": ["json"],
        # The job store, not a Celery result backend, holds each job's state.
        "task_ignore_result": True,
        # A job sent with no queue named may run on any worker (see worker_queues).
        "task_default_queue": "any",
        # Acknowledge a job after it ran, so a worker lost mid-job leaves it to be delivered again.
        "task_acks_late": True,
        # ...also when the worker process is killed outright (SIGKILL, out of memory).
        "task_reject_on_worker_lost": True,
        # One training job per worker process at a time; a second one would wait behind it.
        "worker_prefetch_multiplier": 1,
        # Ordered soft < hard < visibility timeout. The training loop itself stops a job at
        # JOB_TIME_LIMIT_SECONDS (error `timeout`); Celery's limits are the backstop (prefork pools only).
        "task_soft_time_limit": settings.job_time_limit_seconds + 60,
        "task_time_limit": settings.job_time_limit_seconds + 120,
        # Redis hands an unacknowledged job to another worker after this long: longer than any job.
        "broker_transport_options": {"visibility_timeout": settings.job_time_limit_seconds + 600},
        # Our logging (JSON lines by default) stays as bncore.structured_logs set it.
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


def _celery(settings: Callable[[], Settings]) -> Celery:
    app = Celery("bnjobs", set_as_current=False)
    # A promise: read when the app is first used, so building an app touches neither the environment nor a folder.
    app.add_defaults(lambda: celery_config(settings()))
    add_tasks(app, settings)
    return app


def create_celery(settings: Settings) -> Celery:
    """A Celery app that sends to and consumes from the broker `settings` name, with the tasks registered."""
    return _celery(lambda: settings)


# For the `celery` command line only (`celery -A worker.app inspect active`), configured from the
# environment on first use. The API and `python -m worker` build their own from the settings they are given.
celery_app = _celery(get_settings)


def worker_queues(settings: Settings) -> list[str]:
    """The queues this host's workers consume: WORKER_QUEUES, else by the device it has."""
    if settings.worker_queues:
        return [queue.strip() for queue in settings.worker_queues.split(",") if queue.strip()]
    return ["gpu", "any"] if training_device().type == "cuda" else ["cpu", "any"]


def enqueue_training(app: Celery, job_id: str, device: str) -> None:
    """Route a job to the queue of the device it asks for: `gpu`, `cpu` or `any`."""
    app.send_task(TRAIN_TASK, args=[job_id], queue=device)


def broker_reachable(app: Celery) -> bool:
    try:
        with app.connection_for_write(connect_timeout=2) as connection:
            connection.ensure_connection(max_retries=1, interval_start=0, timeout=2)
        return True
    except Exception:
        return False
