"""The curl, `bnjobs` and SDK examples of README.md and every docs/*.md page, run as written against the running service.

Placeholders (JOB_ID, MODEL_ID, …) become real ids; DATASET_ID is the upload the page made just before
(or one made for it). Commands that change something a later example needs (cancel, delete) get a
throwaway job, model or dataset of their own, and whatever a page starts is cancelled at once so that it
does not hold up the workers. The `.venv/bin/python -c` commands that make data files run too, and the
`grep`s that read what a curl wrote; a YAML block headed `# NAME.yaml` is the file a command names. A
shell command or block that cannot run here is excluded below, with the reason; anything else a page
adds is run, or fails the test until it is excluded.
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
import pytest

from tests.conftest import RunningService
from tests.support.jobs import cancel_all, job_request, long_job, submit, train, wait_for
from tests.support.processes import ROOT

DOCS_URL = "http://127.0.0.1:8000"
DOCS_PYTHON = ".venv/bin/python -c "
PLACEHOLDER = re.compile(r"\b[A-Z]+_ID\b")
PAGES = ["README.md", *sorted(str(page.relative_to(ROOT)) for page in (ROOT / "docs").glob("*.md"))]

RUN_PREFIXES = ("curl ", DOCS_PYTHON, "grep ", "bnjobs ")
# Shell commands the pages show but this test cannot run, by how they start, each with the reason.
NOT_RUN = {
    "make ": "installs, starts the service or runs the whole suite: what this test session itself does",
    "sudo ": "installs system packages",
    "export ": "sets the environment of the processes after it, which are not run here either",
    ".venv/bin/python -m service": "starts the API (or migrates its database): tests/conftest.py starts the same command",
    "EMBEDDED_WORKERS=0 .venv/bin/python -m service": "starts the API: tests/conftest.py starts the same command",
    ".venv/bin/python -m worker": "starts a worker: tests/conftest.py starts the same command in distributed mode",
    "WORKER_QUEUES=gpu,any .venv/bin/python -m worker": "starts a GPU worker, and no GPU is here",
    "docker compose": "needs Docker; tests/test_deployment_files.py checks what compose runs",
    "bnjobs serve": "starts the API: tests/test_cli.py::test_serve_starts_the_api_with_its_options runs it",
    "bnjobs worker": "starts a worker: tests/test_cli.py::test_a_worker_started_by_bnjobs_trains_the_services_jobs runs it",
}
# Fenced blocks that are neither run nor data, by their language, each with the reason.
NOT_RUN_FENCES = {"console": "a transcript: commands with the output they print"}
RUN_FENCES = ("sh", "python")
SHELL_OR_PYTHON = {"sh", "bash", "shell", "zsh", "console", "python", "py", "python3", "pycon"}


@dataclass(frozen=True)
class CurlExample:
    command: str
    method: str
    path: str  # without the query, placeholders kept: /v1/jobs/JOB_ID

    @property
    def changes_its_target(self) -> bool:
        return self.method == "DELETE" or self.path.endswith("/cancel")


@dataclass(frozen=True)
class CliExample:
    command: str  # bnjobs …

    @property
    def changes_its_target(self) -> bool:
        return bool({"cancel", "rm"} & set(self.command.split()[:3]))


def read(page: str) -> str:
    return (ROOT / page).read_text()


def fenced_blocks(markdown: str) -> list[tuple[str, str]]:
    """Each fenced block as (language, text)."""
    return re.findall(r"^```([\w-]*)\n(.*?)^```", markdown, flags=re.S | re.M)


def sh_commands(markdown: str) -> Iterator[str]:
    """Each command of each ```sh block, with continuation lines and quoted newlines joined."""
    for language, block in fenced_blocks(markdown):
        if language != "sh":
            continue
        pending = ""
        for line in block.splitlines():
            pending += line + "\n"
            try:
                shlex.split(pending, comments=True)
            except ValueError:  # an open quote: the command goes on
                continue
            if not pending.rstrip().endswith("\\"):
                if pending.strip() and not pending.lstrip().startswith("#"):
                    yield pending.strip()
                pending = ""


def runnable_commands(page: str) -> list[str]:
    """A page's commands this test runs, in order: curl, bnjobs, the python one-liners that make data files, grep."""
    return [
        command
        for command in sh_commands(read(page))
        if command.startswith(RUN_PREFIXES) and not command.startswith(tuple(NOT_RUN))
    ]


def write_named_yaml_files(page: str, folder: Path) -> None:
    for language, block in fenced_blocks(read(page)):
        if language == "yaml" and (name := re.fullmatch(r"# ([\w.-]+\.yaml)", block.split("\n", 1)[0])):
            (folder / name.group(1)).write_text(block)


def python_blocks(page: str) -> list[str]:
    return [block for language, block in fenced_blocks(read(page)) if language == "python"]


def curl_examples(page: str) -> list[CurlExample]:
    examples = []
    for command in runnable_commands(page):
        words = shlex.split(command, comments=True)
        if words[0] != "curl":
            continue
        url = next(word for word in words if word.startswith(DOCS_URL))
        method = words[words.index("-X") + 1] if "-X" in words else "POST" if {"-d", "-F", "--data"} & set(words) else "GET"
        examples.append(CurlExample(command, method, url.removeprefix(DOCS_URL).split("?")[0]))
    return examples


def operation_templates(client: httpx.Client) -> set[tuple[str, str]]:
    paths = client.get("/openapi.json").json()["paths"]
    return {(method.upper(), path) for path, operations in paths.items() for method in operations}


def covers(example: CurlExample, method: str, template: str) -> bool:
    pattern = re.sub(r"\{[^}]+\}", "[^/]+", re.escape(template).replace(r"\{", "{").replace(r"\}", "}"))
    return example.method == method and re.fullmatch(pattern, PLACEHOLDER.sub("x", example.path)) is not None


@pytest.mark.parametrize("page", PAGES)
def test_every_shell_and_python_example_is_run_or_excluded_with_a_reason(page: str) -> None:
    for language, _ in fenced_blocks(read(page)):
        if language in SHELL_OR_PYTHON:
            assert language in RUN_FENCES or language in NOT_RUN_FENCES, (
                f"{page}: a ```{language} block: write ```sh or ```python, which are run, or add it to NOT_RUN_FENCES"
            )
    for command in sh_commands(read(page)):
        assert command.startswith(RUN_PREFIXES) or command.startswith(tuple(NOT_RUN)), (
            f"{page}: nothing runs `{command}`: make it runnable, or add it to NOT_RUN with the reason"
        )


def test_the_readme_keeps_its_setup_commands_and_a_train_and_predict_example() -> None:
    """`make run` and `make test` come first, as CI (.ci/run) runs them, and the Makefile has both."""
    quick_start = read("README.md").split("## Quick start", 1)[1]
    setup = next(block for language, block in fenced_blocks(quick_start) if language == "sh")
    assert [line.split("#")[0].strip() for line in setup.splitlines()] == ["make run", "make test"]
    makefile = read("Makefile")
    assert re.search(r"^run:", makefile, flags=re.M) and re.search(r"^test:", makefile, flags=re.M)
    examples = curl_examples("README.md")
    assert any(covers(example, "POST", "/v1/jobs") for example in examples)
    assert any(covers(example, "POST", "/v1/models/{model_id}/predict") for example in examples)
    assert any("Client(" in block for block in python_blocks("README.md")), "the README lost its SDK example"


def test_every_endpoint_has_a_curl_example_in_the_readme_or_the_docs(client: httpx.Client) -> None:
    examples = [example for page in PAGES for example in curl_examples(page)]
    assert len(examples) >= 20, "the README and docs lost their curl examples"
    missing = {
        (method, template)
        for method, template in operation_templates(client)
        if not any(covers(example, method, template) for example in examples)
    }
    assert not missing, f"endpoints without a curl example in README.md or docs/: {sorted(missing)}"


class Ids:
    """Real ids for the pages' placeholders; fresh throwaway ones for commands that change their target."""

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

    def shared_id(self, placeholder: str) -> str:
        """A page that names DATASET_ID without uploading first gets an upload made for it."""
        if placeholder not in self.shared:
            self.shared[placeholder] = self.throwaway(placeholder)
        return self.shared[placeholder]

    def remember(self, example: CurlExample, output: str) -> None:
        if example.method == "POST" and example.path == "/v1/datasets":
            self.shared["DATASET_ID"] = json.loads(output)["id"]

    def fill(self, example: CurlExample | CliExample) -> str:
        def replace(match: re.Match[str]) -> str:
            name = match.group()
            return self.throwaway(name) if example.changes_its_target else self.shared_id(name)

        return PLACEHOLDER.sub(replace, example.command)


@pytest.fixture(scope="module")
def ids(service: RunningService, digits_model: dict) -> Iterator[Ids]:
    with httpx.Client(base_url=service.url, timeout=60) as client:
        yield Ids(client, digits_model)


def run_command(command: str, service: RunningService, cwd: Path) -> str:
    command = command.replace(DOCS_URL, service.url).replace("curl ", "curl --fail-with-body --max-time 120 ", 1)
    command = command.replace(DOCS_PYTHON, f"{sys.executable} -c ", 1)
    if command.startswith("bnjobs "):
        command = f"{sys.executable} -m bnjobs --url {service.url} " + command.removeprefix("bnjobs ")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=150)
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


def assert_downloaded(example: CurlExample, before: set[Path], cwd: Path) -> None:
    """`-o FILE` wrote FILE and `-OJ` wrote a new file, not empty."""
    words = shlex.split(example.command, comments=True)
    if "-o" in words:
        written = cwd / words[words.index("-o") + 1]
        assert written.is_file() and written.stat().st_size > 0, example.command
    if "-OJ" in words:
        new = set(cwd.iterdir()) - before
        assert new and all(path.stat().st_size > 0 for path in new), example.command


PAGES_WITH_SHELL = [page for page in PAGES if runnable_commands(page)]
PAGES_WITH_PYTHON = [page for page in PAGES if python_blocks(page)]


@pytest.mark.parametrize("page", PAGES_WITH_SHELL)
def test_the_shell_examples_work_as_written(
    page: str, service: RunningService, client: httpx.Client, ids: Ids, tmp_path: Path
) -> None:
    write_named_yaml_files(page, tmp_path)
    examples = {example.command: example for example in curl_examples(page)}
    for command in runnable_commands(page):
        if command.startswith("bnjobs "):
            run_command(ids.fill(CliExample(command)), service, tmp_path)
            continue
        if command not in examples:
            run_command(command, service, tmp_path)
            continue
        example = examples[command]
        before = set(tmp_path.iterdir())
        output = run_command(ids.fill(example), service, tmp_path)
        cancel_all(client, started_jobs(output))  # the page's jobs would hold up the workers
        ids.remember(example, output)
        assert_downloaded(example, before, tmp_path)
        if command.startswith("curl -s") and not re.search(r" -(o|OJ) ", command):
            assert example.method == "DELETE" or json.loads(output)  # quiet examples answer JSON; DELETE nothing


@pytest.mark.parametrize("page", PAGES_WITH_PYTHON)
def test_the_python_examples_run_as_written(page: str, service: RunningService, tmp_path: Path) -> None:
    for block in python_blocks(page):
        script = tmp_path / "example.py"
        script.write_text(block.replace(DOCS_URL, service.url))
        result = subprocess.run(
            [sys.executable, str(script)],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, f"{page}:\n{block}\n{result.stdout}\n{result.stderr}"


def test_the_pages_with_examples_are_the_readme_and_the_docs() -> None:
    """A page whose examples vanished from the run (a renamed fence, a lost block) fails here."""
    assert {"README.md", "docs/api.md", "docs/bn-serving.md", "docs/operations.md"} <= {
        page for page in PAGES if curl_examples(page)
    }
    assert len([command for command in runnable_commands("docs/sdk-cli.md") if command.startswith("bnjobs ")]) >= 10
    assert {"README.md", "docs/api.md", "docs/sdk-cli.md"} <= set(PAGES_WITH_PYTHON)


def heading_anchors(page: Path) -> set[str]:
    """GitHub's anchors for a page's headings: lower case, punctuation dropped, spaces as dashes."""
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    return {
        re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        for heading in re.findall(r"^#+ (.*)$", text, flags=re.M)
    }


@pytest.mark.parametrize("page", PAGES)
def test_links_between_the_pages_lead_somewhere(page: str) -> None:
    source = ROOT / page
    for target in re.findall(r"\]\(([^)\s]+)\)", source.read_text()):
        if target.startswith(("http://", "https://")):
            continue
        path, _, anchor = target.partition("#")
        destination = (source.parent / path).resolve() if path else source
        assert destination.exists(), f"{page}: {target} names no file"
        if anchor:
            assert anchor in heading_anchors(destination), f"{page}: {target} names no heading of {path or page}"
