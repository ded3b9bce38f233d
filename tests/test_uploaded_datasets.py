"""Users upload their own data (CSV or NPZ), train jobs on it by id, and serve the models; bad files are refused."""

import hashlib
import io
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from sklearn.datasets import load_digits, load_iris

from bnjobs.client import ApiError, Client
from tests.conftest import RunningService
from tests.support.api_keys import as_caller, keyed_service
from tests.support.jobs import submit, train, wait_for
from tests.support.uploads import iris_csv, upload, uploaded

pytestmark = pytest.mark.own_backends  # the keyed service runs on the mode's backends

SMALL_MLP = {"architecture": "mlp", "num_classes": 3, "hidden_sizes": [16]}


def stored_file(service: RunningService, dataset_id: str) -> Path:
    return service.data_dir / "artifacts" / "datasets" / f"{dataset_id}.safetensors"


def test_a_csv_upload_trains_a_model_that_predicts(client: httpx.Client, service: RunningService, tmp_path: Path) -> None:
    response = upload(client, iris_csv(tmp_path / "iris.csv"), name="my iris", description="150 flowers")
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert response.headers["location"] == f"/v1/datasets/{dataset['id']}"
    assert dataset["id"].startswith("ds_") and dataset["source"] == "upload" and dataset["format"] == "csv"
    assert (dataset["name"], dataset["description"]) == ("my iris", "150 flowers")
    assert (dataset["input_shape"], dataset["num_classes"], dataset["num_samples"]) == ([4], 3, 150)
    assert dataset["sha256"] == hashlib.sha256(stored_file(service, dataset["id"]).read_bytes()).hexdigest()
    assert client.get(f"/v1/datasets/{dataset['id']}").json() == dataset
    listed = client.get("/v1/datasets").json()["items"]
    assert {"digits", "iris"} <= {item["name"] for item in listed if item["source"] == "builtin"}
    assert dataset in listed

    job = train(
        client, {"model": SMALL_MLP, "dataset": {"id": dataset["id"]}, "training": {"epochs": 30, "batch_size": 16, "seed": 0}}
    )
    assert job["spec"]["dataset"] == {"id": dataset["id"]}
    assert job["spec"]["model"]["input_shape"] == [4]  # the upload's, as for a built-in
    model = client.get(f"/v1/models/{job['model_id']}").json()
    assert model["dataset"] == dataset["id"] and model["final_metrics"]["val_accuracy"] > 0.8
    features, labels = load_iris(return_X_y=True)
    predicted = client.post(f"/v1/models/{job['model_id']}/predict", json={"inputs": features.tolist()})
    assert predicted.status_code == 200
    assert np.mean(np.array(predicted.json()["predictions"]) == labels) > 0.8


def test_the_label_column_is_named_by_header_or_index(client: httpx.Client, tmp_path: Path) -> None:
    by_name = uploaded(client, iris_csv(tmp_path / "named.csv", label_first=True), label_column="species")
    by_index = uploaded(client, iris_csv(tmp_path / "plain.csv", header=False, label_first=True), label_column="0")
    default = uploaded(client, iris_csv(tmp_path / "last.csv", header=False))
    for dataset in (by_name, by_index, default):
        assert (dataset["input_shape"], dataset["num_classes"], dataset["num_samples"]) == ([4], 3, 150)
    assert by_name["name"] == "named.csv"  # no `name` given: the file's
    # The same samples and labels, whichever column held the labels: the same stored bytes.
    assert by_name["sha256"] == by_index["sha256"] == default["sha256"]


def test_an_npz_of_images_trains_a_cnn(client: httpx.Client, tmp_path: Path) -> None:
    images, labels = load_digits(return_X_y=True)
    path = tmp_path / "digits.npz"
    np.savez_compressed(path, x=images.reshape(-1, 8, 8)[:600], y=labels[:600])
    dataset = uploaded(client, path)
    assert (dataset["input_shape"], dataset["num_classes"], dataset["format"]) == ([1, 8, 8], 10, "npz")

    job = train(
        client,
        {
            "model": {"architecture": "cnn", "num_classes": 10, "channels": [8]},
            "dataset": {"id": dataset["id"]},
            "training": {"epochs": 3, "batch_size": 32},
        },
    )
    assert job["spec"]["model"]["input_shape"] == [1, 8, 8]
    predicted = client.post(
        f"/v1/models/{job['model_id']}/predict", json={"inputs": images[600:700].reshape(-1, 1, 8, 8).tolist()}
    )
    assert predicted.status_code == 200
    assert np.mean(np.array(predicted.json()["predictions"]) == labels[600:700]) > 0.5


def test_the_sdk_uploads_a_file_and_trains_on_it(service: RunningService, tmp_path: Path) -> None:
    with Client(service.url) as client:
        dataset = client.datasets.upload(
            iris_csv(tmp_path / "iris.csv", label_first=True), label_column="species", name="iris from the SDK"
        )
        assert dataset.id is not None and dataset.name == "iris from the SDK" and dataset.num_classes == 3
        assert client.datasets.get(dataset.id) == dataset
        job = client.jobs.create(SMALL_MLP, {"id": dataset.id}, {"epochs": 20, "batch_size": 16})
        job.wait(timeout=180)
        model = job.model()
        assert model.info.dataset == dataset.id
        assert model.predict(load_iris(return_X_y=True)[0][:5]).shape == (5,)

        (tmp_path / "ragged.csv").write_text("1,2,0\n1,1\n")
        with pytest.raises(ApiError) as refused:
            client.datasets.upload(tmp_path / "ragged.csv")
        assert refused.value.status == 422 and refused.value.fields[0]["field"] == "file"
        assert "line 2 has 2 columns" in refused.value.message

        client.datasets.delete(dataset.id)
        with pytest.raises(ApiError) as gone:
            client.datasets.get(dataset.id)
        assert gone.value.status == 404
        assert model.predict(load_iris(return_X_y=True)[0][:5]).shape == (5,)  # trained on it, still serving
        client.models.delete(model.id)
        with pytest.raises(ApiError) as deleted:
            model.predict(load_iris(return_X_y=True)[0][:5])
        assert deleted.value.status == 404 and deleted.value.code == "model_not_found"


def _rows(*rows: str, count: int = 12) -> bytes:
    """CSV text: the given rows, then enough good ones to pass the sample minimum."""
    good = ["1,2,0", "3,4,1"] * (count // 2)
    return "\n".join([*rows, *good]).encode()


def _npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


class Pickled:
    """Any Python object: saved in an object array, it can only be read back by unpickling."""


PICKLED_NPZ = _npz(x=np.array([Pickled()] * 12, dtype=object), y=np.arange(12) % 2)
IMAGES, LABELS = np.zeros((12, 4, 4)), np.arange(12) % 2
# (case, file name, content, other form fields, status, field, words of the message)
BAD_UPLOADS: list[tuple[str, str, bytes, dict[str, str], int, str, str]] = [
    ("not csv or npz", "data.json", b'{"x": [1]}', {}, 422, "file", "expected a .csv or .npz file"),
    ("empty", "data.csv", b"", {}, 422, "file", "the file is empty"),
    ("not text", "data.csv", b"\xff\xfe\x00\x81binary", {}, 422, "file", "not UTF-8"),
    ("unparsable", "data.csv", _rows('"1"2,3,0'), {}, 422, "file", "not a readable CSV"),
    ("one column", "data.csv", b"0\n1\n" * 6, {}, 422, "file", "at least two columns"),
    ("ragged", "data.csv", _rows("1,2,0", "1,2,3,0"), {}, 422, "file", "line 2 has 4 columns, the first row has 3"),
    ("non-numeric", "data.csv", _rows("a,b,label", "1,x,0"), {}, 422, "file", "line 2, column 1 ('b'): 'x' is not a number"),
    ("empty cell", "data.csv", _rows("1,2,0", "1,,1"), {}, 422, "file", "line 2, column 1: '' is not a number"),
    ("nan", "data.csv", _rows("1,2,0", "nan,2,1"), {}, 422, "file", "line 2, column 0: not a finite"),
    ("inf", "data.csv", _rows("1,2,0", "1,-inf,1"), {}, 422, "file", "line 2, column 1: not a finite"),
    ("beyond float32", "data.csv", _rows("1,2,0", "1,1e39,1"), {}, 422, "file", "line 2, column 1: not a finite"),
    ("fractional label", "data.csv", _rows("1,2,0.5"), {}, 422, "file", "line 1 has 0.5; labels are whole numbers"),
    ("negative label", "data.csv", _rows("1,2,-1"), {}, 422, "file", "line 1 has -1"),
    ("labels from 1", "data.csv", b"1,2,1\n3,4,2\n" * 6, {}, 422, "file", "[0] never occur (labels counted from 1?"),
    ("a missing class", "data.csv", _rows("1,2,3"), {}, 422, "file", "[2] never occur"),
    ("one class", "data.csv", b"1,2,0\n" * 12, {}, 422, "file", "every sample has label 0; at least 2 classes"),
    ("too few samples", "data.csv", b"1,2,0\n3,4,1\n" * 4, {}, 422, "file", "8 samples; at least 10"),
    (
        "too many features",
        "data.csv",
        (",".join(["1"] * 4098) + "\n" + ",".join(["0"] * 4098) + "\n").encode(),
        {},
        422,
        "file",
        "4,097 feature columns; at most 4,096",
    ),
    (
        "unknown label column",
        "data.csv",
        _rows("a,b,c"),
        {"label_column": "species"},
        422,
        "label_column",
        "'species' is not a column name of the header ['a', 'b', 'c']",
    ),
    (
        "label column out of range",
        "data.csv",
        _rows(),
        {"label_column": "3"},
        422,
        "label_column",
        "a 0-based column index below 3",
    ),
    ("pickled npz", "data.npz", PICKLED_NPZ, {}, 422, "file", "pickled Python objects"),
    ("not a zip", "data.npz", b"PK but not really a zip archive", {}, 422, "file", "not a valid .npz file"),
    ("npz without y", "data.npz", _npz(x=IMAGES), {}, 422, "file", "lacks ['y']"),
    ("npz labels of another length", "data.npz", _npz(x=IMAGES, y=LABELS[:5]), {}, 422, "file", "`y` is shaped (5,)"),
    ("npz of strings", "data.npz", _npz(x=np.array([["a"]] * 12), y=LABELS), {}, 422, "file", "numbers"),
    ("npz with nan", "data.npz", _npz(x=np.where(IMAGES == 0, np.nan, 0), y=LABELS), {}, 422, "file", "x[0] holds NaN"),
    (
        "npz with a label column",
        "data.npz",
        _npz(x=IMAGES, y=LABELS),
        {"label_column": "y"},
        422,
        "label_column",
        "only for CSV files",
    ),
    ("name with a NUL", "data.csv", _rows(), {"name": "a\x00b"}, 422, "name", "pattern"),
]


@pytest.fixture
def unchanged_uploads(client: httpx.Client, service: RunningService) -> Iterator[None]:
    """Asserts after the test that the uploads, listed and stored, are as before it."""
    folder = service.data_dir / "artifacts" / "datasets"

    def state() -> tuple[list[dict], list[str]]:
        return client.get("/v1/datasets").json()["items"], sorted(p.name for p in folder.glob("*"))

    before = state()
    yield
    assert state() == before


@pytest.mark.parametrize(
    ("filename", "content", "fields", "status", "field", "words"),
    [case[1:] for case in BAD_UPLOADS],
    ids=[case[0] for case in BAD_UPLOADS],
)
@pytest.mark.usefixtures("unchanged_uploads")
def test_a_bad_upload_is_refused_naming_the_field(
    client: httpx.Client, filename: str, content: bytes, fields: dict[str, str], status: int, field: str, words: str
) -> None:
    response = client.post("/v1/datasets", files={"file": (filename, content)}, data=fields)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert [f["field"] for f in error["fields"]] == [field]
    assert words in error["fields"][0]["message"], error


@pytest.mark.usefixtures("unchanged_uploads")
def test_an_upload_that_is_not_a_multipart_file_is_refused(client: httpx.Client) -> None:
    assert client.post("/v1/datasets", json={"file": "1,2,0"}).status_code == 415
    without_file = client.post("/v1/datasets", files={"other": ("a.csv", b"1,2,0")})
    assert without_file.status_code == 422 and without_file.json()["error"]["fields"][0]["field"] == "file"
    broken = client.post(
        "/v1/datasets", content=b"--xyz\r\nnot a part", headers={"Content-Type": "multipart/form-data; boundary=xyz"}
    )
    assert broken.status_code == 422 and broken.json()["error"]["fields"][0]["field"] == "body"


def test_a_job_names_exactly_one_known_dataset(client: httpx.Client) -> None:
    model = {"architecture": "mlp", "num_classes": 3}
    for dataset, field in [({}, "dataset"), ({"name": "iris", "id": "ds_x"}, "dataset"), ({"id": "ds_x"}, "dataset.id")]:
        response = client.post("/v1/jobs", json={"model": model, "dataset": dataset})
        assert response.status_code == 422, response.text
        assert [f["field"] for f in response.json()["error"]["fields"]] == [field]
    assert "no uploaded dataset with id 'ds_x'" in response.json()["error"]["message"]


def test_a_tampered_upload_fails_the_job_clearly(client: httpx.Client, service: RunningService, tmp_path: Path) -> None:
    dataset = uploaded(client, iris_csv(tmp_path / "iris.csv"))
    path = stored_file(service, dataset["id"])
    payload = bytearray(path.read_bytes())
    payload[-1] ^= 0x01  # one bit of the data: the file still parses, only its checksum tells
    path.write_bytes(bytes(payload))

    job = wait_for(
        client, submit(client, {"model": SMALL_MLP, "dataset": {"id": dataset["id"]}, "training": {"epochs": 1}})["id"]
    )
    assert job["status"] == "failed" and job["model_id"] is None
    assert job["error"]["code"] == "dataset_unavailable"
    assert f"dataset '{dataset['id']}' fail their sha256 check" in job["error"]["message"]


def test_deleting_an_upload_keeps_its_models_serving(client: httpx.Client, tmp_path: Path) -> None:
    dataset = uploaded(client, iris_csv(tmp_path / "iris.csv"))
    job = train(client, {"model": SMALL_MLP, "dataset": {"id": dataset["id"]}, "training": {"epochs": 2}})

    assert client.delete(f"/v1/datasets/{dataset['id']}").status_code == 204
    assert client.get(f"/v1/datasets/{dataset['id']}").status_code == 404
    assert client.delete(f"/v1/datasets/{dataset['id']}").status_code == 404
    assert dataset["id"] not in {item["id"] for item in client.get("/v1/datasets").json()["items"]}
    predicted = client.post(f"/v1/models/{job['model_id']}/predict", json={"inputs": [[5.1, 3.5, 1.4, 0.2]]})
    assert predicted.status_code == 200
    again = client.post("/v1/jobs", json={"model": SMALL_MLP, "dataset": {"id": dataset["id"]}})
    assert again.status_code == 422 and again.json()["error"]["fields"][0]["field"] == "dataset.id"
    recalibration = client.post(f"/v1/models/{job['model_id']}/recalibrate", json={})
    assert recalibration.status_code == 422
    assert recalibration.json()["error"]["fields"][0]["field"] == "model_id"
    assert "which was deleted" in recalibration.json()["error"]["message"]


UPLOAD_LIMIT = 50_000


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A service with API keys and a small upload limit."""
    with keyed_service(tmp_path_factory.mktemp("secured-uploads"), {"MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT)}) as url:
        yield url


@pytest.fixture
def as_(secured: str) -> Iterator[Callable[[str], httpx.Client]]:
    clients: list[httpx.Client] = []

    def client_of(who: str) -> httpx.Client:
        clients.append(as_caller(secured, who))
        return clients[-1]

    yield client_of
    for client in clients:
        client.close()


def test_another_owner_can_neither_see_nor_use_an_upload(as_: Callable[[str], httpx.Client], tmp_path: Path) -> None:
    alice, bob, admin = as_("alice"), as_("bob"), as_("admin")
    dataset = uploaded(alice, iris_csv(tmp_path / "iris.csv"))
    assert upload(as_("alice_app"), tmp_path / "iris.csv").status_code == 403  # infer-only keys do not upload

    assert dataset["id"] not in {item["id"] for item in bob.get("/v1/datasets").json()["items"]}
    assert bob.get(f"/v1/datasets/{dataset['id']}").status_code == 404
    assert bob.delete(f"/v1/datasets/{dataset['id']}").status_code == 404
    stolen = bob.post("/v1/jobs", json={"model": SMALL_MLP, "dataset": {"id": dataset["id"]}})
    assert stolen.status_code == 422 and stolen.json()["error"]["fields"][0]["field"] == "dataset.id"

    assert dataset in admin.get("/v1/datasets").json()["items"]
    assert admin.get(f"/v1/datasets/{dataset['id']}").status_code == 200
    assert dataset in alice.get("/v1/datasets").json()["items"]
    job = train(alice, {"model": SMALL_MLP, "dataset": {"id": dataset["id"]}, "training": {"epochs": 1}})
    assert alice.get(f"/v1/models/{job['model_id']}").json()["dataset"] == dataset["id"]


def test_a_file_over_the_upload_limit_is_refused_with_413(as_: Callable[[str], httpx.Client], tmp_path: Path) -> None:
    alice = as_("alice")
    before = alice.get("/v1/datasets").json()["items"]
    rows = "\n".join(f"{i},{i % 7},{i % 2}" for i in range(20_000))  # about 200 kB
    over_file_limit = tmp_path / "big.csv"
    over_file_limit.write_text(rows[: UPLOAD_LIMIT + 100])
    response = upload(alice, over_file_limit)
    assert response.status_code == 413, response.text
    assert response.json()["error"]["fields"] == [
        {"field": "file", "message": "the file is larger than this service's limit of 50,000 bytes"}
    ]
    # Past the file limit and the room for form fields, the body is refused before it is read.
    over_body_limit = tmp_path / "huge.csv"
    over_body_limit.write_bytes(b"1,2,0\n" * 200_000)
    refused = upload(alice, over_body_limit)
    assert refused.status_code == 413 and refused.json()["error"]["code"] == "payload_too_large"
    assert alice.get("/v1/datasets").json()["items"] == before
