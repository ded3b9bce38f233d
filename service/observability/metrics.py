"""Prometheus metrics of one API process, in a registry of its own (one per app, so tests can build several).

Observed as they happen, in this process: HTTP requests, predict latency, dynamic batch sizes.
Read at scrape time: the model cache's counters, and from the database, which the API and every
worker share, the jobs (by state, run times, training speed): workers are separate processes that
no scrape of the API reaches, and this needs no pushgateway.
"""

import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError

from bncore.serving.model_cache import ModelCache
from bncore.storage.job_stats import JobStats
from service.observability.shared_metrics import metrics_shared

log = logging.getLogger(__name__)

PREDICT_ROUTE = "/v1/models/{model_id}/predict"
UNMATCHED_ROUTE = "unmatched"  # any path no route serves: one label value, however many paths are probed
# Clients may send any token as a method; others are counted as one value, so no client can add series.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
BATCH_REQUEST_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
JOB_SECONDS_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600)


class ServiceMetrics:
    """The instruments the API observes into, and the registry `/metrics` renders."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.shared = metrics_shared()  # several API processes: see service/observability/shared_metrics.py
        if not self.shared:
            ProcessCollector(registry=self.registry)  # one process's figures: in shared mode they would mislead
        self.http_requests = Counter(
            "bnjobs_http_requests",
            "HTTP requests answered by this API process",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.predict_latency = Histogram(
            "bnjobs_predict_latency_seconds",
            "predict requests: from the request's arrival to its response's end",
            ["status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.predict_fast_path = Counter(
            "bnjobs_predict_fast_path",
            "predict requests answered without FastAPI's routing and validation "
            "(see service/predict_fast_path.py); the others went to the route",
            registry=self.registry,
        )
        self.batch_rows = Histogram(
            "bnjobs_batch_rows",
            "rows per inference forward pass (dynamic batching gathers several requests)",
            buckets=BATCH_ROW_BUCKETS,
            registry=self.registry,
        )
        self.batch_requests = Histogram(
            "bnjobs_batch_requests",
            "predict requests answered per inference forward pass",
            buckets=BATCH_REQUEST_BUCKETS,
            registry=self.registry,
        )
        self._watched: Collector | None = None
        # labels() takes a lock and builds its key each call; the children, once looked up, are kept here.
        self._request_counters: dict[tuple[str, str, int], Counter] = {}
        self._predict_histograms: dict[int, Histogram] = {}

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method if method in METHODS else "other", route, status)
        counter = self._request_counters.get(key)
        if counter is None:
            counter = self._request_counters[key] = self.http_requests.labels(key[0], route, str(status))
        counter.inc()
        if route == PREDICT_ROUTE:
            histogram = self._predict_histograms.get(status)
            if histogram is None:
                histogram = self._predict_histograms[status] = self.predict_latency.labels(str(status))
            histogram.observe(seconds)

    def render(self) -> bytes:
        """The Prometheus text of a scrape: with API_PROCESSES above 1, the instruments summed over the processes."""
        if not self.shared:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        if self._watched is not None:
            registry.register(self._watched)
        return generate_latest(registry)

    def observe_batch(self, rows: int, requests: int) -> None:
        self.batch_rows.observe(rows)
        self.batch_requests.observe(requests)

    def watch(self, jobs: JobStats, cache: ModelCache) -> None:
        """Read the jobs and the model cache at every scrape, from now on."""
        self.unwatch()
        self._watched = StateCollector(jobs, cache)
        self.registry.register(self._watched)

    def unwatch(self) -> None:
        if self._watched is not None:
            self.registry.unregister(self._watched)
            self._watched = None


class StateCollector(Collector):
    """Figures read when Prometheus scrapes: the model cache of this process, the jobs of the whole deployment."""

    def __init__(self, jobs: JobStats, cache: ModelCache) -> None:
        self.jobs = jobs
        self.cache = cache

    def describe(self) -> list[Metric]:
        return []  # names vary with the database's answers; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        cache = self.cache.stats()
        yield CounterMetricFamily("bnjobs_model_cache_hits", "model lookups served from this process's cache", value=cache.hits)
        yield CounterMetricFamily("bnjobs_model_cache_misses", "model lookups that loaded the artifact", value=cache.misses)
        yield GaugeMetricFamily("bnjobs_model_cache_models", "models loaded in this process", value=cache.loaded)
        yield CounterMetricFamily(
            "bnjobs_onnx_exports", "ONNX files this process exported (a cached model's once)", value=cache.onnx_exports
        )
        try:
            job_metrics, up = list(self._jobs()), 1
        except SQLAlchemyError:
            log.warning("metrics: the database did not answer; job metrics left out of this scrape", exc_info=True)
            job_metrics, up = [], 0
        yield GaugeMetricFamily("bnjobs_database_up", "1 when this scrape could read the jobs", value=up)
        yield from job_metrics

    def _jobs(self) -> Iterator[Metric]:
        states = GaugeMetricFamily("bnjobs_jobs", "jobs in each state, all workers (from the database)", labels=["state"])
        for state, count in self.jobs.counts_by_state().items():
            states.add_metric([state], count)
        yield states
        yield self._durations()
        speed = GaugeMetricFamily(
            "bnjobs_training_epochs_per_second",
            "epochs per second of each running job's current attempt",
            labels=["job_id"],
        )
        for job in self.jobs.running():
            speed.add_metric([job.job_id], job.epochs_per_second)
        yield speed

    def _durations(self) -> HistogramMetricFamily:
        durations = HistogramMetricFamily(
            "bnjobs_job_duration_seconds",
            "run time (started to finished, of the last attempt) of finished jobs by final state (from the database)",
            labels=["state"],
        )
        seconds_by_state: dict[str, list[float]] = {}
        for run in self.jobs.finished_runs():
            seconds_by_state.setdefault(run.status, []).append(run.seconds)
        for state, seconds in sorted(seconds_by_state.items()):
            buckets = [(_bound(upper), sum(1 for s in seconds if s <= upper)) for upper in JOB_SECONDS_BUCKETS]
            buckets.append(("+Inf", len(seconds)))
            durations.add_metric([state], buckets, sum(seconds))
        return durations


def _bound(upper: float) -> str:
    return f"{float(upper)}"
