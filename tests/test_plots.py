"""A user looks at a job's learning curves and a model's BN layers as PNG charts."""

import io

import httpx
import numpy as np
from PIL import Image

from tests.support.jobs import job_request, submit, wait_for

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# matplotlib's tab:blue and tab:orange, the train and validation curves.
TRAIN_RGB, VALIDATION_RGB = (0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E)


def png(response: httpx.Response) -> Image.Image:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.content.startswith(PNG_SIGNATURE)
    image = Image.open(io.BytesIO(response.content))
    image.load()
    darkest, lightest = image.convert("L").getextrema()
    assert lightest - darkest > 100, "a blank image"
    return image


def pixels_of(image: Image.Image, rgb: tuple[int, int, int]) -> int:
    """How many pixels are (within antialiasing) this colour."""
    distance = np.abs(np.asarray(image.convert("RGB"), dtype=int) - np.array(rgb)).sum(axis=2)
    return int((distance < 24).sum())


def test_a_finished_job_plots_loss_and_accuracy_per_epoch(client: httpx.Client, digits_model: dict) -> None:
    image = png(client.get(f"/v1/jobs/{digits_model['job_id']}/plot.png"))

    assert image.format == "PNG"
    assert image.width >= 800 and 300 <= image.height < image.width  # two panels side by side
    assert pixels_of(image, TRAIN_RGB) > 200 and pixels_of(image, VALIDATION_RGB) > 200  # both curves are drawn


def test_a_job_without_metrics_still_gets_a_chart_that_says_so(client: httpx.Client) -> None:
    blocker = submit(client, job_request(training={"epochs": 1000}, model={"hidden_sizes": [512, 512]}))
    queued = submit(client, job_request())
    try:
        assert client.get(f"/v1/jobs/{queued['id']}").json()["metrics"] == []
        image = png(client.get(f"/v1/jobs/{queued['id']}/plot.png"))
    finally:
        for job in (queued, blocker):
            client.post(f"/v1/jobs/{job['id']}/cancel")
        wait_for(client, blocker["id"])

    assert image.width >= 400 and image.height >= 200
    assert image.info["Description"] == "No metrics yet: they appear as each epoch finishes."
    assert pixels_of(image, TRAIN_RGB) == pixels_of(image, VALIDATION_RGB) == 0  # no curve, not even an empty one


def test_a_model_plots_gamma_beta_and_running_statistics_of_each_bn_layer(client: httpx.Client, digits_model: dict) -> None:
    image = png(client.get(f"/v1/models/{digits_model['id']}/batchnorm/plot.png"))

    assert image.width >= 1000 and image.height >= 3 * 200  # four panels per layer, one row per BN layer


def test_plots_of_unknown_jobs_and_models_are_404(client: httpx.Client) -> None:
    for url, code in [
        ("/v1/jobs/job_missing/plot.png", "job_not_found"),
        ("/v1/models/model_missing/batchnorm/plot.png", "model_not_found"),
    ]:
        response = client.get(url)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == code
