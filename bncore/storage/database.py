"""Tables for jobs and models (SQLAlchemy 2), and the engine set up for SQLite or PostgreSQL."""

import base64
import binascii
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    event,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker

from bncore.errors import InvalidField
from bncore.free_text import control_character


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on the way out, also from SQLite, which stores naive timestamps."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        return value.astimezone(timezone.utc) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value


class Base(DeclarativeBase):
    pass


class JobRow(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    epochs: Mapped[int] = mapped_column(Integer)
    device: Mapped[str | None] = mapped_column(String(32))
    worker: Mapped[str | None] = mapped_column(String(255))
    model_id: Mapped[str | None] = mapped_column(String(64))
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resumed_from_epoch: Mapped[int | None] = mapped_column(Integer)
    owner: Mapped[str | None] = mapped_column(String(255), index=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_sha256: Mapped[str | None] = mapped_column(String(64))
    recalibration: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    best_epoch: Mapped[int | None] = mapped_column(Integer)  # set under early stopping
    name: Mapped[str | None] = mapped_column(String(255))  # NULL before revision 0007: named from the spec
    rendezvous_endpoint: Mapped[str | None] = mapped_column(String(255))  # host:port, while a multi-worker gang gathers
    # Attempts whose gang did not gather in time: they count in `attempts` (a lease each) but lost no worker.
    gatherings_missed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    metrics: Mapped[list["EpochRow"]] = relationship(order_by="EpochRow.epoch", lazy="selectin", cascade="all, delete-orphan")

    members: Mapped[list["GangMemberRow"]] = relationship(
        order_by="GangMemberRow.member", lazy="selectin", cascade="all, delete-orphan"
    )

    __table_args__ = (UniqueConstraint("owner", "idempotency_key", name="uq_jobs_owner_idempotency_key"),)


class GangMemberRow(Base):
    """A worker in the gang of one attempt at a job spanning several workers; member 0 took the job."""

    __tablename__ = "job_gang_members"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    member: Mapped[int] = mapped_column(Integer, primary_key=True)
    worker: Mapped[str] = mapped_column(String(255))
    device: Mapped[str] = mapped_column(String(32))

    # A worker joins an attempt once: a second join task it takes for it is passed on.
    __table_args__ = (UniqueConstraint("job_id", "attempt", "worker", name="uq_job_gang_members_worker"),)


class EpochRow(Base):
    __tablename__ = "job_epochs"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer, primary_key=True)
    train_loss: Mapped[float] = mapped_column(Float)
    train_accuracy: Mapped[float] = mapped_column(Float)
    val_loss: Mapped[float] = mapped_column(Float)
    val_accuracy: Mapped[float] = mapped_column(Float)
    seconds: Mapped[float] = mapped_column(Float, server_default=text("0"))  # 0: recorded before epochs were timed
    learning_rate: Mapped[float | None] = mapped_column(Float)  # null: recorded before schedules existed
    activations: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)  # null: no activation tracking


class ModelRow(Base):
    __tablename__ = "models"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    final_metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    parameter_count: Mapped[int] = mapped_column(Integer)
    artifact_sha256: Mapped[str] = mapped_column(String(64))
    owner: Mapped[str | None] = mapped_column(String(255), index=True)
    parent_id: Mapped[str | None] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(255))  # NULL before revision 0007: named from the spec


class ExperimentRow(Base):
    __tablename__ = "experiments"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    owner: Mapped[str | None] = mapped_column(String(255), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    target_accuracy: Mapped[float | None] = mapped_column(Float)
    variants: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_sha256: Mapped[str | None] = mapped_column(String(64))
    preset: Mapped[str | None] = mapped_column(String(64))  # the preset it reproduces, if any
    claim: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # a preset's verdict, judged once every variant ended

    __table_args__ = (UniqueConstraint("owner", "idempotency_key", name="uq_experiments_owner_idempotency_key"),)


class DatasetRow(Base):
    """An uploaded dataset; its samples live in the artifact store as `datasets/<id>.safetensors`."""

    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(255), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text)
    format: Mapped[str] = mapped_column(String(8))
    input_shape: Mapped[list[int]] = mapped_column(JSON)
    num_classes: Mapped[int] = mapped_column(Integer)
    num_samples: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))


class RateLimitRow(Base):
    """A token bucket shared by every API process: tokens left at `updated_at` (Unix seconds)."""

    __tablename__ = "rate_limit_buckets"

    key: Mapped[str] = mapped_column(String(320), primary_key=True)
    tokens: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class DriftMomentsRow(Base):
    """One API process's drift moments of one model, as it last published them (bncore.serving.shared_drift)."""

    __tablename__ = "drift_moments"

    model_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    process_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    since: Mapped[datetime] = mapped_column(UTCDateTime)
    samples: Mapped[int] = mapped_column(Integer)
    layers: Mapped[dict[str, Any]] = mapped_column(JSON)
    published_at: Mapped[datetime] = mapped_column(UTCDateTime)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the API read while a worker writes; both wait (busy_timeout) instead of failing.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        is_sqlite = url.startswith("sqlite")
        self.engine: Engine = create_engine(url, connect_args={"timeout": 30} if is_sqlite else {}, pool_pre_ping=not is_sqlite)
        if is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    def session(self) -> Session:
        return self.sessions()

    def reachable(self) -> bool:
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            return True
        except Exception:
            return False


def encode_cursor(created_at: datetime, row_id: str) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{row_id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The position a listing continues after; InvalidField('cursor') when it is not one we gave out."""
    try:
        created_at, row_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|", 1)
        if control_character(row_id):  # never in an id of ours, and a NUL would not even reach PostgreSQL
            raise ValueError(row_id)
        return datetime.fromisoformat(created_at).astimezone(timezone.utc), row_id
    except (ValueError, OverflowError, binascii.Error, UnicodeError):
        raise InvalidField("cursor", "not a cursor returned by this listing (use next_cursor as given)") from None
