"""One place that turns errors into HTTP responses: `{"error": {"code", "message", "fields"}}`."""

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from bncore.errors import (
    Conflict,
    DomainError,
    Forbidden,
    InvalidField,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
    UnsupportedMediaType,
)
from service.media_types import media_type_of
from service.observability.request_id import current_request_id
from service.schemas import ErrorDetail, ErrorOut, FieldError

log = logging.getLogger(__name__)

STATUS_BY_ERROR: list[tuple[type[DomainError], int]] = [
    (Unauthorized, 401),
    (Forbidden, 403),
    (TooManyRequests, 429),
    (NotFound, 404),
    (PayloadTooLarge, 413),
    (InvalidField, 422),
    (Conflict, 409),
    (UnsupportedMediaType, 415),
    (ServiceUnavailable, 503),
]
LOCATIONS = {"body", "query", "path", "header"}
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def error_response(status: int, code: str, message: str, fields: list[FieldError] | None = None) -> JSONResponse:
    body = ErrorOut(error=ErrorDetail(code=code, message=message, fields=fields or [], request_id=current_request_id()))
    return JSONResponse(status_code=status, content=body.model_dump())


def _field_name(location: tuple[int | str, ...]) -> str:
    parts = [str(part) for part in location]
    if parts and parts[0] in LOCATIONS:
        parts = parts[1:]
    return ".".join(parts) or "body"


def _field_error(error: dict) -> FieldError:
    if error["type"] == "json_invalid":
        position = error["loc"][-1]
        reason = error.get("ctx", {}).get("error", "malformed")
        return FieldError(field="body", message=f"invalid JSON at character {position}: {reason}")
    return FieldError(field=_field_name(tuple(error["loc"])), message=error["msg"])


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    fields = [_field_error(e) for e in exc.errors()]
    summary = "; ".join(f"{f.field}: {f.message}" for f in fields)
    return error_response(422, "invalid_request", summary, fields)


def domain_error_response(exc: DomainError) -> JSONResponse:
    status = next(code for kind, code in STATUS_BY_ERROR if isinstance(exc, kind))
    fields = [FieldError(field=exc.field, message=exc.detail)] if isinstance(exc, InvalidField) else []
    response = error_response(status, exc.code, exc.message, fields)
    response.headers.update(exc.headers)
    return response


async def _domain_error(request: Request, exc: DomainError) -> JSONResponse:
    response = domain_error_response(exc)
    if response.status_code >= 500:
        log.warning("%s %s: %s", request.method, request.url.path, exc.message)
    return response


def _unreadable_body(cause: BaseException) -> FieldError:
    if isinstance(cause, UnicodeDecodeError):
        reason = f"not UTF-8 at byte {cause.start}"
    elif isinstance(cause, RecursionError):
        reason = "nested too deeply"
    else:
        reason = str(cause) or type(cause).__name__
    return FieldError(field="body", message=f"invalid JSON: {reason}")


def _allowed_methods(request: Request) -> str | None:
    """Every method the API serves at this path; Starlette's 405 names only those of the first route with it."""
    methods = {
        method.upper()
        for template, operations in request.app.openapi()["paths"].items()
        if compile_path(template)[0].match(request.url.path)
        for method in operations
        if method in HTTP_METHODS
    }
    return ", ".join(sorted(methods)) or None


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    if isinstance(exc.__cause__, DomainError):
        # Raised while FastAPI read the body (the size limit, as an upload streams in), which it wraps in a 400.
        return await _domain_error(request, exc.__cause__)
    if exc.status_code == 400 and _is_multipart(request):
        # Starlette's answer to a multipart body it cannot parse.
        field = FieldError(field="body", message=f"invalid multipart/form-data: {exc.detail}")
        return error_response(422, "invalid_request", f"body: {field.message}", [field])
    if exc.status_code == 400 and exc.__cause__ is not None:
        # FastAPI's answer to a JSON body it cannot decode (not UTF-8, nested too deeply): malformed JSON, as any other.
        field = _unreadable_body(exc.__cause__)
        return error_response(422, "invalid_request", f"body: {field.message}", [field])
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    response = error_response(exc.status_code, code, str(exc.detail))
    response.headers.update(exc.headers or {})
    if exc.status_code == 405 and (allowed := _allowed_methods(request)):
        response.headers["Allow"] = allowed
    return response


def _is_multipart(request: Request) -> bool:
    return media_type_of(request.headers.get("content-type", "")).startswith(("multipart/", "application/x-www-form-urlencoded"))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    for kind, _ in STATUS_BY_ERROR:
        app.add_exception_handler(kind, _domain_error)  # type: ignore[arg-type]
