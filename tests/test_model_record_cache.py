"""An API process serves cached models without reading their records each time, yet never a deleted one for long."""

import time

import httpx

from tests.conftest import RunningService
from tests.support.jobs import job_request, train
from tests.support.processes import free_port, start, stop, wait_ready

SAMPLE = {"inputs": [[0.0] * 64]}
RECHECK_SECONDS = 1.0


def test_a_model_deleted_through_this_api_stops_answering_at_once(client: httpx.Client) -> None:
    model_id = train(client, job_request(training={"epochs": 1}))["model_id"]
    for _ in range(3):  # loaded, then answered from the cache
        assert client.post(f"/v1/models/{model_id}/predict", json=SAMPLE).status_code == 200

    assert client.delete(f"/v1/models/{model_id}").status_code == 204

    refused = client.post(f"/v1/models/{model_id}/predict", json=SAMPLE)
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "model_not_found"
    assert client.get(f"/v1/models/{model_id}/serving").status_code == 404
    assert client.get(f"/v1/models/{model_id}/drift").status_code == 404


def test_a_model_deleted_through_another_api_stops_answering_within_the_recheck_interval(
    client: httpx.Client, service: RunningService
) -> None:
    model_id = train(client, job_request(training={"epochs": 1}))["model_id"]
    port = free_port()
    env = {**service.env, "PORT": str(port), "EMBEDDED_WORKERS": "0", "MODEL_RECHECK_SECONDS": str(RECHECK_SECONDS)}
    log = service.data_dir / "second-api.log"
    process = start("service", env, log)
    try:
        wait_ready(f"http://127.0.0.1:{port}", process, log)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as other:
            assert other.post(f"/v1/models/{model_id}/predict", json=SAMPLE).status_code == 200  # now cached there
            assert client.delete(f"/v1/models/{model_id}").status_code == 204
            deleted_at = time.monotonic()
            while (status := other.post(f"/v1/models/{model_id}/predict", json=SAMPLE).status_code) == 200:
                assert time.monotonic() - deleted_at < RECHECK_SECONDS + 5, "still served long after its deletion"
                time.sleep(0.05)
            assert status == 404
            assert other.post(f"/v1/models/{model_id}/predict", json=SAMPLE).status_code == 404
    finally:
        stop(process)
