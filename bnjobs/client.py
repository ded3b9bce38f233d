"""An httpx client typed with the API's own pydantic models.

`Client()` connects as the `bnjobs` CLI does: to `BNJOBS_URL` (default http://127.0.0.1:8000) with the
key in `BNJOBS_API_KEY`, if set. Handles (`Job`, `Model`, `Experiment`) print as one readable line.
"""

import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar

import httpx
import numpy as np
from pydantic import BaseModel
from tqdm import tqdm

from service.schemas import (
    ActivationsOut,
    BatchNormOut,
    DatasetList,
    DatasetOut,
    ExperimentOut,
    ExperimentPage,
    JobOut,
    JobPage,
    ModelOut,
    ModelPage,
    PredictOut,
    PresetList,
    PresetOut,
)

Response = TypeVar("Response", bound=BaseModel)
FINISHED = {"succeeded", "failed", "cancelled"}
PAGE_LIMIT = 100  # the most items the API returns in one page
DEFAULT_URL = "http://127.0.0.1:8000"
SHORT_ID = 4  # characters after the prefix a repr shows, e.g. `job_3b70…`, as the dashboard does


def short_id(item_id: str) -> str:
    """`job_3b70…` of `job_3b70c4…`: enough to tell items apart on screen; the full id is on `.id`."""
    prefix, _, rest = item_id.rpartition("_")
    return f"{prefix}_{rest[:SHORT_ID]}…" if prefix and len(rest) > SHORT_ID else item_id


def _accuracy(value: float | None) -> str:
    return "" if value is None else f" val_acc={value:.3f}"


class ServiceUnreachable(ConnectionError):
    """No answer from the service's URL: it is not running there, or the URL is wrong."""

    def __init__(self, url: str, error: httpx.TransportError) -> None:
        super().__init__(f"could not reach the service at {url} ({type(error).__name__}: {error})")
        self.url = url


class ApiError(Exception):
    """The service refused a request: its status, error code, message and the fields at fault."""

    def __init__(self, status: int, code: str, message: str, fields: list[dict[str, str]]) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.fields = status, code, message, fields


class JobFailed(Exception):
    """The job ended without a model (failed or cancelled); `job` is the job as it ended."""

    def __init__(self, job: JobOut) -> None:
        error = f": {job.error.code}: {job.error.message}" if job.error else ""
        super().__init__(f"job {job.id} {job.status}{error}")
        self.job = job


class Client:
    """The service's API as Python objects: `client.jobs`, `client.models`, `client.datasets`, `client.experiments`.

    `url` and `api_key` default to the environment variables `BNJOBS_URL` and `BNJOBS_API_KEY`, as the
    CLI reads them. A request the service refuses raises ApiError; no answer at all, ServiceUnreachable.
    Use it as a context manager, or call `close()`.
    """

    def __init__(self, url: str | None = None, api_key: str | None = None, timeout: float = 60) -> None:
        self.url = (url or os.environ.get("BNJOBS_URL") or DEFAULT_URL).rstrip("/")
        api_key = api_key or os.environ.get("BNJOBS_API_KEY") or None
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        self.jobs = Jobs(self)
        self.models = Models(self)
        self.datasets = Datasets(self)
        self.experiments = Experiments(self)

    def __repr__(self) -> str:
        return f"<Client {self.url}>"

    def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The service's answer; ApiError with its code, message and fields when it refused,
        ServiceUnreachable when nothing answered."""
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise ServiceUnreachable(self.url, error) from None
        if response.is_error:
            try:
                error = response.json()["error"]
            except (ValueError, KeyError):
                error = {"code": "http_error", "message": response.text, "fields": []}
            raise ApiError(response.status_code, error["code"], error["message"], error.get("fields", []))
        return response

    def request(self, method: str, path: str, answer: type[Response], **kwargs: Any) -> Response:
        """The answer parsed as `answer`, one of the API's own response models."""
        return answer.model_validate_json(self.send(method, path, **kwargs).content)

    def paged(
        self,
        path: str,
        answer: type[JobPage] | type[ModelPage] | type[ExperimentPage],
        limit: int | None,
        filters: Mapping[str, str | None] | None = None,
    ) -> Iterator[Any]:
        """The items of a newest-first listing, following its cursors; at most `limit` of them (None: all),
        only those matching the `filters` given (query parameters; None: not filtered)."""
        cursor, left = None, limit
        given = {name: value for name, value in (filters or {}).items() if value is not None}
        while left is None or left > 0:
            params: dict[str, Any] = {"limit": PAGE_LIMIT if left is None else min(left, PAGE_LIMIT), **given}
            if cursor is not None:
                params["cursor"] = cursor
            page = self.request("GET", path, answer, params=params)
            yield from page.items
            if left is not None:
                left -= len(page.items)
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def close(self) -> None:
        """Close the connections (as leaving a `with Client() as client:` block does)."""
        self.http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Jobs:
    """Training jobs: `client.jobs.create(...)`, `.get(id)`, `.list()`."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def create(
        self,
        model: dict[str, Any],
        dataset: dict[str, Any],
        training: dict[str, Any] | None = None,
        resources: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        name: str | None = None,
    ) -> "Job":
        """Queue a training job; only `model.architecture`, `model.num_classes` and `dataset` are required.

        e.g. `create(model={"architecture": "cnn", "num_classes": 10}, dataset={"name": "digits"})`; the
        input shape comes from the dataset, and `name` defaults to one like `cnn-16-32-bn-digits`.
        """
        body: dict[str, Any] = {"model": model, "dataset": dataset}
        body |= {k: v for k, v in (("training", training), ("resources", resources), ("name", name)) if v is not None}
        return self.submit(body, idempotency_key)

    def submit(self, spec: Mapping[str, Any], idempotency_key: str | None = None) -> "Job":
        """Queue a job from a whole request body as POST /v1/jobs takes it (e.g. read from a spec file)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return Job(self.client, self.client.request("POST", "/v1/jobs", JobOut, json=dict(spec), headers=headers))

    def get(self, job_id: str) -> "Job":
        """The job as it is now."""
        return Job(self.client, self.client.request("GET", f"/v1/jobs/{job_id}", JobOut))

    def list(
        self,
        limit: int | None = 20,
        status: str | None = None,
        dataset: str | None = None,
        experiment: str | None = None,
    ) -> list[JobOut]:
        """The caller's jobs, newest first; `limit=None` for all of them. Filters: `status` (e.g. "failed"),
        `dataset` (a built-in's name or an upload's id), `experiment` (its id: its variants' jobs)."""
        filters = {"status": status, "dataset": dataset, "experiment": experiment}
        return list(self.client.paged("/v1/jobs", JobPage, limit, filters))


class _Handle(Generic[Response]):
    """What every handle holds: the client it calls through, and `info`, its record as last read."""

    def __init__(self, client: Client, info: Response) -> None:
        self.client, self.info = client, info

    @property
    def id(self) -> str:
        return self.info.id  # type: ignore[attr-defined]


class Job(_Handle[JobOut]):
    """A job handle: `status`, `name` and `info` (the whole job) as last read; `refresh()` reads it again,
    `wait()` follows it to the end, `model()` is what it trained."""

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def status(self) -> str:
        """queued, running, succeeded, failed or cancelled, as last read (`refresh()` to read it again)."""
        return self.info.status

    def __repr__(self) -> str:
        info = self.info
        accuracy = _accuracy(info.metrics[-1].val_accuracy if info.metrics else None)
        progress = f"{info.progress.epoch}/{info.progress.epochs} epochs"
        warnings = f" ({len(info.warnings)} warning{'s' if len(info.warnings) != 1 else ''})" if info.warnings else ""
        return f"<Job {short_id(info.id)} {info.name} {info.status} {progress}{accuracy}{warnings}>"

    def refresh(self) -> JobOut:
        """Read the job again."""
        self.info = self.client.request("GET", f"/v1/jobs/{self.id}", JobOut)
        return self.info

    def cancel(self) -> JobOut:
        """Cancel it if queued, or ask it to stop if running (it becomes `cancelled` within a second)."""
        self.info = self.client.request("POST", f"/v1/jobs/{self.id}/cancel", JobOut)
        return self.info

    def wait(self, progress: bool = False, timeout: float | None = None, poll_seconds: float = 0.5) -> JobOut:
        """Poll until the job ends; with `progress`, a bar per epoch. JobFailed unless it succeeded."""
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = tqdm(total=self.info.progress.epochs, desc=self.id, unit="epoch", disable=not progress)
        with bar:
            while self.refresh().status not in FINISHED:
                self._advance(bar)
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"job {self.id} still {self.info.status} after {timeout} s")
                time.sleep(poll_seconds)
            self._advance(bar)
        if self.info.status != "succeeded":
            raise JobFailed(self.info)
        return self.info

    def _advance(self, bar: tqdm) -> None:
        bar.update(self.info.progress.epoch - bar.n)
        if self.info.metrics:
            latest = self.info.metrics[-1]
            bar.set_postfix(loss=f"{latest.train_loss:.4f}", val_acc=f"{latest.val_accuracy:.4f}")

    def activations(self) -> ActivationsOut:
        """Under `training.track_activations`: per tracked layer, the 15th, 50th and 85th percentiles, mean and std
        of the inputs to its non-linearity at each measured step (`layers` is empty without tracking)."""
        return self.client.request("GET", f"/v1/jobs/{self.id}/activations", ActivationsOut)

    def model(self) -> "Model":
        """The model the job trained; JobFailed if it ended without one, ValueError while it runs."""
        if self.info.model_id is None:
            self.refresh()
        if self.info.model_id is None:
            if self.info.status in FINISHED:
                raise JobFailed(self.info)
            raise ValueError(f"job {self.id} is {self.info.status}: it has no model yet; wait() first")
        return self.client.models.get(self.info.model_id)


class Models:
    """Trained models: `client.models.get(id)`, `.list()`, `.delete(id)`."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def get(self, model_id: str) -> "Model":
        """A handle on the model, to predict with and read its BN layers."""
        return Model(self.client, self.client.request("GET", f"/v1/models/{model_id}", ModelOut))

    def list(self, limit: int | None = 20, dataset: str | None = None, job: str | None = None) -> list[ModelOut]:
        """The models the caller may read, newest first; `limit=None` for all of them. Filters: `dataset`
        (a built-in's name or an upload's id), `job` (the id of the job that trained it)."""
        return list(self.client.paged("/v1/models", ModelPage, limit, {"dataset": dataset, "job": job}))

    def delete(self, model_id: str) -> None:
        """Delete a model and its weights; it stops answering predictions."""
        self.client.send("DELETE", f"/v1/models/{model_id}")


class Model(_Handle[ModelOut]):
    """A trained model: `predict(x)` with raw inputs, `batchnorm()` for its BN layers; `info` is its record."""

    @property
    def name(self) -> str:
        return self.info.name

    def __repr__(self) -> str:
        info = self.info
        return f"<Model {short_id(info.id)} {info.name} {info.dataset}{_accuracy(info.final_metrics.val_accuracy)}>"

    def _predict(self, inputs: np.ndarray) -> PredictOut:
        body = {"inputs": np.asarray(inputs, dtype=np.float64).tolist()}
        return self.client.request("POST", f"/v1/models/{self.id}/predict", PredictOut, json=body)

    def predict(self, inputs: np.ndarray) -> np.ndarray:
        """The most probable class of each row of raw feature values, shaped (N, *input_shape); an image
        model also takes flat rows (N, C·H·W)."""
        return np.asarray(self._predict(inputs).predictions)

    def predict_proba(self, inputs: np.ndarray) -> np.ndarray:
        """Each row's class probabilities, shaped (N, num_classes)."""
        return np.asarray(self._predict(inputs).probabilities)

    def predict_all(self, inputs: np.ndarray) -> PredictOut:
        """The service's whole answer in one request: logits, probabilities and the most probable classes."""
        return self._predict(inputs)

    def batchnorm(self) -> BatchNormOut:
        """Every BN layer's γ, β and frozen running statistics."""
        return self.client.request("GET", f"/v1/models/{self.id}/batchnorm", BatchNormOut)


class Datasets:
    """Built-in and uploaded datasets: `client.datasets.list()`, `.upload(path)`, `.get(id)`, `.delete(id)`."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def list(self) -> list[DatasetOut]:
        """The built-in datasets, then the caller's uploads."""
        return self.client.request("GET", "/v1/datasets", DatasetList).items

    def upload(
        self,
        path: str | Path,
        label_column: str | int | None = None,
        name: str | None = None,
        description: str | None = None,
    ) -> DatasetOut:
        """Upload a .csv or .npz file; train on it with `dataset={"id": uploaded.id}`."""
        path = Path(path)
        fields = {"label_column": label_column, "name": name, "description": description}
        data = {key: str(value) for key, value in fields.items() if value is not None}
        with path.open("rb") as file:
            return self.client.request("POST", "/v1/datasets", DatasetOut, files={"file": (path.name, file)}, data=data)

    def get(self, dataset_id: str) -> DatasetOut:
        """An upload's record."""
        return self.client.request("GET", f"/v1/datasets/{dataset_id}", DatasetOut)

    def delete(self, dataset_id: str) -> None:
        """Delete an upload; the models trained on it keep serving."""
        self.client.send("DELETE", f"/v1/datasets/{dataset_id}")


class Experiments:
    """Variants of one job run side by side: `client.experiments.create(...)`, `.get(id)`, `.list()`."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def create(
        self,
        name: str,
        base: Mapping[str, Any],
        variants: list[Mapping[str, Any]],
        target_accuracy: float | None = None,
        idempotency_key: str | None = None,
    ) -> "Experiment":
        """Run each variant (`{"name", "overrides"}`, deep-merged into the job request `base`) as a job."""
        body: dict[str, Any] = {"name": name, "base": dict(base), "variants": [dict(v) for v in variants]}
        if target_accuracy is not None:
            body["target_accuracy"] = target_accuracy
        return self.submit(body, idempotency_key)

    def submit(self, request: Mapping[str, Any], idempotency_key: str | None = None) -> "Experiment":
        """Start an experiment from a whole request body as POST /v1/experiments takes it; with `idempotency_key`,
        sending it again returns the experiment the first call started."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        info = self.client.request("POST", "/v1/experiments", ExperimentOut, json=dict(request), headers=headers)
        return Experiment(self.client, info)

    def preset(self, name: str, epochs: int | None = None, dataset: str | None = None) -> "Experiment":
        """Reproduce one of BN's claims (see `presets()`); `info.claim` says whether it held once it ended."""
        body: dict[str, Any] = {"preset": name}
        if epochs is not None:
            body["epochs"] = epochs
        if dataset is not None:
            body["dataset"] = {"name": dataset}
        return self.submit(body)

    def presets(self) -> list[PresetOut]:
        """Every preset: its experiment request and the claim it judges."""
        return self.client.request("GET", "/v1/experiments/presets", PresetList).presets

    def get(self, experiment_id: str) -> "Experiment":
        """The experiment with its results table so far."""
        return Experiment(self.client, self.client.request("GET", f"/v1/experiments/{experiment_id}", ExperimentOut))

    def list(self, limit: int | None = 20) -> list[ExperimentOut]:
        """The caller's experiments with their results tables, newest first; `limit=None` for all of them."""
        return list(self.client.paged("/v1/experiments", ExperimentPage, limit))


class Experiment(_Handle[ExperimentOut]):
    """An experiment handle; `info` is its results table as last read."""

    @property
    def status(self) -> str:
        """running or finished, as last read."""
        return self.info.status

    def __repr__(self) -> str:
        info = self.info
        scored = [v for v in info.variants if v.best_val_accuracy is not None]
        best = max(scored, key=lambda v: v.best_val_accuracy or 0.0, default=None)
        leader = f" best={best.name}{_accuracy(best.best_val_accuracy)}" if best else ""
        return f"<Experiment {short_id(info.id)} {info.name!r} {info.status} {len(info.variants)} variants{leader}>"

    def refresh(self) -> ExperimentOut:
        """Read the results table again."""
        self.info = self.client.request("GET", f"/v1/experiments/{self.id}", ExperimentOut)
        return self.info

    def cancel(self) -> ExperimentOut:
        """Cancel every variant's job that has not ended (a running one stops within a second)."""
        self.info = self.client.request("POST", f"/v1/experiments/{self.id}/cancel", ExperimentOut)
        return self.info

    def wait(self, timeout: float | None = None, poll_seconds: float = 0.5) -> ExperimentOut:
        """Poll until every variant's job ended; a failed or diverged variant is a result, not an error."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.refresh().status != "finished":
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"experiment {self.id} still {self.info.status} after {timeout} s")
            time.sleep(poll_seconds)
        return self.info
