"""Errors of the domain. The service maps each kind to one HTTP status in one place."""

from typing import ClassVar


class DomainError(Exception):
    code = "error"
    headers: ClassVar[dict[str, str]] = {}

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(DomainError):
    code = "not_found"


class JobNotFound(NotFound):
    code = "job_not_found"

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id '{job_id}'")


class ModelNotFound(NotFound):
    code = "model_not_found"

    def __init__(self, model_id: str) -> None:
        super().__init__(f"no model with id '{model_id}'")


class DatasetNotFound(NotFound):
    code = "dataset_not_found"

    def __init__(self, dataset_id: str) -> None:
        super().__init__(f"no uploaded dataset with id '{dataset_id}'")


class InvalidField(DomainError):
    """A request that parsed but asks for something impossible, pinned to the field at fault."""

    code = "invalid_request"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.detail = message


class PayloadTooLarge(InvalidField):
    code = "payload_too_large"


class Conflict(DomainError):
    code = "conflict"


class UnsupportedMediaType(DomainError):
    code = "unsupported_media_type"


class ServiceUnavailable(DomainError):
    code = "service_unavailable"


class ArtifactUnavailable(ServiceUnavailable):
    """The stored weights of a model are missing or damaged; the model cannot be served."""

    code = "artifact_unavailable"


class DatasetUnavailable(ServiceUnavailable):
    """An uploaded dataset a job needs was deleted, or its stored file is missing or damaged."""

    code = "dataset_unavailable"


class QueueUnavailable(ServiceUnavailable):
    code = "queue_unavailable"


class Unauthorized(DomainError):
    code = "unauthorized"
    headers: ClassVar[dict[str, str]] = {"WWW-Authenticate": "Bearer"}


class Forbidden(DomainError):
    code = "forbidden"


class TooManyRequests(DomainError):
    code = "rate_limited"

    def __init__(self, message: str, retry_after_seconds: int) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after_seconds)}
