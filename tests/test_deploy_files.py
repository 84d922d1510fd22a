"""The deployment files agree with the code: CLI subcommands, settings, ports, order.

Docker cannot run here, so these tests check what a `docker compose up` would
trip over: a command the CLI does not know, an environment variable no
setting reads, a published port nobody listens on, a service started before
its schema exists. The README and CI entry point are checked the same way.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from service.config import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
DOCKERFILE = (REPO_ROOT / "Dockerfile").read_text()
SERVICES = COMPOSE["services"]
RAREFIT_SERVICES = sorted(n for n, svc in SERVICES.items() if svc.get("image", "").startswith("rarefit"))
ENV_VAR = re.compile(r"RAREFIT_[A-Z0-9_]+")
MINIO_RELEASE = re.compile(r"RELEASE\.\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ")


def _dockerfile_instruction(name: str) -> str:
    """The argument of the last ``name`` instruction (continuation lines joined)."""
    joined = DOCKERFILE.replace("\\\n", " ")
    matches = re.findall(rf"^{name}\s+(.+)$", joined, flags=re.MULTILINE)
    if not matches:
        raise LookupError(f"Dockerfile has no {name} instruction")
    return matches[-1].strip()


def _exec_form(argument: str) -> list[str]:
    return list(yaml.safe_load(argument)) if argument.startswith("[") else shlex.split(argument)


def _option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


@functools.cache
def _subcommand_help(rarefit: tuple[str, ...], subcommand: str) -> str:
    result = subprocess.run(
        [*rarefit, subcommand, "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("RAREFIT_")},
    )
    assert result.returncode == 0, f"rarefit {subcommand} --help failed:\n{result.stderr}"
    return result.stdout


def _assert_real_command(rarefit_cmd: list[str], argv: list[str]) -> None:
    assert argv[0] == "rarefit", argv
    help_text = _subcommand_help(tuple(rarefit_cmd), argv[1])
    for arg in argv[2:]:
        if arg.startswith("--"):
            assert arg in help_text, f"`rarefit {argv[1]}` has no option {arg}:\n{help_text}"


def test_compose_has_the_production_services() -> None:
    assert {"postgres", "redis", "migrate", "api", "worker", "control"} <= set(SERVICES)
    assert SERVICES["postgres"]["image"].startswith("postgres:16")
    assert SERVICES["redis"]["image"].startswith("redis:7")
    assert RAREFIT_SERVICES == ["api", "control", "migrate", "worker"]
    assert {SERVICES[name]["build"] for name in RAREFIT_SERVICES} == {"."}  # one image


@pytest.mark.parametrize("service", RAREFIT_SERVICES)
def test_compose_command_is_a_real_subcommand(service: str, rarefit_cmd: list[str]) -> None:
    _assert_real_command(rarefit_cmd, list(SERVICES[service]["command"]))


def test_dockerfile_cmd_is_a_real_subcommand(rarefit_cmd: list[str]) -> None:
    _assert_real_command(rarefit_cmd, _exec_form(_dockerfile_instruction("CMD")))


def _compose_env_vars() -> set[str]:
    names: set[str] = set()
    for service in SERVICES.values():
        names |= {n for n in (service.get("environment") or {}) if n.startswith("RAREFIT_")}
    return names | set(ENV_VAR.findall((REPO_ROOT / "docker-compose.yml").read_text()))


def test_every_rarefit_env_var_is_a_setting() -> None:
    referenced = _compose_env_vars() | set(ENV_VAR.findall(DOCKERFILE))
    prefix = Settings.model_config["env_prefix"]
    unknown = {n for n in referenced if n.removeprefix(prefix).lower() not in Settings.model_fields}
    assert referenced, "expected RAREFIT_* variables in the deployment files"
    assert not unknown, f"not fields of service.config.Settings: {sorted(unknown)}"


def test_compose_env_points_at_the_compose_servers() -> None:
    for name in RAREFIT_SERVICES:
        env = SERVICES[name]["environment"]
        assert env["RAREFIT_DATABASE_URL"].startswith("postgresql+psycopg://rarefit:rarefit@postgres:5432/")
        assert env["RAREFIT_BROKER_URL"].startswith("redis://redis:6379/")
        assert env["RAREFIT_DATA_DIR"] == "/data"
        assert "RAREFIT_BOOTSTRAP_API_KEY" in env


def test_published_port_matches_command_and_expose() -> None:
    api = SERVICES["api"]
    (published,) = api["ports"]
    host_port, container_port = str(published).rsplit(":", 1)
    expose = _dockerfile_instruction("EXPOSE").split()
    cmd = _exec_form(_dockerfile_instruction("CMD"))
    assert container_port == _option(list(api["command"]), "--port") == _option(cmd, "--port")
    assert expose == [container_port] and host_port == container_port
    assert f"127.0.0.1:{container_port}/healthz" in _dockerfile_instruction("HEALTHCHECK")


def test_worker_reserves_a_gpu() -> None:
    devices = SERVICES["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]} in devices


def test_schema_is_migrated_before_api_and_worker() -> None:
    assert SERVICES["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "healthcheck" in SERVICES["postgres"]
    for name in ("api", "worker"):
        depends = SERVICES[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert "redis" in depends, name


def test_the_data_volume_exists_for_the_local_store_and_scratch() -> None:
    for name in ("api", "worker"):
        (mount,) = [m for m in SERVICES[name]["volumes"] if m.endswith(":/data")]
        assert mount.split(":")[0] in COMPOSE["volumes"], name


def test_the_optional_minio_profile_serves_the_storage_url() -> None:
    minio, bucket = SERVICES["minio"], SERVICES["minio-bucket"]
    assert minio["profiles"] == bucket["profiles"] == ["s3"]  # off unless asked for
    assert minio["image"].startswith("minio/minio") and bucket["image"].startswith("minio/mc")
    assert "healthcheck" in minio and bucket["depends_on"]["minio"]["condition"] == "service_healthy"
    assert minio["volumes"][0].split(":")[0] in COMPOSE["volumes"]
    # The header's recipe names the bucket the init job creates, at the endpoint the MinIO service answers.
    header = (REPO_ROOT / "docker-compose.yml").read_text()
    url = re.search(r"RAREFIT_STORAGE_URL=(s3://[\w.-]+/\S*)", header).group(1)
    assert f"local/{url.removeprefix('s3://').split('/')[0]}" in " ".join(bucket["entrypoint"])
    assert "RAREFIT_S3_ENDPOINT_URL=http://minio:9000" in header and "server" in minio["command"]
    for name in ("api", "worker"):
        env, depends = SERVICES[name]["environment"], SERVICES[name]["depends_on"]
        assert {"RAREFIT_STORAGE_URL", "RAREFIT_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID"} <= set(env), name
        assert depends["minio-bucket"] == {"condition": "service_completed_successfully", "required": False}, name


def test_third_party_images_are_pinned() -> None:
    """A deploy must not change under an unchanged compose file: no bare or `latest` tag outside our own image."""
    for name, service in SERVICES.items():
        if name in RAREFIT_SERVICES:
            continue
        repository, _, tag = service["image"].rpartition(":")
        assert repository and tag and tag != "latest", f"{name}: image {service['image']!r} is not pinned"
    for name in ("minio", "minio-bucket"):
        assert MINIO_RELEASE.fullmatch(SERVICES[name]["image"].rpartition(":")[2]), SERVICES[name]["image"]


def test_dockerfile_installs_dependencies_on_the_pytorch_image() -> None:
    base = _dockerfile_instruction("FROM")
    assert re.fullmatch(r"pytorch/pytorch:2\.\d+\.\d+-cuda12\.\d+-cudnn9-runtime", base), base
    assert "--no-deps" not in DOCKERFILE
    assert "'.[postgres]'" in DOCKERFILE
    assert _dockerfile_instruction("USER") not in ("root", "0")
    assert "RAREFIT_DATA_DIR=/data" in DOCKERFILE


def test_operations_doc_lists_every_setting() -> None:
    doc = (REPO_ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    prefix = Settings.model_config["env_prefix"]
    missing = [name for name in Settings.model_fields if f"`{prefix}{name.upper()}`" not in doc]
    assert not missing, f"docs/operations.md does not document {missing}"


def _readme_commands() -> list[str]:
    """The shell lines of the README's first two code blocks (the quick start)."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```(?:sh|bash|shell)\n(.*?)```", readme, re.S)
    return [block.strip() for block in blocks[:2]]


def test_readme_quick_start_is_two_one_line_commands() -> None:
    serve, test = _readme_commands()
    assert "\n" not in serve and "\n" not in test
    assert serve.startswith("python3 -m venv .venv && ") and " serve " in serve
    assert test.startswith("python3 -m venv .venv && ") and "pytest" in test


def test_ci_runs_exactly_the_readme_test_command() -> None:
    ci = REPO_ROOT / ".ci" / "run"
    assert os.access(ci, os.X_OK)
    text = ci.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
    assert _readme_commands()[1] in text
