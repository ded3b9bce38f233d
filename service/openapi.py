"""The OpenAPI document at /openapi.json (and /docs), with a worked example on every operation."""

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from service.openapi_examples import PARAMETERS, REQUESTS, RESPONSES

BINARY_MEDIA_TYPES = {"image/png", "application/octet-stream"}


def add_examples(document: dict[str, Any]) -> dict[str, Any]:
    """Attach the examples of service.openapi_examples where a route did not bring its own."""
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            key = (method.upper(), path)
            for parameter in operation.get("parameters", []):
                if parameter["name"] in PARAMETERS:
                    parameter.setdefault("example", PARAMETERS[parameter["name"]])
            for media in operation.get("requestBody", {}).get("content", {}).values():
                if key in REQUESTS and "examples" not in media:
                    media.setdefault("example", REQUESTS[key])
            for status, response in operation["responses"].items():
                for media_type, media in response.get("content", {}).items():
                    if status.startswith("2") and key in RESPONSES and media_type not in BINARY_MEDIA_TYPES:
                        media.setdefault("example", RESPONSES[key])
    return document


def declare_unknown_query_parameters(document: dict[str, Any]) -> dict[str, Any]:
    """Every operation may answer 422: service.query_parameters refuses query parameters it does not take."""
    refused = {
        "description": "Unknown query parameter, or invalid request",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}},
    }
    for operations in document["paths"].values():
        for operation in operations.values():
            operation["responses"].setdefault("422", refused)
    return document


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = declare_unknown_query_parameters(
                add_examples(
                    get_openapi(
                        title=app.title,
                        version=app.version,
                        description=app.description,
                        routes=app.routes,
                    )
                )
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
