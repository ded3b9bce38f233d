"""Plain predict requests skip FastAPI's routing on a fast path, and get back exactly what the route sends."""

import importlib.metadata
import json
from collections.abc import Iterator

import httpx
import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.version import Version

from bncore.data.builtin import load_dataset
from tests.support.metrics import scrape, value
from tests.support.processes import ROOT

DIGIT = load_dataset("digits").features[0].astype(int).tolist()  # a handwritten 0, as a client sends it
HEADERS = {"Content-Type": "application/json", "X-Request-ID": "fast-path-story"}  # one id: comparable bodies


def fast_path_answers(client: httpx.Client) -> float:
    return value(scrape(client), "bnjobs_predict_fast_path_total")


def without_declared_length(body: bytes) -> Iterator[bytes]:
    """Sent chunked: the fast path leaves a body of undeclared length to the route."""
    yield body


@pytest.mark.parametrize(
    ("inputs", "status"),
    [
        ([DIGIT], 200),
        ([DIGIT, [0] * 64, [16] * 64], 200),
        ([DIGIT, [1e37] * 64], 422),  # finite inputs the network overflows on: found only by running it
    ],
    ids=["one digit", "three rows", "overflowing row"],
)
def test_the_fast_path_answers_byte_for_byte_as_the_route_does(
    client: httpx.Client, digits_model: dict, inputs: list, status: int
) -> None:
    url = f"/v1/models/{digits_model['id']}/predict"
    body = json.dumps({"inputs": inputs}).encode()
    assert client.post(url, json={"inputs": [DIGIT]}).status_code == 200  # the model is in this process's cache

    before = fast_path_answers(client)
    fast = client.post(url, content=body, headers=HEADERS)
    between = fast_path_answers(client)
    routed = client.post(url, content=without_declared_length(body), headers=HEADERS)
    after = fast_path_answers(client)

    assert (between - before, after - between) == (1, 0)
    assert fast.status_code == routed.status_code == status, routed.text
    assert fast.content == routed.content
    assert fast.headers["content-type"] == routed.headers["content-type"]
    assert fast.headers["x-request-id"] == routed.headers["x-request-id"] == "fast-path-story"


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (json.dumps({"inputs": [DIGIT] * 65}).encode(), HEADERS, 200),  # more rows than are parsed on the event loop
        (b"\xef\xbb\xbf" + json.dumps({"inputs": [DIGIT]}).encode(), HEADERS, 200),  # Python's json takes a BOM
        (json.dumps({"inputs": [DIGIT[:10]]}).encode(), HEADERS, 422),
        (json.dumps({"inputs": [DIGIT], "extra": 1}).encode(), HEADERS, 422),
        (b'{"inputs": [[1, 2,', HEADERS, 422),
        (json.dumps({"inputs": [DIGIT]}).encode(), {"Content-Type": "text/plain"}, 415),
        (json.dumps({"inputs": [[*DIGIT[:63], 1e39]]}).encode(), HEADERS, 422),
        (json.dumps({"inputs": [[*DIGIT[:63], float("nan")]]}).encode(), HEADERS, 422),
    ],
    ids=["65 rows", "UTF-8 BOM", "short row", "unknown field", "broken JSON", "not JSON", "beyond float32", "NaN"],
)
def test_requests_the_fast_path_does_not_take_get_the_routes_answer(
    client: httpx.Client, digits_model: dict, body: bytes, headers: dict, status: int
) -> None:
    url = f"/v1/models/{digits_model['id']}/predict"
    before = fast_path_answers(client)

    response = client.post(url, content=body, headers=headers)

    assert response.status_code == status, response.text
    assert fast_path_answers(client) == before
    if status == 200:
        assert len(response.json()["predictions"]) == len(json.loads(body)["inputs"])
    else:
        assert response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("value", "got"),
    [("1.5", "a string"), (True, "true"), (False, "false"), (None, "null")],
    ids=["a numeric string", "true", "false", "null"],
)
def test_values_that_are_not_numbers_are_refused_alike_on_both_paths(
    client: httpx.Client, digits_model: dict, value: object, got: str
) -> None:
    url = f"/v1/models/{digits_model['id']}/predict"
    body = json.dumps({"inputs": [DIGIT, [*DIGIT[:5], value, *DIGIT[6:]]]}).encode()
    assert client.post(url, json={"inputs": [DIGIT]}).status_code == 200  # the model is in this process's cache

    fast = client.post(url, content=body, headers=HEADERS)
    routed = client.post(url, content=without_declared_length(body), headers=HEADERS)

    assert fast.status_code == routed.status_code == 422, fast.text
    assert fast.content == routed.content
    assert fast.json()["error"]["fields"] == [{"field": "inputs[1][5]", "message": f"expected a number, got {got}"}]


@pytest.mark.parametrize(
    "body",
    [json.dumps({"inputs": [DIGIT]}), json.dumps({"inputs": [DIGIT], "extra": 1}), json.dumps({"inputs": [["1"] * 64]})],
    ids=["answered on the fast path", "handed on: unknown field", "handed on: not numbers"],
)
def test_a_predict_request_is_one_cache_hit_whichever_path_answers_it(
    client: httpx.Client, digits_model: dict, body: str
) -> None:
    url = f"/v1/models/{digits_model['id']}/predict"
    assert client.post(url, json={"inputs": [DIGIT]}).status_code == 200  # the model is in this process's cache
    before = value(scrape(client), "bnjobs_model_cache_hits_total")

    client.post(url, content=body.encode(), headers=HEADERS)

    assert value(scrape(client), "bnjobs_model_cache_hits_total") - before == 1


def test_fastapi_may_be_no_older_than_the_version_the_byte_comparison_runs_on() -> None:
    """The fast path copies how the route serializes its answer; that has changed between FastAPI versions,
    so pyproject.toml allows only versions from the one these byte-for-byte tests run on."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lower = next(Requirement(d).specifier for d in declared if Requirement(d).name == "fastapi")
    (bound,) = [spec for spec in lower if spec.operator == ">="]
    installed = Version(importlib.metadata.version("fastapi"))
    assert Version(bound.version).release[:2] == installed.release[:2], f"fastapi{lower} but the tests run on {installed}"
