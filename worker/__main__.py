"""`python -m worker`: one Celery worker process that trains one job at a time.

`python -m worker healthcheck [--hostname NAME]` exits 0 while the worker of that node name (the
default: Celery's, `celery@<host>`) showed life within JOB_STALE_SECONDS (for container health checks).
Run it with the worker's own environment and `--hostname`: each worker has its own alive file.
"""

import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from multiprocessing import resource_tracker
from pathlib import Path

import celery.apps.worker
from celery.signals import celeryd_init, setup_logging
from celery.utils.nodenames import default_nodename, host_format

from bncore.parent_process import watch_parent
from bncore.settings import get_settings
from bncore.structured_logs import configure_logging
from bncore.training.devices import limit_cpu_threads
from worker.app import PARENT_PID_VARIABLE, create_celery, worker_queues


def in_background(loop: Callable[[], None], name: str) -> None:
    threading.Thread(target=loop, name=name, daemon=True).start()


def alive_file(nodename: str) -> Path:
    """One file per worker (node name), so that a live worker never vouches for a dead one on the same host."""
    return Path(tempfile.gettempdir()) / f"bnjobs-worker-{nodename.replace(os.sep, '_')}.alive"


def keep_alive_file(path: Path, every_seconds: float) -> None:
    """Touch a file from a thread: it goes on while the solo pool holds the main thread with a job."""
    while True:
        path.touch()
        time.sleep(every_seconds)


def healthcheck(argv: list[str]) -> int:
    """0 while the worker named `--hostname` (as given to it, `%h` and all) touched its file within JOB_STALE_SECONDS."""
    hostname = argv[argv.index("--hostname") + 1] if "--hostname" in argv[:-1] else None
    nodename = host_format(default_nodename(hostname))
    window = get_settings().job_stale_seconds  # as long as a running job may stay silent before it counts as lost
    try:
        age = time.time() - alive_file(nodename).stat().st_mtime
    except FileNotFoundError:
        print(f"no worker {nodename} has started here", file=sys.stderr)
        return 1
    if age > window:
        print(f"the worker {nodename} last showed life {age:.1f} s ago (more than {window:g} s)", file=sys.stderr)
        return 1
    return 0


def say_as_json(message: str, stream: object = None) -> None:
    """Celery's notices from its signal handlers ("Warm shutdown"), as JSON lines.

    They bypass logging on purpose: a handler taking the logging lock could deadlock. os.write does not.
    """
    now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    line = {"time": now, "level": "INFO", "logger": "celery.apps.worker", "message": message.strip(), "pid": os.getpid()}
    os.write(2, (json.dumps(line) + "\n").encode())


def start_resource_tracker_without_stderr() -> None:
    """multiprocessing's resource tracker, which a data-parallel job's processes share, started with stderr on /dev/null.

    It inherits stderr, and when its worker dies (killed, say) it warns there in plain text about the
    semaphores it cleans up, breaking the logs' one JSON object per line. Started first, here, it is the
    one every later job uses.
    """
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        resource_tracker.ensure_running()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def main(argv: list[str]) -> None:
    if argv[:1] == ["healthcheck"]:
        sys.exit(healthcheck(argv[1:]))
    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level)
    # A receiver of this signal tells Celery that logging is set up: it leaves the root logger and stdout alone.
    setup_logging.connect(lambda **_: None, weak=False)
    if settings.log_format == "json":
        celery.apps.worker.safe_say = say_as_json
        start_resource_tracker_without_stderr()
    if parent := os.environ.get(PARENT_PID_VARIABLE):  # an embedded worker ends with the API process that started it
        watch_parent(int(parent))
    # Celery names the node (`--hostname`, `%h` expanded) as the worker starts: that names its alive file.
    celeryd_init.connect(
        lambda sender, **_: in_background(lambda: keep_alive_file(alive_file(sender), settings.heartbeat_seconds), "alive-file"),
        weak=False,
    )
    limit_cpu_threads(settings.torch_threads)
    create_celery(settings).worker_main(
        [
            "--quiet",  # no banner: every line the worker writes is a log line
            "worker",
            "--pool=solo",  # torch trains with its own threads; one job per process
            "--concurrency=1",
            f"--queues={','.join(worker_queues(settings))}",
            "--without-gossip",
            "--without-mingle",
            f"--loglevel={settings.log_level}",
            *argv,
        ]
    )


if __name__ == "__main__":
    main(sys.argv[1:])
