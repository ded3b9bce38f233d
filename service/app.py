"""The FastAPI application: stores built once in the lifespan, routers, one error handler."""

import gc
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial

import anyio.to_thread
from fastapi import Depends, FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from bncore.jobs.recovery import RecoveryLoop, recover_lost_jobs, remove_finished_checkpoints, requeue_orphaned_jobs
from bncore.serving.batching import BatchingPolicy
from bncore.serving.model_cache import ModelCache
from bncore.serving.shared_drift import SharedDrift
from bncore.settings import Settings, get_settings
from bncore.storage.database import Database
from bncore.storage.drift_store import DriftMomentsStore
from bncore.storage.job_stats import JobStats
from bncore.storage.migrations import upgrade_database
from bncore.storage.rate_limits import DatabaseTokenBuckets, RedisTokenBuckets, TokenBuckets
from bncore.storage.wiring import build_stores
from bncore.structured_logs import configure_logging
from bncore.training.devices import limit_cpu_threads
from service.auth import is_loopback, load_api_keys
from service.deps import Services, printable_path_parameters
from service.docs_pages import install_docs
from service.errors import install_error_handlers
from service.limits import BodySizeLimit, SubmissionRateLimit
from service.observability.metrics import ServiceMetrics
from service.observability.middleware import RequestObserver
from service.openapi import install_openapi
from service.predict_fast_path import PredictFastPath
from service.query_parameters import refuse_unknown_query_parameters
from service.routes import dashboard, datasets, experiments, health, jobs, metrics, models, serving
from worker.app import TRAIN_TASK, broker_reachable, create_celery, enqueue_training, worker_queues
from worker.broker import waiting_job_ids

log = logging.getLogger(__name__)


def build_services(settings: Settings, metrics: ServiceMetrics | None = None) -> Services:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    limit_cpu_threads(settings.resolved_inference_threads)
    api_keys = load_api_keys(settings.api_keys_file) if settings.api_keys_file else []
    if not api_keys:
        if not (is_loopback(settings.host) or settings.allow_open_access):
            raise RuntimeError(
                f"no API keys configured and HOST={settings.host} is not loopback: set API_KEYS_FILE, "
                "or ALLOW_OPEN_ACCESS=true if something in front authenticates"
            )
        log.warning("no API keys configured (API_KEYS_FILE): the API is open to anyone who can reach it")
    upgrade_database(settings.resolved_database_url)
    stores = build_stores(settings)
    celery = create_celery(settings)
    cache = ModelCache(
        stores.artifacts,
        settings.model_cache_size,
        settings.fold_batchnorm,
        BatchingPolicy(settings.max_batch_size, settings.max_queue_delay_ms),
        on_batch=metrics.observe_batch if metrics else None,
        recheck_seconds=settings.model_recheck_seconds,
    )
    return Services(
        **vars(stores),
        settings=settings,
        cache=cache,
        enqueue=partial(enqueue_training, celery),
        broker_reachable=partial(broker_reachable, celery),
        # With the folder broker only this host's embedded workers exist; with Redis workers come and go.
        known_queues=worker_queues(settings) if settings.uses_filesystem_broker else None,
        api_keys=api_keys,
        submissions=SubmissionRateLimit(settings.job_submissions_per_minute, shared_buckets(settings, stores.database)),
        drift=SharedDrift(DriftMomentsStore(stores.database), cache, settings.drift_share_seconds),
    )


def shared_buckets(settings: Settings, database: Database) -> TokenBuckets:
    """Rate-limit buckets all API processes share: Redis when REDIS_URL is set, else the database."""
    return RedisTokenBuckets(settings.redis_url) if settings.redis_url else DatabaseTokenBuckets(database)


def recover_jobs(services: Services, settings: Settings) -> None:
    """Queue again the jobs whose worker was lost, and with the folder broker those whose message was;
    delete the checkpoints that no job will resume from."""
    recover_lost_jobs(services.jobs, services.enqueue, settings.job_stale_seconds, settings.max_attempts)
    if settings.uses_filesystem_broker:
        waiting = partial(waiting_job_ids, settings.broker_folder / "queue", TRAIN_TASK)
        requeue_orphaned_jobs(services.jobs, services.enqueue, waiting, settings.job_stale_seconds)
    remove_finished_checkpoints(services.jobs, services.checkpoints)


class ServiceApp(FastAPI):
    """FastAPI inside the service's own outer layers (`outer`, built around `inner`), which run first.

    They are the request observer (request id, access line, metrics), the body size limit and the
    predict fast path: a predict the fast path answers passes through none of FastAPI's own layers
    (its error, telemetry and body-limit middleware, routing), which cost more than a small forward pass.
    """

    outer: ASGIApp | None = None

    @property
    def inner(self) -> ASGIApp:
        return partial(FastAPI.__call__, self)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self
        await (self.outer or self.inner)(scope, receive, send)


# Net container allocations between two collections of the youngest generation. Python's 700 was crossed
# ~75 times a second by the objects of 64 predicts in flight (measured with `gc.callbacks`), each collection
# (~0.25 ms) finding no garbage: ~2% of the event loop. At 20,000, none ran under that load.
YOUNG_COLLECTION_THRESHOLD = 20_000


@contextmanager
def _collector_set_for_serving() -> Iterator[None]:
    """What start-up built (torch, the app, the stores) lives as long as the process: frozen, a full collection
    scans only what came later (scanning it all took ~160 ms every few seconds under load)."""
    gc.collect()
    gc.freeze()
    thresholds = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, *thresholds[1:])
    try:
        yield
    finally:  # an app built and stopped in a longer-lived process (tests) leaves the collector as it found it
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def create_process_app() -> FastAPI:
    """The app of each of API_PROCESSES uvicorn processes: uvicorn calls it in the process (a factory)."""
    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level)
    return create_app(settings)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    service_metrics = ServiceMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = build_services(settings, service_metrics)
        app.state.services = services
        service_metrics.watch(JobStats(services.database), services.cache)
        # Sync routes run in anyio's default thread pool; predict is async and holds no thread while it waits.
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.api_threads
        recovery = RecoveryLoop(partial(recover_jobs, services, settings), interval=settings.heartbeat_seconds)
        recovery.start()
        services.drift.start()
        with _collector_set_for_serving():
            yield
        services.drift.stop()
        recovery.stop()
        service_metrics.unwatch()
        services.database.engine.dispose()
        observer.access_lines.flush()

    app = ServiceApp(
        title="BatchNorm job service",
        version="0.1.0",
        description="Train Batch Normalization networks as jobs; serve them with frozen test-time statistics.",
        lifespan=lifespan,
        docs_url=None,  # install_docs: served from the package's own copy of Swagger UI and ReDoc
        redoc_url=None,
        dependencies=[Depends(printable_path_parameters), Depends(refuse_unknown_query_parameters)],
    )
    app.state.metrics = service_metrics
    limited = BodySizeLimit(
        PredictFastPath(app.inner, metrics=service_metrics),
        max_bytes=settings.max_request_bytes,
        larger={datasets.UPLOAD_PATH: settings.max_upload_bytes + datasets.FORM_FIELDS_BYTES},
    )
    app.outer = observer = RequestObserver(limited, metrics=service_metrics)  # outermost: it sees even the 413s
    install_error_handlers(app)
    for module in (jobs, models, serving, experiments, datasets, health, metrics):
        app.include_router(module.router)
    app.include_router(dashboard.router)
    app.mount("/static", StaticFiles(directory=dashboard.STATIC_DIR), name="static")
    install_openapi(app)
    install_docs(app)
    return app
