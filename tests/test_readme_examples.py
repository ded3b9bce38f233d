"""The README's curl and SDK examples, run as written against the running service, so they never go stale.

Placeholders (JOB_ID, MODEL_ID, …) become real ids; DATASET_ID is the upload the README made just before.
Commands that change something a later example needs (cancel, delete) get a throwaway job, model or
dataset of their own, and whatever the README starts is cancelled at once so that it does not hold up
the workers. The README's `.venv/bin/python -c` commands that make data files run too.
"""

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.conftest import RunningService
from tests.support.jobs import cancel_all, job_request, long_job, submit, train, wait_for
from tests.support.processes import ROOT

README_URL = "http://127.0.0.1:8000"
README_PYTHON = ".venv/bin/python -c "
PLACEHOLDER = re.compile(r"\b[A-Z]+_ID\b")


@dataclass(frozen=True)
class CurlExample:
    command: str
    method: str
    path: str  # without the query, placeholders kept: /v1/jobs/JOB_ID

    @property
    def changes_its_target(self) -> bool:
        return self.method == "DELETE" or self.path.endswith("/cancel")


def sh_commands(markdown: str) -> Iterator[str]:
    """Each command of each ```sh block, with continuation lines and quoted newlines joined."""
    for block in re.findall(r"^```sh\n(.*?)^```", markdown, flags=re.S | re.M):
        pending = ""
        for line in block.splitlines():
            pending += line + "\n"
            try:
                shlex.split(pending, comments=True)
            except ValueError:  # an open quote: the command goes on
                continue
            if not pending.rstrip().endswith("\\"):
                if pending.strip():
                    yield pending.strip()
                pending = ""


def readme_commands() -> list[str]:
    """The README's curl commands and the python one-liners that make their data files, in order."""
    return [command for command in sh_commands((ROOT / "README.md").read_text()) if command.startswith(("curl ", README_PYTHON))]


def curl_examples() -> list[CurlExample]:
    examples = []
    for command in readme_commands():
        words = shlex.split(command, comments=True)
        if words[0] != "curl":
            continue
        url = next(word for word in words if word.startswith(README_URL))
        method = words[words.index("-X") + 1] if "-X" in words else "POST" if {"-d", "-F", "--data"} & set(words) else "GET"
        examples.append(CurlExample(command, method, url.removeprefix(README_URL).split("?")[0]))
    return examples


def operation_templates(client: httpx.Client) -> set[tuple[str, str]]:
    paths = client.get("/openapi.json").json()["paths"]
    return {(method.upper(), path) for path, operations in paths.items() for method in operations}


def covers(example: CurlExample, method: str, template: str) -> bool:
    pattern = re.sub(r"\{[^}]+\}", "[^/]+", re.escape(template).replace(r"\{", "{").replace(r"\}", "}"))
    return example.method == method and re.fullmatch(pattern, PLACEHOLDER.sub("x", example.path)) is not None


def test_every_endpoint_has_a_curl_example_in_the_readme(client: httpx.Client) -> None:
    examples = curl_examples()
    missing = {
        (method, template)
        for method, template in operation_templates(client)
        if not any(covers(example, method, template) for example in examples)
    }
    assert not missing, f"endpoints without a curl example in README.md: {sorted(missing)}"


class Ids:
    """Real ids for the README's placeholders; fresh throwaway ones for commands that change their target."""

    def __init__(self, client: httpx.Client, model: dict) -> None:
        self.client = client
        experiment = client.post(
            "/v1/experiments",
            json={
                "name": "readme",
                "base": job_request(dataset={"name": "iris"}, model={"num_classes": 3}, training={"epochs": 1}),
                "variants": [{"name": "batchnorm"}],
            },
        )
        assert experiment.status_code == 202, experiment.text
        for variant in experiment.json()["variants"]:
            wait_for(client, variant["job_id"])
        self.shared = {"JOB_ID": model["job_id"], "MODEL_ID": model["id"], "EXPERIMENT_ID": experiment.json()["id"]}

    def throwaway(self, placeholder: str) -> str:
        if placeholder == "JOB_ID":
            return submit(self.client, long_job())["id"]
        if placeholder == "MODEL_ID":
            return train(self.client, job_request(training={"epochs": 1}))["model_id"]
        if placeholder == "EXPERIMENT_ID":
            experiment = self.client.post(
                "/v1/experiments",
                json={
                    "name": "throwaway",
                    "base": long_job(),
                    "variants": [{"name": "only"}],
                },
            )
            assert experiment.status_code == 202, experiment.text
            return experiment.json()["id"]
        if placeholder == "DATASET_ID":
            rows = "\n".join(f"{i},{i % 3},{i % 2}" for i in range(20))
            response = self.client.post("/v1/datasets", files={"file": ("throwaway.csv", rows)})
            assert response.status_code == 201, response.text
            return response.json()["id"]
        raise AssertionError(f"no throwaway {placeholder} to make")

    def remember(self, example: CurlExample, output: str) -> None:
        if example.method == "POST" and example.path == "/v1/datasets":
            self.shared["DATASET_ID"] = json.loads(output)["id"]

    def fill(self, example: CurlExample) -> str:
        def replace(match: re.Match[str]) -> str:
            name = match.group()
            return self.throwaway(name) if example.changes_its_target else self.shared[name]

        return PLACEHOLDER.sub(replace, example.command)


def run_command(command: str, service: RunningService, cwd: Path) -> str:
    command = command.replace(README_URL, service.url).replace("curl ", "curl --fail-with-body --max-time 120 ", 1)
    command = command.replace(README_PYTHON, f"{sys.executable} -c ", 1)
    result = subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True, timeout=150)
    assert result.returncode == 0, f"{command}\nexit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def started_jobs(output: str) -> list[dict]:
    """The jobs an example's answer says it started: a job, or an experiment's variants."""
    try:
        answer = json.loads(output)
    except ValueError:
        return []
    if not isinstance(answer, dict):
        return []
    if str(answer.get("id", "")).startswith("job_"):
        return [answer]
    return [{"id": variant["job_id"]} for variant in answer.get("variants", []) if variant.get("job_id")]


def test_the_readme_curl_examples_work_as_written(
    service: RunningService, client: httpx.Client, digits_model: dict, tmp_path: Path
) -> None:
    examples = {example.command: example for example in curl_examples()}
    assert len(examples) >= 20, "the README lost its curl examples"
    ids = Ids(client, digits_model)
    for command in readme_commands():
        if command not in examples:
            run_command(command, service, tmp_path)
            continue
        example = examples[command]
        output = run_command(ids.fill(example), service, tmp_path)
        cancel_all(client, started_jobs(output))  # the README's jobs would hold up the workers
        ids.remember(example, output)
        if command.startswith("curl -s") and not re.search(r" -(o|OJ) ", command):
            assert example.method == "DELETE" or json.loads(output)  # quiet examples answer JSON; DELETE nothing
    assert {path.suffix for path in tmp_path.iterdir()} >= {".png", ".safetensors", ".onnx"}


def test_the_readme_python_examples_run_as_written(service: RunningService, tmp_path: Path) -> None:
    blocks = re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(), flags=re.S | re.M)
    sdk_blocks = [block for block in blocks if "Client(" in block]
    assert sdk_blocks, "the README lost its SDK example"
    for block in sdk_blocks:
        script = tmp_path / "example.py"
        script.write_text(block.replace(README_URL, service.url))
        result = subprocess.run(
            [sys.executable, str(script)],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, f"{block}\n{result.stdout}\n{result.stderr}"
