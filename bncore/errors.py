"""Errors of the domain. The service maps each kind to one HTTP status in one place.

A kind names its machine-readable code in its class line, `class Conflict(DomainError, code="conflict")`,
so the code stays next to the name that callers import and catch.
"""

from typing import Any, ClassVar


class DomainError(Exception):
    code = "error"
    headers: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, code: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if code is not None:
            cls.code = code

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(DomainError, code="not_found"): ...


class RecordNotFound(NotFound):
    """No stored record of this kind with this id; the message names both: `no job with id 'j-1'`."""

    record: ClassVar[str] = "record"

    def __init_subclass__(cls, record: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if record is not None:
            cls.record = record

    def __init__(self, record_id: str) -> None:
        super().__init__(f"no {self.record} with id '{record_id}'")


class JobNotFound(RecordNotFound, code="job_not_found", record="job"): ...


class ModelNotFound(RecordNotFound, code="model_not_found", record="model"): ...


class DatasetNotFound(RecordNotFound, code="dataset_not_found", record="uploaded dataset"): ...


class InvalidField(DomainError, code="invalid_request"):
    """A request that parsed but asks for something impossible, pinned to the field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.detail = message


class PayloadTooLarge(InvalidField, code="payload_too_large"): ...


class Conflict(DomainError, code="conflict"): ...


class UnsupportedMediaType(DomainError, code="unsupported_media_type"): ...


class ServiceUnavailable(DomainError, code="service_unavailable"): ...


class ArtifactUnavailable(ServiceUnavailable, code="artifact_unavailable"):
    """The stored weights of a model are missing or damaged; the model cannot be served."""


class DatasetUnavailable(ServiceUnavailable, code="dataset_unavailable"):
    """An uploaded dataset a job needs was deleted, or its stored file is missing or damaged."""


class QueueUnavailable(ServiceUnavailable, code="queue_unavailable"): ...


class Unauthorized(DomainError, code="unauthorized"):
    headers: ClassVar[dict[str, str]] = {"WWW-Authenticate": "Bearer"}


class Forbidden(DomainError, code="forbidden"): ...


class TooManyRequests(DomainError, code="rate_limited"):
    def __init__(self, message: str, retry_after_seconds: int) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after_seconds)}
