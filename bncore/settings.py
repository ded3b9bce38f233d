"""Every setting of the service, API and workers alike, read from the environment."""

from dataclasses import MISSING, fields
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", use_attribute_docstrings=True)

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    data_dir: Path = Path("data")
    database_url: str | None = None
    """SQLAlchemy URL; default: a SQLite file in DATA_DIR"""
    redis_url: str | None = None
    """Redis URL; used as the Celery broker when BROKER_URL is unset"""
    broker_url: str | None = None
    """Celery broker; default: REDIS_URL, else a folder in DATA_DIR"""
    artifacts_dir: Path | None = None
    """where model weights live; default: DATA_DIR/artifacts"""
    api_processes: int = Field(1, ge=1, le=64)
    """uvicorn processes `python -m service` runs on one port; rate limits, drift, metrics and deleted models hold across them"""
    embedded_workers: int = Field(1, ge=0, le=16)
    """Celery worker processes `python -m service` starts as its children"""
    worker_queues: str | None = None
    """queues a worker consumes, comma-separated; default: `gpu,any` with CUDA, else `cpu,any`"""

    api_keys_file: Path | None = None
    """JSON list of {key, owner, scopes}; unset: open access"""
    allow_open_access: bool = False
    """serve without API keys on a non-loopback HOST (only behind something that authenticates)"""
    max_request_bytes: int = Field(16 * 2**20, ge=1024)
    """largest request body (413 beyond)"""
    max_upload_bytes: int = Field(64 * 2**20, ge=1024)
    """largest dataset file POST /v1/datasets takes (413 beyond); that one route's body may be this plus 1 MiB of form fields,
    whatever MAX_REQUEST_BYTES says"""
    max_dataset_features: int = Field(65_536, ge=1)
    """most values per sample of an uploaded dataset (and 4096 along any one side)"""
    job_submissions_per_minute: int = Field(60, ge=1)
    """per owner; 429 beyond"""
    max_sample_epochs: int = Field(50_000_000, ge=1)
    """largest epochs × training samples a job may ask for (422 beyond)"""
    torch_threads: int | None = Field(None, ge=1)
    """CPU threads torch uses per process; set it when several workers share the cores"""
    max_predict_rows: int = Field(10_000, ge=1)
    """rows one predict request may carry"""
    # Dynamic batching, named as Triton and TorchServe name it (see bncore.serving.batching).
    max_batch_size: int = Field(64, ge=1)
    """most rows one forward pass gathers from concurrent predict requests; 1: no batching"""
    max_queue_delay_ms: float = Field(2.0, ge=0, le=1000)
    """the longest a predict request waits for others to join its batch; 0: no batching"""
    inference_threads: int | None = Field(None, ge=1)
    """torch threads of the API process; default: TORCH_THREADS if set, else 1. Its forward passes are small and run several at
    once (one per model batching), beside the HTTP threads and the embedded worker"""
    api_threads: int = Field(64, ge=1, le=1024)
    """threads the API runs blocking route handlers in (anyio's default is 40); predict holds none while it waits for its batch"""
    max_parameters: int = Field(20_000_000, ge=1)
    """largest network a job may ask for"""
    model_cache_size: int = Field(32, ge=1)
    """models kept loaded for inference"""
    model_recheck_seconds: float = Field(5.0, ge=0)
    """how long an API process serves a cached model without reading its record again; a model deleted through another API process
    is served by this one for at most this long, plus one read of its record"""
    cancel_poll_seconds: float = Field(1.0, gt=0)
    """how often a running job looks for a cancel request"""
    heartbeat_seconds: float = Field(5.0, gt=0)
    """how often a running job's worker reports it is alive"""
    job_stale_seconds: float = Field(30.0, gt=0)
    """a running job silent this long has lost its worker and is queued again"""
    max_attempts: int = Field(3, ge=1)
    """workers a job may lose before it fails as `worker_lost`"""
    gang_join_timeout_seconds: int = Field(60, ge=1)
    """a job spanning several workers waits this long for all of them to join, then frees the ones it has and goes back to the
    queue"""
    gang_host: str = "127.0.0.1"
    """this worker's address as the other workers of a job spanning several workers reach it"""
    job_time_limit_seconds: float = Field(3600.0, gt=0)
    """a job running longer fails as `timeout`"""
    checkpoint_seconds: float = Field(30.0, ge=0)
    """the least time between two checkpoints of a running job; 0: after every epoch"""

    @model_validator(mode="after")
    def _stale_after_several_heartbeats(self) -> "Settings":
        if self.job_stale_seconds < 2 * self.heartbeat_seconds:
            raise ValueError("JOB_STALE_SECONDS must be at least twice HEARTBEAT_SECONDS")
        return self

    fold_batchnorm: bool = True
    """serve each BN merged into the Linear/Conv2d directly before it"""
    drift_mean_shift_threshold: float = Field(0.5, gt=0)
    """a BN layer drifts when its served inputs' means move by more than this many training σ"""
    drift_variance_ratio_min: float = Field(0.5, gt=0, lt=1)
    """...or their variances shrink below this ratio"""
    drift_variance_ratio_max: float = Field(2.0, gt=1)
    """...or grow beyond this ratio"""
    drift_share_seconds: float = Field(1.0, gt=0)
    """how often each API process publishes its drift moments to the database, where `/drift` merges them: the other processes'
    part of a reading is at most this old"""
    drift_min_samples: int = Field(100, ge=1)
    """samples a model serves before any layer can be flagged"""

    log_format: Literal["json", "text"] = "json"
    """`json`: one JSON object per log line (API and workers); `text`: one plain line"""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    """least severe level logged"""

    @field_validator("log_format", mode="before")
    @classmethod
    def _format_any_case(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_any_case(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @property
    def resolved_inference_threads(self) -> int:
        return self.inference_threads or self.torch_threads or 1

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'bnjobs.sqlite3').resolve()}"

    @property
    def broker_folder(self) -> Path:
        return (self.data_dir / "broker").resolve()

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or self.redis_url or "filesystem://"

    @property
    def uses_filesystem_broker(self) -> bool:
        return self.resolved_broker_url.startswith("filesystem://")

    @property
    def resolved_artifacts_dir(self) -> Path:
        return (self.artifacts_dir or self.data_dir / "artifacts").resolve()

    @property
    def resolved_checkpoints_dir(self) -> Path:
        """Running jobs' epoch checkpoints, beside the models: every worker and the API must reach it."""
        return self.resolved_artifacts_dir / "checkpoints"


@lru_cache
def get_settings() -> Settings:
    return Settings()


Record = TypeVar("Record")


def from_settings(record: type[Record], settings: Settings, prefix: str = "") -> Record:
    """The dataclass `record` with each field that has no default read from the setting `prefix` + its name.

    A part's settings are named as the setting they come from, so that this one place reads them all.
    """
    values: dict[str, Any] = {
        field.name: getattr(settings, prefix + field.name)
        for field in fields(record)  # type: ignore[arg-type]
        if field.default is MISSING and field.default_factory is MISSING
    }
    return record(**values)
