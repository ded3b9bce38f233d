"""Schemathesis over the service's own OpenAPI schema: generated requests to every operation, sent to the real
processes, get no 5xx, and only the statuses, content types, headers and bodies the schema declares.

The fuzzing gets its own service with low limits, so that the jobs it manages to submit are small.
A trained model and a finished job are given to the generator as path parameters half of the time, so that
predict, BN, drift, artifact and plot operations answer 200 from a real model, not only 404.
"""

from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field

import httpx
import pytest
import schemathesis

from tests.conftest import own_backends
from tests.support.jobs import FINISHED, job_request, train
from tests.support.processes import free_port, start, stop, wait_ready

pytestmark = pytest.mark.own_backends

# Counted in the test below: each request the generated cases sent (examples, coverage and fuzzing phases,
# positive and negative data), Hypothesis's shrinking of a failure included.
MIN_CASES = 1000
SEED = 20240601
DATASETS = ["digits", "iris", "wine", "breast_cancer", "two_moons"]
# A job that passes validation trains within seconds; the OpenAPI example (digits, 10 epochs) just fits.
FUZZ_LIMITS = {
    "MAX_SAMPLE_EPOCHS": "15000",
    "MAX_PARAMETERS": "50000",
    "JOB_TIME_LIMIT_SECONDS": "30",
    "JOB_SUBMISSIONS_PER_MINUTE": "100000",
    "TORCH_THREADS": "1",
}
# Operations that must have answered 200 (202) at least once, from the real model or job.
MUST_SUCCEED = [
    "POST /v1/jobs",
    "GET /v1/jobs/{job_id}",
    "GET /v1/jobs/{job_id}/plot.png",
    "GET /v1/models/{model_id}",
    "GET /v1/models/{model_id}/batchnorm",
    "GET /v1/models/{model_id}/batchnorm/plot.png",
    "POST /v1/models/{model_id}/predict",
    "GET /v1/models/{model_id}/drift",
    "GET /v1/models/{model_id}/artifact",
    "DELETE /v1/models/{model_id}",
]
# Every built-in check runs: not_a_server_error, status_code_conformance, content_type_conformance,
# response_schema_conformance, response_headers_conformance, negative_data_rejection (schema-invalid requests
# are refused with 4xx), missing_required_header, unsupported_method (405 with a right Allow header), ... except:
# - positive_data_acceptance, which expects every schema-valid request to be accepted. A job is also checked
#   against its dataset (a known name, its class and feature counts) and this service's limits, and a predict
#   body against the model's input shape, which no static schema can say: those refusals are 422 by design.
# negative_data_rejection holds for every operation, POST /v1/jobs included: the job spec validates strictly.
# Not run: the stateful phase. The schema declares no links, and a job's model only exists once training has
# finished in the background, so there is no chain of calls for a state machine to follow.
DISABLED_CHECKS = {"positive_data_acceptance": {"enabled": False}}


@dataclass
class FuzzTarget:
    url: str
    model_id: str
    doomed_model_id: str  # the one DELETE may really delete
    job_id: str


@dataclass
class Tally:
    """Every case the fuzzer sent, by operation and by the status it got."""

    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.statuses.values())

    def succeeded(self, label: str) -> bool:
        return any(status < 300 for (operation, status) in self.statuses if operation == label)


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzTarget]:
    data_dir = tmp_path_factory.mktemp("fuzz")
    port = free_port()
    env = {"DATA_DIR": str(data_dir), "PORT": str(port), "HOST": "127.0.0.1", "EMBEDDED_WORKERS": "1", **FUZZ_LIMITS}
    with ExitStack() as stack:
        env |= stack.enter_context(own_backends(data_dir))  # Redis and PostgreSQL in the distributed run
        process = start("service", env, data_dir / "service.log")
        stack.callback(stop, process)
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, process, data_dir / "service.log")
        with httpx.Client(base_url=url, timeout=60) as client:
            # Iris, as the OpenAPI examples: the predict example's rows then fit the model.
            small = {"hidden_sizes": [16], "num_classes": 3}
            iris = {"name": "iris"}
            job = train(client, job_request(model=small, dataset=iris, training={"epochs": 1}))
            doomed = train(client, job_request(model=small, dataset=iris, training={"epochs": 1, "seed": 1}))
            yield FuzzTarget(url, job["model_id"], doomed["model_id"], job["id"])
            _cancel_unfinished(client)


def _cancel_unfinished(client: httpx.Client) -> None:
    cursor: str | None = None
    while True:
        page = client.get("/v1/jobs", params={"limit": 100, **({"cursor": cursor} if cursor else {})}).json()
        for job in page["items"]:
            if job["status"] not in FINISHED:
                client.post(f"/v1/jobs/{job['id']}/cancel")
        if not (cursor := page["next_cursor"]):
            return


@pytest.fixture(scope="module")
def fuzz_schema(fuzz_target: FuzzTarget) -> schemathesis.BaseSchema:
    config = schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "request-timeout": 60,
            "generation": {"mode": "all", "deterministic": True, "database": "none"},
            "checks": DISABLED_CHECKS,
            "dictionaries": {
                "models": {"values": [fuzz_target.model_id]},
                "doomed": {"values": [fuzz_target.doomed_model_id]},
                "jobs": {"values": [fuzz_target.job_id]},
                "datasets": {"values": DATASETS},
            },
            "parameters": {
                "path.model_id": {"dictionary": "models", "probability": 0.5},
                "path.job_id": {"dictionary": "jobs", "probability": 0.5},
                # Past an unknown name, a job meets the checks against its dataset and the service's limits.
                "body.dataset.name": {"dictionary": "datasets", "probability": 0.5},
            },
            "operations": [
                {
                    "include-name": "DELETE /v1/models/{model_id}",
                    "parameters": {"path.model_id": {"dictionary": "doomed", "probability": 0.5}},
                },
                # Each answer draws a chart or exports ONNX (a second or more of CPU), and the only inputs are an id
                # (and a format): fewer generated cases here keep the run within minutes.
                {"include-path-regex": r"(plot\.png|/artifact)$", "generation": {"max-examples": 20}},
            ],
        }
    )
    return schemathesis.openapi.from_url(f"{fuzz_target.url}/openapi.json", config=config)


@pytest.fixture(scope="module")
def tally() -> Tally:
    return Tally()


@pytest.fixture
def _node_id_for_schemathesis(request: pytest.FixtureRequest) -> None:
    # schemathesis 4.32's from_fixture reads and renames `Node._nodeid`, which pytest 9.2 no longer has.
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


schema = schemathesis.pytest.from_fixture("fuzz_schema")


FUZZ_TEST = "test_generated_requests_get_declared_answers"


@schema.parametrize()
@pytest.mark.usefixtures("_node_id_for_schemathesis")
def test_generated_requests_get_declared_answers(case: schemathesis.Case, tally: Tally) -> None:
    response = case.call()
    tally.statuses[(case.operation.label, response.status_code)] += 1
    case.validate_response(response)


def test_the_fuzzing_sent_enough_cases_and_reached_real_models(tally: Tally, request: pytest.FixtureRequest) -> None:
    """Runs after the fuzzing above: fails if generation silently shrank, or stopped reaching the real model."""
    if not any(item.name == FUZZ_TEST for item in request.session.items):
        pytest.skip(f"counts the cases of {FUZZ_TEST}, which was not selected")
    assert tally.total >= MIN_CASES, tally.statuses
    assert [label for label in MUST_SUCCEED if not tally.succeeded(label)] == [], tally.statuses
