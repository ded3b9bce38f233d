"""`python -m service`: the API on HOST:PORT, with EMBEDDED_WORKERS Celery workers as child processes."""

import logging

import uvicorn

from bncore.database import Database
from bncore.settings import get_settings
from service.app import create_app
from service.embedded_workers import EmbeddedWorkers


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # Tables exist before any worker starts, so no two processes race to create them.
    Database(settings.resolved_database_url).create_tables()
    with EmbeddedWorkers(settings.embedded_workers):
        uvicorn.run(create_app(settings), host=settings.host, port=settings.port)


if __name__ == "__main__":
    main()
