"""The Dockerfile and docker-compose.yml run the processes the tests run, with the settings the code reads."""

import ast
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from bncore.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
CPU_TORCH = "https://download.pytorch.org/whl/cpu"
CUDA_TORCH = "https://download.pytorch.org/whl/cu124"
APP_SERVICES = ("migrate", "api", "worker", "worker-gpu")
LONG_RUNNING = ("api", "worker", "worker-gpu", "redis", "postgres", "flower")
# Every variable the deployment contract names, each a field of Settings.
CONTRACT_SETTINGS = {
    "HOST",
    "PORT",
    "DATA_DIR",
    "DATABASE_URL",
    "REDIS_URL",
    "BROKER_URL",
    "ARTIFACTS_DIR",
    "EMBEDDED_WORKERS",
    "WORKER_QUEUES",
    "API_KEYS_FILE",
    "ALLOW_OPEN_ACCESS",
    "MAX_PREDICT_ROWS",
    "MAX_PARAMETERS",
    "MODEL_CACHE_SIZE",
}
# Read by Python itself, not by Settings.
INTERPRETER_VARIABLES = {"PATH", "PYTHONUNBUFFERED"}


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def service(name: str) -> dict[str, Any]:
    return compose()["services"][name]


def environment(name: str) -> dict[str, str]:
    """A service's environment with `${NAME:-default}` read as its default, as compose does with NAME unset."""
    return {key: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value)) for key, value in service(name)["environment"].items()}


def default_services() -> list[str]:
    return [name for name, spec in compose()["services"].items() if not spec.get("profiles")]


@cache
def stages() -> list[list[Instruction]]:
    """The Dockerfile's instructions, continuation lines joined: what comes before the first FROM, then each stage."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    result: list[list[Instruction]] = [[]]
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        if keyword.upper() == "FROM":
            result.append([])
        result[-1].append(Instruction(keyword.upper(), " ".join(args.split())))
    return result


def args_of(keyword: str, stage: list[Instruction]) -> list[str]:
    return [instruction.args for instruction in stage if instruction.keyword == keyword]


def assignments(keyword: str, stage: list[Instruction]) -> dict[str, str]:
    """`ENV A=1 B=2` and `ARG A=1` lines as one mapping."""
    pairs = (word.partition("=") for args in args_of(keyword, stage) for word in shlex.split(args))
    return {name: value for name, _, value in pairs}


def runtime() -> list[Instruction]:
    return stages()[-1]


def builder() -> list[Instruction]:
    return stages()[1]


def dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def ignored(path: str) -> bool:
    """Docker's matching: `*` stays within a folder, `**/` spans folders, a matched folder takes its content."""
    for pattern in dockerignore():
        regex = re.escape(pattern).replace(r"\[", "[").replace(r"\]", "]")
        regex = regex.replace(r"\*\*/", "(?:.*/)?").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        if re.fullmatch(f"{regex}(?:/.*)?", path):
            return True
    return False


def settings_names() -> set[str]:
    prefix = Settings.model_config.get("env_prefix", "")
    return {f"{prefix}{field}".upper() for field in Settings.model_fields}


def defines(module_file: str, name: str) -> bool:
    tree = ast.parse((ROOT / module_file).read_text())
    return any(
        isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets) for node in tree.body
    )


def test_compose_runs_the_processes_the_tests_run() -> None:
    assert service("migrate")["command"] == ["python", "-m", "service", "migrate"]
    assert service("api")["command"] == ["python", "-m", "service"]
    assert service("worker")["command"] == ["python", "-m", "worker"]
    assert service("worker-gpu")["command"] == ["python", "-m", "worker"]
    assert json.loads(args_of("CMD", runtime())[-1]) == ["python", "-m", "service"]
    assert (ROOT / "service" / "__main__.py").is_file()
    assert (ROOT / "worker" / "__main__.py").is_file()


def test_migrate_command_applies_migrations_and_exits(tmp_path: Path) -> None:
    """The compose `migrate` service must exit 0, or nothing that depends on it ever starts."""
    # An unbindable HOST: a `python -m service` that ignores `migrate` and serves fails fast instead of hanging.
    env = {**os.environ, "DATA_DIR": str(tmp_path), "EMBEDDED_WORKERS": "0", "HOST": "256.0.0.0"}
    done = subprocess.run([sys.executable, "-m", "service", "migrate"], cwd=ROOT, env=env, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()[-2000:]


def test_migrations_finish_before_the_api_and_workers_start() -> None:
    assert service("migrate").get("restart") == "no"
    for name in ("api", "worker", "worker-gpu"):
        assert service(name)["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}, name


def test_only_the_api_port_is_published_by_default() -> None:
    published = {name: service(name)["ports"] for name in default_services() if service(name).get("ports")}
    assert published == {"api": ["127.0.0.1:8000:8000"]}
    assert service("flower")["profiles"] == ["monitoring"]
    assert service("flower")["ports"] == ["127.0.0.1:5555:5555"]
    assert "ports" not in service("worker-gpu")


def test_workers_scale_with_compose() -> None:
    """`--scale worker=N` needs no fixed name and no host port; each replica is its own Celery node."""
    for name in ("worker", "worker-gpu"):
        assert not {"container_name", "hostname", "ports"} & service(name).keys(), name
    assert environment("worker")["WORKER_QUEUES"] == "cpu,any"


def test_every_long_running_service_has_a_healthcheck_and_waits_for_healthy_dependencies() -> None:
    for name in LONG_RUNNING:
        healthcheck = service(name).get("healthcheck", {})
        assert healthcheck.get("test", ["NONE"])[0] in {"CMD", "CMD-SHELL"} and not healthcheck.get("disable"), name
        for dependency, condition in service(name).get("depends_on", {}).items():
            expected = "service_completed_successfully" if dependency == "migrate" else "service_healthy"
            assert condition == {"condition": expected}, (name, dependency)
            if dependency != "migrate":
                assert "healthcheck" in service(dependency), dependency

    assert "/readyz" in " ".join(service("api")["healthcheck"]["test"])
    assert service("worker")["healthcheck"]["test"] == ["CMD", "python", "-m", "worker", "healthcheck"]
    assert defines("worker/app.py", "celery_app")
    assert service("worker-gpu")["healthcheck"] == service("worker")["healthcheck"]
    assert service("redis")["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert "pg_isready -h 127.0.0.1" in " ".join(service("postgres")["healthcheck"]["test"])


def test_api_and_workers_share_the_artifact_volume_and_database() -> None:
    for name in APP_SERVICES:
        env = environment(name)
        assert "artifacts:/data" in service(name)["volumes"], name
        assert env["DATA_DIR"] == "/data", name
        assert env["DATABASE_URL"] == "postgresql+psycopg://bn:bn@postgres:5432/bn", name
        assert env["REDIS_URL"] == "redis://redis:6379/0", name
    assert "artifacts" in compose()["volumes"]
    assert environment("api")["EMBEDDED_WORKERS"] == "0"
    assert environment("postgres") == {"POSTGRES_USER": "bn", "POSTGRES_PASSWORD": "bn", "POSTGRES_DB": "bn"}
    assert environment("flower")["CELERY_BROKER_URL"] == environment("api")["REDIS_URL"]


def test_environment_names_are_settings_the_code_reads() -> None:
    used = {name for app in APP_SERVICES for name in environment(app)}
    used |= assignments("ENV", runtime()).keys() - INTERPRETER_VARIABLES
    assert used <= CONTRACT_SETTINGS
    assert used <= settings_names()


def test_every_variable_the_deployment_names_is_a_setting() -> None:
    assert CONTRACT_SETTINGS - settings_names() == set()


def settings_table() -> set[str]:
    """The variables named in the first column of docs/operations.md's settings table."""
    section = (ROOT / "docs" / "operations.md").read_text().split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    first_cells = (line.split("|")[1] for line in section.splitlines() if line.startswith("|"))
    return {name for cell in first_cells for name in re.findall(r"`(\w+)`", cell)}


def test_every_setting_is_documented_in_the_operations_settings_table() -> None:
    documented = settings_table()
    assert sorted(settings_names() - documented) == []
    assert sorted(documented - settings_names()) == [], "the table names variables the code does not read"


def test_redis_keeps_its_data_and_never_evicts_broker_keys() -> None:
    redis = service("redis")
    command = " ".join(redis["command"])
    assert redis["image"] == "redis:7"
    assert "--appendonly yes" in command
    assert "--maxmemory-policy noeviction" in command
    assert "redis-data:/data" in redis["volumes"]
    assert "redis-data" in compose()["volumes"]


def test_postgres_keeps_its_data_in_a_named_volume() -> None:
    postgres = service("postgres")
    assert postgres["image"] == "postgres:16"
    assert "postgres-data:/var/lib/postgresql/data" in postgres["volumes"]
    assert "postgres-data" in compose()["volumes"]


def test_gpu_worker_reserves_nvidia_devices_under_a_profile() -> None:
    gpu = service("worker-gpu")
    assert gpu["profiles"] == ["gpu"]
    assert gpu["deploy"]["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}
    ]
    assert gpu["build"]["args"] == {"TORCH_INDEX_URL": CUDA_TORCH}
    assert gpu["image"] != service("worker")["image"], "the CUDA build would overwrite the CPU image"
    assert environment("worker-gpu")["WORKER_QUEUES"] == "gpu,any"


def test_image_runs_as_non_root_with_a_healthcheck() -> None:
    stage = runtime()
    assert args_of("FROM", stage) == ["python:3.11-slim"]
    user = args_of("USER", stage)[-1]
    assert user.split(":")[0] == "10001"
    assert any("useradd --uid 10001" in run for run in args_of("RUN", stage))
    assert any("chown bn:bn /data" in run for run in args_of("RUN", stage))
    assert args_of("WORKDIR", stage) == ["/app"]
    assert args_of("VOLUME", stage) == ["/data"]
    assert args_of("EXPOSE", stage) == ["8000"]
    assert "--from=builder /opt/venv /opt/venv" in args_of("COPY", stage)
    env = assignments("ENV", stage)
    assert {name: env.get(name) for name in ("DATA_DIR", "HOST", "PORT", "PYTHONUNBUFFERED")} == {
        "DATA_DIR": "/data",
        "HOST": "0.0.0.0",
        "PORT": "8000",
        "PYTHONUNBUFFERED": "1",
    }
    assert env["PATH"].startswith("/opt/venv/bin:")
    healthcheck = args_of("HEALTHCHECK", stage)[-1]
    assert "urllib.request.urlopen('http://127.0.0.1:${PORT:-8000}/healthz'" in healthcheck
    assert "curl" not in healthcheck


def test_image_picks_cpu_or_cuda_torch_by_build_arg() -> None:
    stage = builder()
    assert args_of("FROM", stage) == ["python:3.11-slim AS builder"]
    assert assignments("ARG", stage) == {"TORCH_INDEX_URL": CPU_TORCH}
    runs = args_of("RUN", stage)
    torch = next(i for i, run in enumerate(runs) if 'pip install --index-url "$TORCH_INDEX_URL" torch' in run)
    project = next(i for i, run in enumerate(runs) if 'pip install ".[postgres]"' in run)
    assert torch < project, "the project's torch>=2.4 would come from PyPI instead"
    assert service("worker")["build"] == "."


def test_image_has_no_secrets() -> None:
    for stage in stages():
        for name in assignments("ENV", stage) | assignments("ARG", stage):
            assert not re.search("PASSWORD|SECRET|KEY|TOKEN", name), name
    assert ignored(str(Settings.model_config["env_file"]))
    assert ignored(".env.production")


def test_build_context_leaves_out_local_state_but_keeps_what_pip_install_needs() -> None:
    for path in (
        ".venv/bin/python",
        "data/bnjobs.sqlite3",
        ".git",
        "bncore/__pycache__/settings.cpython-311.pyc",
        "bnjobs.egg-info/PKG-INFO",
        ".pytest_cache/README.md",
        "tests/conftest.py",
    ):
        assert ignored(path), path
    for path in ("pyproject.toml", "README.md", "bncore/settings.py", "service/__main__.py", "worker/__main__.py"):
        assert not ignored(path), path


def test_the_first_make_run_says_what_it_installs_before_the_long_wait(tmp_path: Path) -> None:
    planned = subprocess.run(
        ["make", "-n", "run", f"VENV={tmp_path / 'venv'}"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert planned.returncode == 0, planned.stderr
    lines = planned.stdout.splitlines()
    install = next(index for index, line in enumerate(lines) if "pip install" in line)
    assert any("installing the service and its dependencies" in line for line in lines[:install])
    assert any("starting the API" in line for line in lines[install:])
