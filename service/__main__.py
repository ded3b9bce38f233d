"""`python -m service`: the API on HOST:PORT, with EMBEDDED_WORKERS Celery workers as child processes.

`python -m service migrate` applies the database migrations and exits.
"""

import argparse

import uvicorn

from bncore.settings import get_settings
from bncore.storage.migrations import upgrade_database
from bncore.structured_logs import configure_logging
from service.app import create_app
from service.embedded_workers import EmbeddedWorkers


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
    with EmbeddedWorkers(settings.embedded_workers):
        # Uvicorn's loggers reach the root handler as they are (log_config=None); RequestObserver writes the access lines.
        uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None, access_log=False)


if __name__ == "__main__":
    main()
