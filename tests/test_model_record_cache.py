"""An API process serves cached models without reading their records each time, yet never a deleted one for long."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch

from bncore.errors import ModelNotFound
from bncore.jobs.execution import RunLimits, run_job
from bncore.serving.model_cache import ModelCache
from bncore.settings import Settings, from_settings
from bncore.storage.artifacts import ArtifactStore
from bncore.storage.wiring import Stores
from tests.conftest import RunningService
from tests.support.jobs import job_request, train
from tests.support.processes import free_port, start, stop, wait_ready
from tests.support.stores import stores_in

SAMPLE = {"inputs": [[0.0] * 64]}
RECHECK_SECONDS = 1.0
# As the API stores a job, planned: the input shape is the dataset's.
DIGITS_JOB = job_request(model={"input_shape": [64]}, training={"epochs": 1}) | {"resources": {"device": "cpu"}}


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


def alices_model(folder: Path) -> tuple[Stores, str]:
    """Stores in `folder` with one model, trained in this process by a job of alice's."""
    stores = stores_in(folder)
    job, _ = stores.jobs.create(DIGITS_JOB, "alice")
    run_job(job.id, stores, "worker-1", from_settings(RunLimits, Settings()))
    return stores, stores.jobs.get(job.id).model_id


def test_a_request_that_read_the_record_before_another_api_deleted_the_model_cannot_bring_it_back(tmp_path: Path) -> None:
    """Two requests of one API process race a deletion made through another: the one that read the record
    too late is refused, and from then on the other, which read it just before, is refused too."""
    stores, model_id = alices_model(tmp_path)
    cache = ModelCache(stores.artifacts, capacity=4, fold_batchnorm=True)
    assert cache.load(stores.models, model_id, "alice") is not None  # cached

    read_before = stores.models.get(model_id, "alice")  # the first request reads the record...
    stores.models.delete(model_id)  # ...another API process deletes the model...
    with pytest.raises(ModelNotFound):  # ...the second request reads no record: 404
        cache.load(stores.models, model_id, "alice")
    with pytest.raises(ModelNotFound):  # the first request's older record loads nothing after that 404
        cache.get(read_before)
    assert cache.lookup(model_id, "alice") is None


def test_another_owners_request_for_a_model_does_not_evict_it(tmp_path: Path) -> None:
    stores, model_id = alices_model(tmp_path)
    cache = ModelCache(stores.artifacts, capacity=4, fold_batchnorm=True)
    served = cache.load(stores.models, model_id, "alice")

    with pytest.raises(ModelNotFound):
        cache.load(stores.models, model_id, "mallory")
    assert cache.lookup(model_id, "alice") is served


def test_while_one_request_reads_a_due_record_again_the_others_are_served_from_memory(tmp_path: Path) -> None:
    """Under load a due record is read by one request, not by every request until one of them has read it;
    what that read finds still counts: a model deleted through another API process stops answering."""
    stores, model_id = alices_model(tmp_path)
    cache = ModelCache(stores.artifacts, capacity=4, fold_batchnorm=True, recheck_seconds=RECHECK_SECONDS)
    served = cache.load(stores.models, model_id, "alice")
    time.sleep(RECHECK_SECONDS)  # the record is due to be read again

    assert cache.lookup(model_id, "alice", handing_on=True) is None  # the fast path hands the request on...
    assert cache.lookup(model_id, "alice") is None  # ...to the route, which reads the record
    assert all(cache.lookup(model_id, "alice") is served for _ in range(3))  # meanwhile the others are served,
    assert all(cache.lookup(model_id, "alice", handing_on=True) is served for _ in range(3))  # by the fast path too
    time.sleep(RECHECK_SECONDS)  # that read never came back: another request reads the record instead
    assert cache.lookup(model_id, "alice") is None

    stores.models.delete(model_id)  # through another API process
    with pytest.raises(ModelNotFound):
        cache.load(stores.models, model_id, "alice")
    assert cache.lookup(model_id, "alice") is None and cache.lookup(model_id, "alice") is None


class CountingArtifacts(ArtifactStore):
    """Real artifacts that count the loads, each a little slow, as a large model's is."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.loads = 0

    def load(self, name: str, sha256: str) -> dict[str, torch.Tensor]:
        self.loads += 1
        time.sleep(0.2)
        return super().load(name, sha256)


def test_a_burst_of_first_requests_loads_the_model_once(tmp_path: Path) -> None:
    stores, model_id = alices_model(tmp_path)
    artifacts = CountingArtifacts(stores.artifacts.root)
    cache = ModelCache(artifacts, capacity=4, fold_batchnorm=True)
    record, start = stores.models.get(model_id), threading.Barrier(8)

    def first_request() -> object:
        start.wait()
        return cache.get(record)

    with ThreadPoolExecutor(8) as pool:
        served = list(pool.map(lambda _: first_request(), range(8)))

    assert artifacts.loads == 1 and all(model is served[0] for model in served)
    assert (cache.stats().misses, cache.stats().hits) == (1, 7)
