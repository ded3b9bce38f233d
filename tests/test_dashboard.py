"""The dashboard at / in a real headless browser: start a job from its form, watch it train, look at its model."""

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait
from sklearn.datasets import load_iris

from tests.conftest import RunningService
from tests.support.browser import headless_chromium
from tests.support.jobs import job_request, post_experiment, submit, wait_for
from tests.support.processes import own_service
from tests.support.uploads import iris_csv, upload, uploaded

TRAINING_TIMEOUT = 180
SERIES = ["train_loss", "val_loss", "train_accuracy", "val_accuracy"]
IRIS_JOB = {
    "model": {"architecture": "mlp", "num_classes": 3, "hidden_sizes": [16]},
    "dataset": {"name": "iris"},
    "training": {"epochs": 2, "batch_size": 16},
}


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    with headless_chromium() as driver:
        yield driver


def wait_until(browser: WebDriver, condition: Callable[[WebDriver], Any], timeout: float = 30) -> Any:
    """Poll until condition is truthy; an element missing or replaced by a re-render meanwhile means "not yet"."""
    return WebDriverWait(browser, timeout, poll_frequency=0.2, ignored_exceptions=[StaleElementReferenceException]).until(
        condition
    )


def open_dashboard(browser: WebDriver, url: str) -> None:
    """The page, once its script has filled every list and shown the latest job: nothing changes by itself after."""
    browser.get(f"{url}/")
    wait_until(browser, lambda b: b.execute_script("return document.body.dataset.loaded") == "true")


def short(item_id: str) -> str:
    """`job_3b70…` of `job_3b70c4…`: the prefix and four characters."""
    prefix, rest = item_id.rsplit("_", 1)
    return f"{prefix}_{rest[:4]}…"


def click(browser: WebDriver, selector: str) -> None:
    wait_until(browser, lambda b: b.find_element(By.CSS_SELECTOR, selector).click() or True)


def select_model(browser: WebDriver, model_id: str) -> None:
    """Click the model's row until its panel shows it: a model listed meanwhile (another test's job ending)
    moves the rows down between finding the row and the click landing on the row now in its place."""

    def shown(b: WebDriver) -> bool:
        if b.find_element(By.ID, "model-title").text == model_id:
            return True
        b.find_element(By.CSS_SELECTOR, f"#model-rows tr[data-model-id='{model_id}']").click()
        return False

    wait_until(browser, shown)


def fill(form: WebElement, name: str, value: str) -> None:
    field = form.find_element(By.NAME, name)
    if field.tag_name == "select":
        Select(field).select_by_value(value)
    else:
        field.clear()
        field.send_keys(value)


def submit_job_form(browser: WebDriver, values: dict[str, str]) -> None:
    """Fill the job form's fields (named as in a job spec) in this order, then press its submit button."""
    form = browser.find_element(By.ID, "job-form")
    for name, value in values.items():
        fill(form, name, value)
    browser.find_element(By.ID, "job-submit").click()


def newest_job(client: httpx.Client) -> list[dict[str, Any]]:
    """The newest job as a list of one ([] before any): a form the API refuses leaves it as it was."""
    return client.get("/v1/jobs?limit=1").json()["items"]


def next_job_shown(browser: WebDriver, shown_before: str) -> str:
    """The id of the job the page shows once it shows another than `shown_before`: the one just submitted."""
    return wait_until(
        browser,
        lambda b: b.find_element(By.ID, "job-title").text not in ("", shown_before) and b.find_element(By.ID, "job-title").text,
    )


def field_error(browser: WebDriver, name: str) -> str:
    return browser.find_element(By.CSS_SELECTOR, f".field-error[data-for='{name}']").text


def mean(values: list[float]) -> float:
    """Summed left to right, as the page's script does, so that both round the same double."""
    return sum(values) / len(values)


def rows(browser: WebDriver, table: str) -> list[dict[str, str]]:
    """The rows' data attributes and text, read in one script: the page re-renders its lists by itself,
    so an element found by one WebDriver call may be gone by the next."""
    return browser.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]), (row) => ({...row.dataset, text: row.innerText}))",
        f"#{table} tr",
    )


def chart_points(browser: WebDriver) -> dict[str, int]:
    return browser.execute_script(
        "return Object.fromEntries(Array.from(document.querySelectorAll('#job-chart polyline'),"
        " (line) => [line.dataset.series, line.getAttribute('points').trim().split(/\\s+/).length]))"
    )


def dataset_choices(browser: WebDriver) -> dict[str, str]:
    return dict(
        browser.execute_script("return Array.from(document.querySelectorAll('#dataset-select option'), (o) => [o.value, o.text])")
    )


def plot_width(browser: WebDriver, image: str = "bn-plot") -> int:
    return browser.execute_script("return document.getElementById(arguments[0]).naturalWidth", image)


def test_a_job_started_from_the_form_trains_live_and_its_models_bn_layers_are_shown_and_recalibrated(
    service: RunningService, client: httpx.Client, browser: WebDriver
) -> None:
    open_dashboard(browser, service.url)
    form = browser.find_element(By.ID, "job-form")
    fill(form, "dataset.name", "iris")
    assert form.find_element(By.NAME, "model.num_classes").get_attribute("value") == "3"  # from the dataset
    shown_before = browser.find_element(By.ID, "job-title").text  # the latest job, shown on opening
    submit_job_form(
        browser,
        {
            "model.hidden_sizes": "16, 8",
            "model.activation": "tanh",
            "training.epochs": "3",
            "training.batch_size": "16",
            "training.learning_rate": "0.05",
            "training.optimizer": "adam",
            "name": "tanh on iris",
        },
    )

    job_id = next_job_shown(browser, shown_before)
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["name"] == "tanh on iris"
    assert job["spec"]["dataset"]["name"] == "iris"
    assert job["spec"]["model"] | {"hidden_sizes": [16, 8], "activation": "tanh", "num_classes": 3} == job["spec"]["model"]
    assert (
        job["spec"]["training"] | {"epochs": 3, "batch_size": 16, "learning_rate": 0.05, "optimizer": "adam"}
        == job["spec"]["training"]
    )

    wait_until(browser, lambda b: b.find_element(By.ID, "job-status").text == "succeeded", TRAINING_TIMEOUT)
    assert browser.find_element(By.ID, "job-name").text == "tanh on iris"
    assert chart_points(browser) == {name: 3 for name in SERIES}
    epochs = client.get(f"/v1/jobs/{job_id}").json()["metrics"]
    seconds = [epoch["seconds"] for epoch in epochs]
    assert browser.find_element(By.ID, "job-pace").text == (
        f"epoch 3 took {seconds[-1]:.3f} s; {sum(seconds):.2f} s over 3 epochs; learning rate {epochs[-1]['learning_rate']:.4g}"
    )

    def listed_once_succeeded(b: WebDriver) -> list[str] | None:  # the list refreshes by itself
        listed = rows(b, "job-rows")
        done = any(row["jobId"] == job_id and "succeeded" in row["text"] for row in listed)
        return [row["jobId"] for row in listed] if done else None

    assert wait_until(browser, listed_once_succeeded)[0] == job_id  # newest first
    row = next(row for row in rows(browser, "job-rows") if row["jobId"] == job_id)["text"].split("\t")
    accuracy = client.get(f"/v1/jobs/{job_id}").json()["metrics"][-1]["val_accuracy"]
    assert row == [short(job_id), "tanh on iris", "succeeded", "3/3", f"{accuracy:.3f}", "iris", row[6]]

    model_id = client.get(f"/v1/jobs/{job_id}").json()["model_id"]
    served = client.post(f"/v1/models/{model_id}/predict", json={"inputs": load_iris().data[:5].tolist()})
    assert served.status_code == 200
    browser.find_element(By.ID, "job-model").click()
    assert browser.find_element(By.ID, "model-title").text == model_id
    wait_until(browser, lambda b: plot_width(b) > 0, 60)
    layers = [row["text"].split("\t") for row in rows(browser, "bn-rows")]
    assert [layer[:2] for layer in layers] == [["bn1", "16"], ["bn2", "8"]]
    drift = client.get(f"/v1/models/{model_id}/drift").json()
    assert [layer[6:] for layer in layers] == [
        ["5", f"{d['mean_shift']:.2f}", f"{d['variance_ratio']:.2f}", "no"] for d in drift["layers"]
    ]  # the served inputs each BN layer saw, against its frozen statistics
    assert browser.find_element(By.ID, "model-drift").text.startswith("Served 5 samples since ")
    assert "no BN layer has drifted" in browser.find_element(By.ID, "model-drift").text
    assert browser.find_element(By.ID, "model-serving").text == "Served with bn1, bn2 folded into the layer before each."

    browser.find_element(By.ID, "model-recalibrate").click()
    recalibration = wait_until(
        browser, lambda b: b.find_element(By.ID, "job-title").text not in ("", job_id) and b.find_element(By.ID, "job-title").text
    )
    assert client.get(f"/v1/jobs/{recalibration}").json()["recalibration"]["parent_model_id"] == model_id
    wait_until(browser, lambda b: b.find_element(By.ID, "job-model").is_displayed(), TRAINING_TIMEOUT)
    assert browser.find_element(By.ID, "job-info").text.startswith(
        f"BN statistics of {model_id} recomputed over its training split"
    )
    browser.find_element(By.ID, "job-model").click()
    recalibrated = client.get(f"/v1/jobs/{recalibration}").json()["model_id"]
    assert browser.find_element(By.ID, "model-title").text == recalibrated
    wait_until(
        browser, lambda b: b.find_element(By.ID, "model-info").text.endswith(f"BN statistics recalibrated from {model_id}")
    )
    listed = wait_until(browser, lambda b: recalibrated in (ids := [row["modelId"] for row in rows(b, "model-rows")]) and ids)
    assert listed.index(recalibrated) < listed.index(model_id)  # newest first


def test_a_group_norm_model_shows_gamma_and_beta_with_no_statistics_to_fold_watch_or_recalibrate(
    service: RunningService, client: httpx.Client, browser: WebDriver
) -> None:
    model = {**IRIS_JOB["model"], "hidden_sizes": [16, 8], "normalization": "group_norm", "groups": 4}
    job = wait_for(client, submit(client, {**IRIS_JOB, "model": model})["id"], timeout=TRAINING_TIMEOUT)
    assert job["status"] == "succeeded"
    layers = client.get(f"/v1/models/{job['model_id']}/batchnorm").json()["layers"]
    note = client.get(f"/v1/models/{job['model_id']}").json()["serving"]["note"]

    open_dashboard(browser, service.url)
    select_model(browser, job["model_id"])
    shown = wait_until(browser, lambda b: (found := [row["text"].split("\t") for row in rows(b, "bn-rows")]) and found)
    # γ and β as stored; the running mean and variance cells stay empty: GroupNorm keeps none.
    assert [row[:6] for row in shown] == [
        [layer["name"], str(layer["num_features"]), f"{mean(layer['gamma']):.3f}", f"{mean(layer['beta']):.3f}", "", ""]
        for layer in layers
    ]
    assert browser.find_element(By.ID, "model-serving").text == f"Served unfolded: {note}"
    assert "drift monitoring does not apply" in browser.find_element(By.ID, "model-drift").text
    assert not browser.find_element(By.ID, "model-recalibrate").is_displayed()


def test_an_uploaded_dataset_is_picked_in_the_form_and_its_jobs_show_its_id(
    service: RunningService, client: httpx.Client, browser: WebDriver, tmp_path: Path
) -> None:
    dataset_id = uploaded(client, iris_csv(tmp_path / "iris.csv"), name="my iris")["id"]
    open_dashboard(browser, service.url)
    wait_until(browser, lambda b: dataset_id in dataset_choices(b))  # the script adds the uploads to the built-ins
    choices = dataset_choices(browser)
    assert choices[dataset_id] == f"my iris (upload {dataset_id})" and choices["digits"] == "digits"
    form = browser.find_element(By.ID, "job-form")
    fill(form, "dataset.name", dataset_id)
    assert form.find_element(By.NAME, "model.num_classes").get_attribute("value") == "3"
    shown_before = browser.find_element(By.ID, "job-title").text
    submit_job_form(browser, {"training.epochs": "1"})

    job_id = next_job_shown(browser, shown_before)
    assert client.get(f"/v1/jobs/{job_id}").json()["spec"]["dataset"] == {"id": dataset_id}
    wait_until(browser, lambda b: b.find_element(By.ID, "job-status").text == "succeeded", TRAINING_TIMEOUT)
    assert browser.find_element(By.ID, "job-info").text.startswith("my iris, mlp")  # the upload's name, not its id
    listed = wait_until(
        browser,
        lambda b: next(
            (row["text"] for row in rows(b, "job-rows") if row["jobId"] == job_id and "succeeded" in row["text"]), None
        ),
    )
    cells = listed.split("\t")
    assert [cells[0], cells[2], cells[5]] == [short(job_id), "succeeded", "my iris"]
    assert f'<td title="{dataset_id}">my iris</td>' in httpx.get(f"{service.url}/").text  # in the page's own markup too


def test_a_data_parallel_jobs_view_shows_its_world_size_and_a_one_process_jobs_does_not(
    service: RunningService, client: httpx.Client, browser: WebDriver
) -> None:
    two = submit(client, IRIS_JOB | {"resources": {"processes": 2}})["id"]  # batches of 16: 8 samples a process
    one = submit(client, IRIS_JOB)["id"]
    assert [wait_for(client, job_id)["world_size"] for job_id in (two, one)] == [2, 1]
    open_dashboard(browser, service.url)
    shown = {}
    for job_id in (two, one):
        click(browser, f"#job-rows tr[data-job-id='{job_id}']")
        wait_until(
            browser,
            lambda b, job_id=job_id: (
                b.find_element(By.ID, "job-title").text == job_id and b.find_element(By.ID, "job-status").text == "succeeded"
            ),
        )
        shown[job_id] = browser.find_element(By.ID, "job-info").text.split(" · ")
    assert "world size 2" in shown[two], shown[two]
    assert not any(part.startswith("world size") for part in shown[one]), shown[one]


def test_a_file_uploaded_from_the_page_is_stored_and_picked_for_the_next_job(
    service: RunningService, client: httpx.Client, browser: WebDriver, tmp_path: Path
) -> None:
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("1,2,0\n1,1\n")
    refused = upload(client, ragged).json()["error"]["fields"][0]
    open_dashboard(browser, service.url)
    form = browser.find_element(By.ID, "upload-form")
    form.find_element(By.NAME, "file").send_keys(str(ragged))
    browser.find_element(By.ID, "upload-submit").click()
    wait_until(browser, lambda b: "error" in b.find_element(By.ID, "upload-message").get_attribute("class"))
    assert browser.find_element(By.ID, "upload-message").text == f"{refused['field']}: {refused['message']}"

    form.find_element(By.NAME, "file").send_keys(str(iris_csv(tmp_path / "flowers.csv")))
    fill(form, "name", "flowers")
    browser.find_element(By.ID, "upload-submit").click()
    stored = wait_until(
        browser,
        lambda b: "stored as" in b.find_element(By.ID, "upload-message").text and b.find_element(By.ID, "upload-message").text,
    )
    dataset_id = stored.split("stored as ")[1].split(";")[0]
    assert stored.startswith("flowers: 150 samples, 3 classes")
    assert client.get(f"/v1/datasets/{dataset_id}").json()["name"] == "flowers"
    job_form = browser.find_element(By.ID, "job-form")
    assert Select(job_form.find_element(By.NAME, "dataset.name")).first_selected_option.get_attribute("value") == dataset_id
    assert job_form.find_element(By.NAME, "model.num_classes").get_attribute("value") == "3"


def test_an_experiment_shows_its_table_and_curves_and_leads_to_its_jobs(
    service: RunningService, client: httpx.Client, browser: WebDriver
) -> None:
    activations = [{"name": "relu"}, {"name": "sigmoid", "overrides": {"model": {"activation": "sigmoid"}}}]
    created = post_experiment(client, "relu or sigmoid", IRIS_JOB, activations).json()
    for variant in created["variants"]:
        wait_for(client, variant["job_id"])
    table = client.get(f"/v1/experiments/{created['id']}").json()

    browser.get(f"{service.url}/")
    # In the page's markup: listed before the script has fetched anything.
    listed = next(row["text"] for row in rows(browser, "experiment-rows") if row["experimentId"] == created["id"])
    best = max(table["variants"], key=lambda v: v["best_val_accuracy"])
    assert listed.split("\t") == ["relu or sigmoid", "finished", "2", f"{best['name']} {best['best_val_accuracy']:.3f}"]
    wait_until(browser, lambda b: b.execute_script("return document.body.dataset.loaded") == "true")
    assert next(row["text"] for row in rows(browser, "experiment-rows") if row["experimentId"] == created["id"]) == listed
    click(browser, f"#experiment-rows tr[data-experiment-id='{created['id']}']")
    wait_until(browser, lambda b: b.find_element(By.ID, "experiment-status").text == "finished")
    assert [row["text"].split("\t") for row in rows(browser, "variant-rows")] == [
        [
            v["name"],
            short(v["job_id"]),
            "succeeded",
            f"{v['final_val_accuracy']:.3f}",
            f"{v['best_val_accuracy']:.3f}",
            "",
            "no",
        ]  # no target accuracy: no epochs to it
        for v in table["variants"]
    ]
    wait_until(browser, lambda b: plot_width(b, "experiment-plot") > 0, 60)

    sigmoid = table["variants"][1]["job_id"]
    click(browser, f"#variant-rows tr[data-job-id='{sigmoid}']")
    wait_until(browser, lambda b: b.find_element(By.ID, "job-title").text == sigmoid)
    wait_until(browser, lambda b: b.find_element(By.ID, "job-status").text == "succeeded")


def test_an_experiment_still_going_is_cancelled_from_the_page(
    service: RunningService, client: httpx.Client, browser: WebDriver
) -> None:
    created = post_experiment(client, "too long", job_request(training={"epochs": 1000}), [{"name": "only"}]).json()
    open_dashboard(browser, service.url)
    click(browser, f"#experiment-rows tr[data-experiment-id='{created['id']}']")
    wait_until(browser, lambda b: b.find_element(By.ID, "experiment-cancel").is_displayed())
    browser.find_element(By.ID, "experiment-cancel").click()
    assert wait_for(client, created["variants"][0]["job_id"])["status"] == "cancelled"
    wait_until(browser, lambda b: b.find_element(By.ID, "experiment-status").text == "finished")  # on its next refresh
    assert not browser.find_element(By.ID, "experiment-cancel").is_displayed()
    assert rows(browser, "variant-rows")[0]["text"].split("\t")[2] == "cancelled"


def test_a_refused_job_shows_the_apis_field_errors_next_to_the_form(
    service: RunningService, client: httpx.Client, browser: WebDriver
) -> None:
    newest_before = newest_job(client)
    open_dashboard(browser, service.url)
    submit_job_form(browser, {"dataset.name": "digits", "model.hidden_sizes": "64, wide", "training.epochs": "0"})

    wait_until(browser, lambda b: field_error(b, "training.epochs"))
    refused = client.post("/v1/jobs", json=job_request(model={"hidden_sizes": [64, "wide"]}, training={"epochs": 0}))
    assert refused.status_code == 422
    messages = {error["field"]: error["message"] for error in refused.json()["error"]["fields"]}
    assert field_error(browser, "training.epochs") == messages["training.epochs"]
    assert field_error(browser, "model.hidden_sizes") == messages["model.hidden_sizes.1"]
    assert field_error(browser, "model.num_classes") == ""

    # Checked against the dataset only once the values are valid: the earlier errors go, this one comes.
    submit_job_form(browser, {"model.hidden_sizes": "64", "training.epochs": "2", "model.num_classes": "3"})
    wait_until(browser, lambda b: field_error(b, "model.num_classes"))
    assert field_error(browser, "model.num_classes") == "dataset 'digits' has 10 classes, got 3"
    assert field_error(browser, "training.epochs") == field_error(browser, "model.hidden_sizes") == ""
    assert newest_job(client) == newest_before


KEYS = {
    "alice": {"key": "alice-key-0123456789", "owner": "alice", "scopes": ["train", "infer"]},
    "bob": {"key": "bob-key-0123456789abc", "owner": "bob", "scopes": ["train", "infer"]},
}


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with own_service(tmp_path_factory.mktemp("dashboard-keys"), {"EMBEDDED_WORKERS": "1"}, list(KEYS.values())) as url:
        yield url


def as_(url: str, who: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEYS[who]['key']}"}, timeout=60)


def enter_key(browser: WebDriver, key: str) -> None:
    field = browser.find_element(By.ID, "key-input")
    field.clear()
    field.send_keys(key)
    browser.find_element(By.CSS_SELECTOR, "#key-form button[type=submit]").click()


def job_ids(browser: WebDriver) -> list[str]:
    return [row["jobId"] for row in rows(browser, "job-rows")]


def test_with_api_keys_the_page_shows_nothing_until_a_key_is_given_and_then_only_its_owners(
    secured: str, browser: WebDriver
) -> None:
    with as_(secured, "alice") as alice, as_(secured, "bob") as bob:
        alices = wait_for(alice, submit(alice, job_request(training={"epochs": 1}))["id"])
        assert alices["status"] == "succeeded"
        bobs = submit(bob, job_request(training={"epochs": 1}))

    page = httpx.get(f"{secured}/")
    assert page.status_code == 200
    for secret in (alices["id"], alices["model_id"], bobs["id"], "data-num-classes"):  # no job, model or dataset
        assert secret not in page.text

    browser.get(f"{secured}/")
    assert "enter an API key" in browser.find_element(By.ID, "key-message").text
    assert job_ids(browser) == []
    enter_key(browser, "not-a-key-0123456789")
    wait_until(browser, lambda b: "unknown API key" in b.find_element(By.ID, "key-message").text)
    assert browser.execute_script("return sessionStorage.length") == 0

    enter_key(browser, KEYS["alice"]["key"])
    wait_until(browser, lambda b: job_ids(b) == [alices["id"]])
    browser.execute_script("window.rowSeen = document.querySelector('#job-rows tr')")
    refreshed = answered(browser)["jobs"] + 2
    wait_until(browser, lambda b: answered(b)["jobs"] >= refreshed)
    assert browser.execute_script("return document.querySelector('#job-rows tr') === window.rowSeen")  # unchanged: kept
    select_model(browser, alices["model_id"])  # listed when its request comes back
    wait_until(browser, lambda b: plot_width(b) > 0, 60)  # fetched with the key, shown from a blob

    browser.find_element(By.ID, "key-forget").click()
    assert job_ids(browser) == [] and browser.find_element(By.ID, "model-detail").get_attribute("hidden")
    enter_key(browser, KEYS["bob"]["key"])
    wait_until(browser, lambda b: job_ids(b) == [bobs["id"]])


def test_answers_that_arrive_after_the_key_was_forgotten_are_not_shown(secured: str, browser: WebDriver) -> None:
    with as_(secured, "alice") as alice:
        submit(alice, job_request(training={"epochs": 1}))
    browser.get(f"{secured}/")
    browser.execute_cdp_cmd("Network.enable", {})
    with slow_network(browser, latency_ms=1500):
        enter_key(browser, KEYS["alice"]["key"])
        wait_until(browser, lambda b: b.find_element(By.ID, "key-forget").is_displayed())  # the lists are on their way
        browser.find_element(By.ID, "key-forget").click()
        wait_until(browser, lambda b: answered(b)["jobs"] and answered(b)["models"])
    assert job_ids(browser) == [] and rows(browser, "model-rows") == []


@contextmanager
def slow_network(browser: WebDriver, latency_ms: int) -> Iterator[None]:
    def emulate(latency: int) -> None:
        browser.execute_cdp_cmd(
            "Network.emulateNetworkConditions",
            {
                "offline": False,
                "latency": latency,
                "downloadThroughput": -1,
                "uploadThroughput": -1,
            },
        )

    emulate(latency_ms)
    try:
        yield
    finally:
        emulate(0)


def answered(browser: WebDriver) -> Counter[str]:
    """How many answers of each API listing (`jobs`, `models`, ...) have reached the page."""
    return Counter(
        browser.execute_script(
            "return performance.getEntriesByType('resource').map((e) => new URL(e.name).pathname.split('/')[2])"
        )
    )


def test_a_resnet_job_is_described_in_the_form_and_a_bad_depth_shown_next_to_it(
    service: RunningService, client: httpx.Client, browser: WebDriver
) -> None:
    newest_before = newest_job(client)
    open_dashboard(browser, service.url)
    resnet = {
        "model.architecture": "resnet",
        "dataset.name": "digits",
        "model.num_classes": "10",
        "model.input_shape": "1, 8, 8",
        "model.depth": "9",
        "model.width": "8",
    }
    submit_job_form(browser, resnet)

    wait_until(browser, lambda b: field_error(b, "model.depth"))
    assert "6n+2" in field_error(browser, "model.depth")
    assert newest_job(client) == newest_before

    submit_job_form(browser, {"model.depth": "8", "training.epochs": "1"})
    job = wait_until(browser, lambda b: (items := newest_job(client)) != newest_before and items[0])
    assert job["spec"]["model"] | {"depth": 8, "width": 8, "input_shape": [1, 8, 8]} == job["spec"]["model"]
    assert job["spec"]["model"]["architecture"] == "resnet"
    assert wait_for(client, job["id"])["status"] == "succeeded"


ARTIFACTS = Path(__file__).resolve().parent / "artifacts" / "dashboard"
SCREENS = {"1280x800": (1280, 800), "1920x1080": (1920, 1080)}
# Columns whose every cell must be shown whole (names may be cut with …, whole on hover).
WHOLE = {
    "job-rows": [0, 2, 3, 4, 6],
    "model-rows": [0, 3, 4, 5],
    "experiment-rows": [1, 2, 3],
    "variant-rows": [1, 2, 3, 4],
    "bn-rows": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
}


def view(browser: WebDriver, width: int, height: int) -> None:
    """A viewport of exactly width × height CSS pixels, as a screen of that size shows the page."""
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
    )


def layout_faults(browser: WebDriver) -> list[str]:
    """What does not fit: a table (or the page) that scrolls sideways, a header or a cell of WHOLE cut short."""
    return browser.execute_script(
        """
        const faults = [];
        const page = document.documentElement;
        if (page.scrollWidth > page.clientWidth) faults.push(`page ${page.scrollWidth} > ${page.clientWidth}`);
        for (const table of document.querySelectorAll("table")) {
          const box = table.parentElement;
          if (!box.offsetParent) continue;  // a hidden panel
          const where = table.closest("section").id;
          if (box.scrollWidth > box.clientWidth) faults.push(`${where}: scrolls ${box.scrollWidth} > ${box.clientWidth}`);
          for (const th of table.querySelectorAll("th")) {
            if (th.scrollWidth > th.clientWidth) faults.push(`${where}: header '${th.textContent}' cut`);
          }
        }
        for (const [tbody, columns] of Object.entries(arguments[0])) {
          for (const row of document.querySelectorAll(`#${tbody} tr`)) {
            if (!row.offsetParent) continue;
            for (const index of columns) {
              const td = row.cells[index];
              if (td && td.scrollWidth > td.clientWidth) faults.push(`${tbody}: '${td.textContent}' cut`);
            }
          }
        }
        return faults;
        """,
        WHOLE,
    )


def in_first_view(browser: WebDriver, section: str) -> bool:
    return browser.execute_script(
        "const box = document.getElementById(arguments[0]).getBoundingClientRect();"
        "return !document.getElementById(arguments[0]).hidden && box.top < window.innerHeight && box.height > 0",
        section,
    )


def screenshot(browser: WebDriver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    assert browser.save_screenshot(str(path))
    print(f"screenshot: {path}")
    return path


def test_the_first_view_fits_1280_and_1920_pixels_with_every_column_shown(
    service: RunningService, client: httpx.Client, browser: WebDriver, digits_model: dict, tmp_path: Path
) -> None:
    """What a user sees on opening the page: what runs and how it goes, and which model is best."""
    uploaded(client, iris_csv(tmp_path / "iris.csv"), name="garden irises")
    experiment = client.post(
        "/v1/experiments",
        json={
            "name": "batch sizes",
            "base": IRIS_JOB,
            "variants": [{"name": "b16"}, {"name": "b32", "overrides": {"training": {"batch_size": 32}}}],
        },
    ).json()
    for variant in experiment["variants"]:
        wait_for(client, variant["job_id"])
    running = submit(client, job_request(training={"epochs": 1000}) | {"name": "a long one, to watch"})
    wait_for(client, running["id"], until={"running"})
    try:
        for screen, (width, height) in SCREENS.items():
            view(browser, width, height)
            open_dashboard(browser, service.url)
            assert browser.find_element(By.ID, "job-title").text == running["id"]  # the running job, shown at once
            wait_until(browser, lambda b: min(chart_points(b).values()) >= 2, TRAINING_TIMEOUT)  # its curves, live
            for section in ("jobs", "job-detail", "models", "experiments"):
                assert in_first_view(browser, section), f"{section} below the first view at {screen}"
            screenshot(browser, f"first-view-{screen}")
            assert layout_faults(browser) == [], screen
            best = next(row for row in rows(browser, "model-rows") if "★" in row["text"])
            assert best["text"].split("\t")[4].endswith("★")

            select_model(browser, digits_model["id"])
            wait_until(browser, lambda b: plot_width(b) > 0, 60)
            wait_until(browser, lambda b: chart_points(b) == {name: 3 for name in SERIES})  # the curves of its job
            assert browser.find_element(By.ID, "job-title").text == digits_model["job_id"]
            wait_until(browser, lambda b: len(rows(b, "bn-rows")) == 3)
            browser.execute_script("document.getElementById('model-detail').scrollIntoView()")
            screenshot(browser, f"model-{screen}")
            assert layout_faults(browser) == [], screen
            plot_beside_table = browser.execute_script(
                "const plot = document.getElementById('bn-plot').getBoundingClientRect();"
                "const table = document.querySelector('#model-detail table').getBoundingClientRect();"
                "return plot.left >= table.right && plot.top < table.bottom"
            )
            assert plot_beside_table, f"the BN plot is not beside the model's details at {screen}"

            click(browser, f"#experiment-rows tr[data-experiment-id='{experiment['id']}']")
            wait_until(browser, lambda b: plot_width(b, "experiment-plot") > 0, 60)
            browser.execute_script("document.getElementById('experiment-detail').scrollIntoView()")
            screenshot(browser, f"experiment-{screen}")
            assert layout_faults(browser) == [], screen
    finally:
        client.post(f"/v1/jobs/{running['id']}/cancel")
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_the_api_docs_render_from_the_service_alone(service: RunningService, browser: WebDriver) -> None:
    """Swagger UI and ReDoc load their scripts and styles from the service: no CDN, so they work offline."""
    own = service.url
    for page, title in (("/docs", ".swagger-ui .info .title"), ("/redoc", "h1")):
        browser.get(f"{own}{page}")
        heading = wait_until(browser, lambda b, title=title: b.find_elements(By.CSS_SELECTOR, title))
        assert heading[0].text.startswith("BatchNorm job service"), page
        wanted = browser.execute_script("return performance.getEntriesByType('resource').map((e) => e.name)")
        assert any(url.startswith(f"{own}/docs-assets/") for url in wanted), wanted
        # ReDoc's sidebar asks for its maker's logo from a CDN: the page's policy refuses it (and it hides itself).
        refused = " ".join(
            entry["message"] for entry in browser.get_log("browser") if "Content Security Policy" in entry["message"]
        )
        outside = [url for url in wanted if not url.startswith(own)]
        assert all(url in refused for url in outside), (outside, refused)
