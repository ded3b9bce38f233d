"""Someone reading /docs sees a worked request and answer on every operation, and each one is right."""

from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema_rs
import pytest

from service.openapi import BINARY_MEDIA_TYPES

Document = dict[str, Any]


@pytest.fixture(scope="module")
def document(service: Any) -> Document:
    return httpx.get(f"{service.url}/openapi.json", timeout=30).json()


def operations(document: Document) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            yield f"{method.upper()} {path}", operation


def examples_of(media: dict[str, Any]) -> list[Any]:
    if "example" in media:
        return [media["example"]]
    return [example["value"] for example in media.get("examples", {}).values()]


def shown(document: Document) -> Iterator[tuple[str, str, dict[str, Any], list[Any]]]:
    """(operation, what, schema, examples) for every parameter, request body and successful answer."""
    for name, operation in operations(document):
        for parameter in operation.get("parameters", []):
            example = [parameter["example"]] if "example" in parameter else []
            yield name, f"parameter {parameter['name']}", parameter["schema"], example
        for media_type, media in operation.get("requestBody", {}).get("content", {}).items():
            yield name, f"{media_type} body", media["schema"], examples_of(media)
        for status, response in operation["responses"].items():
            for media_type, media in response.get("content", {}).items():
                if status.startswith("2") and media_type not in BINARY_MEDIA_TYPES:
                    yield name, f"{status} {media_type} answer", media.get("schema", {}), examples_of(media)


def test_every_operation_shows_an_example_request_and_answer(document: Document) -> None:
    missing = [f"{name}: {what}" for name, what, _, examples in shown(document) if not examples]
    assert not missing, "no example in /docs for:\n" + "\n".join(missing)


def test_every_example_in_the_docs_is_valid_for_its_schema(document: Document) -> None:
    wrong = []
    for name, what, schema, examples in shown(document):
        validator = jsonschema_rs.validator_for({**schema, "components": document["components"]})
        wrong += [f"{name}: {what}: {error.message}" for example in examples for error in validator.iter_errors(example)]
    assert not wrong, "\n".join(wrong)
