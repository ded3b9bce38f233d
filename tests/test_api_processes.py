"""API_PROCESSES=2: two uvicorn processes on one port and one database behave as one service.

Which process accepts a connection is up to the kernel, so each step sends concurrent requests on
fresh connections, each with its own X-Request-ID, and reads from the access log which process
answered it, until both have answered.
"""

import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.support.api_keys import KEYS, keyed_service
from tests.support.jobs import job_request, train, wait_for
from tests.support.metrics import scrape, value
from tests.support.processes import pids_of_requests

PREDICT_ROUTE = "/v1/models/{model_id}/predict"
ENV = {
    "API_PROCESSES": "2",
    "JOB_SUBMISSIONS_PER_MINUTE": "1",
    "MODEL_RECHECK_SECONDS": "1",
    "DRIFT_SHARE_SECONDS": "0.2",
}
ROUND = 12  # concurrent requests per round: enough that both processes accept some


class TwoProcesses:
    def __init__(self, url: str, data_dir: Path) -> None:
        self.url = url
        self.log = data_dir / "service.log"

    def client(self, who: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {KEYS[who]['key']}"}, timeout=60)

    def round(
        self, who: str, send: Callable[[httpx.Client, dict[str, str]], httpx.Response], at_once: bool = True
    ) -> list[tuple[httpx.Response, int]]:
        """ROUND requests, each on a connection of its own: each response with the pid that answered.

        At once, or one after the other (`at_once=False`): then each process's answers are in the order it gave them.
        """

        def one(_: int) -> tuple[str, httpx.Response]:
            request_id = f"test-{uuid.uuid4().hex}"
            with self.client(who) as client:
                return request_id, send(client, {"X-Request-ID": request_id})

        with ThreadPoolExecutor(ROUND if at_once else 1) as pool:
            sent = list(pool.map(one, range(ROUND)))
        pids = pids_of_requests(self.log, {request_id for request_id, _ in sent})
        return [(response, pids[request_id]) for request_id, response in sent]

    def until_both_answered(
        self, who: str, send: Callable[[httpx.Client, dict[str, str]], httpx.Response], rounds: int = 10
    ) -> list[tuple[httpx.Response, int]]:
        answered: list[tuple[httpx.Response, int]] = []
        for _ in range(rounds):
            answered += self.round(who, send)
            if len({pid for _, pid in answered}) == 2:
                return answered
        pytest.fail(f"after {rounds} rounds of {ROUND} concurrent requests one process answered them all")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoProcesses]:
    data_dir = tmp_path_factory.mktemp("two-api-processes")
    with keyed_service(data_dir, ENV) as url:
        yield TwoProcesses(url, data_dir)


@pytest.fixture(scope="module")
def model_id(service: TwoProcesses) -> str:
    with service.client("bob") as bob:
        return train(bob, job_request(training={"epochs": 1}))["model_id"]


def predict(model_id: str, rows: int) -> Callable[[httpx.Client, dict[str, str]], httpx.Response]:
    body = {"inputs": [[float(i % 16)] * 64 for i in range(rows)]}
    return lambda client, headers: client.post(f"/v1/models/{model_id}/predict", json=body, headers=headers)


def test_the_submission_rate_limit_holds_across_both_processes(service: TwoProcesses) -> None:
    def submit(client: httpx.Client, headers: dict[str, str]) -> httpx.Response:
        return client.post("/v1/jobs", json=job_request(training={"epochs": 1}), headers=headers)

    answered = service.until_both_answered("alice", submit)

    statuses = sorted(response.status_code for response, _ in answered)
    assert statuses == [202] + [429] * (len(answered) - 1), statuses  # one a minute, whichever process counts it
    refused = next(response for response, _ in answered if response.status_code == 429)
    assert refused.json()["error"]["code"] == "rate_limited"
    with service.client("alice") as alice:
        accepted = next(response for response, _ in answered if response.status_code == 202)
        wait_for(alice, accepted.json()["id"])


def test_drift_counts_the_rows_both_processes_served(service: TwoProcesses, model_id: str) -> None:
    answered = service.until_both_answered("bob", predict(model_id, rows=3))
    assert {response.status_code for response, _ in answered} == {200}
    served = 3 * len(answered)

    readings = []
    with service.client("bob") as bob:
        for _ in range(200):  # each process publishes every 0.2 s: poll with a deadline of about 20 s
            response = bob.get(f"/v1/models/{model_id}/drift", headers={"Connection": "close"})
            assert response.status_code == 200, response.text
            readings.append(response.json()["samples_seen"])
            if readings[-1] == served:
                break
            time.sleep(0.1)
    assert readings[-1] == served, readings
    assert all(layer["samples"] == served for layer in response.json()["layers"])


def test_metrics_count_the_requests_of_both_processes(service: TwoProcesses, model_id: str) -> None:
    with service.client("admin") as admin:
        before = value(scrape(admin), "bnjobs_http_requests_total", method="POST", route=PREDICT_ROUTE, status="200")
        answered = service.until_both_answered("bob", predict(model_id, rows=1))
        after = value(scrape(admin), "bnjobs_http_requests_total", method="POST", route=PREDICT_ROUTE, status="200")

    assert {response.status_code for response, _ in answered} == {200}
    assert after - before == len(answered)


def test_a_deleted_model_is_refused_by_both_processes(service: TwoProcesses, model_id: str) -> None:
    answered = service.until_both_answered("bob", predict(model_id, rows=1))  # cached in both processes
    assert {response.status_code for response, _ in answered} == {200}

    with service.client("bob") as bob:
        assert bob.delete(f"/v1/models/{model_id}").status_code == 204

    # MODEL_RECHECK_SECONDS=1: past it, no process serves the model; rounds until both have said 404.
    statuses_by_pid: dict[int, list[int]] = {}
    for _ in range(20):
        for response, pid in service.round("bob", predict(model_id, rows=1), at_once=False):
            statuses_by_pid.setdefault(pid, []).append(response.status_code)
        if len(statuses_by_pid) == 2 and all(statuses[-1] == 404 for statuses in statuses_by_pid.values()):
            break
    assert len(statuses_by_pid) == 2
    for statuses in statuses_by_pid.values():
        assert statuses[-1] == 404, statuses_by_pid
        assert 200 not in statuses[statuses.index(404) :], statuses_by_pid  # once refused, never served again
