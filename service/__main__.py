"""`python -m service`: the API on HOST:PORT, with EMBEDDED_WORKERS Celery workers as child processes.

With API_PROCESSES above 1, uvicorn runs that many processes on the one port (its `workers`); the
embedded workers are still started once, here. `python -m service migrate` applies the database
migrations and exits.
"""

import argparse

import uvicorn

from bncore.settings import get_settings
from bncore.storage.migrations import upgrade_database
from bncore.structured_logs import configure_logging
from service.embedded_workers import EmbeddedWorkers
from service.observability.shared_metrics import share_metrics_between_processes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    parser.add_argument("command", nargs="?", choices=["serve", "migrate"], default="serve")
    command = parser.parse_args(argv).command
    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if command == "migrate":
        upgrade_database(settings.resolved_database_url)
        return
    # Uvicorn's loggers reach the root handler as they are (log_config=None); RequestObserver writes the access lines.
    # No Server header advertises the software. The service reads neither the client's address nor the scheme,
    # so uvicorn's proxy-headers layer (X-Forwarded-For/-Proto) would only cost each request (~1 µs).
    options = {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        "access_log": False,
        "server_header": False,
        "proxy_headers": False,
    }
    if settings.api_processes > 1:
        share_metrics_between_processes(settings.data_dir)  # before any process imports prometheus_client
        upgrade_database(settings.resolved_database_url)  # once, before the processes start
        with EmbeddedWorkers(settings.embedded_workers):
            uvicorn.run("service.app:create_process_app", factory=True, workers=settings.api_processes, **options)
        return
    from service.app import create_app  # imports prometheus_client: after the choice above

    with EmbeddedWorkers(settings.embedded_workers):
        uvicorn.run(create_app(settings), **options)


if __name__ == "__main__":
    main()
