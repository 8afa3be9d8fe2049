"""docker-compose.yml and the Dockerfiles: parsed and linted, and their commands are the e2e ones.

Uses ``docker compose config`` and ``hadolint`` too when they are installed.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from e2e_helpers import API_COMMAND, ROOT, WORKER_COMMAND, metalic_executable

COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILES = {"cpu": ROOT / "docker" / "Dockerfile", "cuda": ROOT / "docker" / "Dockerfile.cuda"}
INSTRUCTIONS = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME", "USER",
                "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL", "MAINTAINER"}


def parse_dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined and comments dropped."""
    instructions, current = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue
        current += " " + line.rstrip("\\").strip() if current else line.rstrip("\\").strip()
        if not line.endswith("\\"):
            keyword, _, args = current.partition(" ")
            instructions.append((keyword.upper(), args.strip()))
            current = ""
    assert not current, f"{path.name}: dangling line continuation"
    return instructions


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), f"not exec form: {args}"
    return value


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def duration_seconds(value: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", value):
        total += float(number) * units[unit]
    assert total > 0, f"cannot parse duration {value!r}"
    return total


class TestCompose:
    def test_services(self, compose):
        assert {"redis", "api", "worker", "worker-gpu"} <= set(compose["services"])

    def test_redis_is_append_only_noeviction_with_health_check(self, compose):
        redis = compose["services"]["redis"]
        command = redis["command"]
        assert command[command.index("--appendonly") + 1] == "yes"
        assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
        assert redis["healthcheck"]["test"][:2] == ["CMD", "redis-cli"]
        assert any(str(v).endswith(":/data") for v in redis["volumes"])

    def test_api_and_worker_run_the_commands_the_e2e_test_runs(self, compose):
        assert compose["services"]["api"]["command"] == API_COMMAND
        assert compose["services"]["worker"]["command"] == WORKER_COMMAND
        assert compose["services"]["worker-gpu"]["command"] == WORKER_COMMAND

    def test_every_service_has_a_health_check(self, compose):
        for name, service in compose["services"].items():
            assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"

    def test_app_services_wait_for_healthy_redis_and_share_settings(self, compose):
        for name in ("api", "worker", "worker-gpu"):
            service = compose["services"][name]
            assert service["depends_on"]["redis"]["condition"] == "service_healthy"
            assert service["environment"]["REDIS_URL"] == "redis://redis:6379/0"
            assert "METALIC_API_KEYS" in service["environment"]

    def test_stop_grace_period_exceeds_job_timeout(self, compose):
        for name in ("worker", "worker-gpu"):
            service = compose["services"][name]
            timeout = float(service["environment"]["METALIC_JOB_TIMEOUT"])
            assert duration_seconds(service["stop_grace_period"]) > timeout

    def test_gpu_worker_reserves_devices_in_a_profile(self, compose):
        gpu = compose["services"]["worker-gpu"]
        assert gpu["profiles"] == ["gpu"]
        device = gpu["deploy"]["resources"]["reservations"]["devices"][0]
        assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
        assert gpu["build"]["dockerfile"] == "docker/Dockerfile.cuda"
        assert "profiles" not in compose["services"]["worker"]  # the CPU fallback runs by default

    def test_workers_can_scale(self, compose):
        for name in ("worker", "worker-gpu"):
            assert "container_name" not in compose["services"][name]
            assert "ports" not in compose["services"][name]

    def test_build_files_exist(self, compose):
        for name, service in compose["services"].items():
            if "build" in service:
                assert (ROOT / service["build"]["context"] / service["build"]["dockerfile"]).is_file()

    def test_docker_compose_config_accepts_it(self):
        docker = shutil.which("docker")
        if not docker or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
            pytest.skip("docker compose is not installed; the YAML checks above still ran")
        result = subprocess.run([docker, "compose", "-f", str(COMPOSE), "config", "--quiet"], capture_output=True,
                                text=True, env={"METALIC_API_KEYS": "k", "PATH": "/usr/bin:/bin:/usr/local/bin"})
        assert result.returncode == 0, result.stderr


class TestDockerfiles:
    @pytest.mark.parametrize("kind", DOCKERFILES)
    def test_instructions_are_valid(self, kind):
        instructions = parse_dockerfile(DOCKERFILES[kind])
        assert instructions[0][0] in {"FROM", "ARG"}
        for keyword, args in instructions:
            assert keyword in INSTRUCTIONS, f"unknown instruction {keyword}"
            assert args, f"{keyword} without arguments"
        froms = [args for keyword, args in instructions if keyword == "FROM"]
        assert froms and all(":" in f.split()[0] and not f.split()[0].endswith(":latest") for f in froms)

    @pytest.mark.parametrize("kind", DOCKERFILES)
    def test_runs_as_non_root_with_exec_form_commands(self, kind):
        instructions = parse_dockerfile(DOCKERFILES[kind])
        users = [args for keyword, args in instructions if keyword == "USER"]
        assert users and users[-1].split(":")[0] not in {"root", "0"}
        for keyword, args in instructions:
            if keyword in {"CMD", "ENTRYPOINT"}:
                exec_form(args)
            if keyword == "HEALTHCHECK":
                exec_form(args[args.index("CMD") + 3 :].strip())

    @pytest.mark.parametrize("kind", DOCKERFILES)
    def test_copied_sources_exist(self, kind):
        for keyword, args in parse_dockerfile(DOCKERFILES[kind]):
            if keyword == "COPY" and "--from" not in args:
                for source in shlex.split(args)[:-1]:
                    assert (ROOT / source).exists(), f"COPY {source}: not in the repository"

    def test_default_commands_are_the_e2e_ones(self):
        cmd = {kind: exec_form(next(a for k, a in parse_dockerfile(p) if k == "CMD")) for kind, p in DOCKERFILES.items()}
        assert cmd["cpu"] == API_COMMAND
        assert cmd["cuda"] == WORKER_COMMAND

    def test_cuda_image_is_a_cuda_base(self):
        base = next(a for k, a in parse_dockerfile(DOCKERFILES["cuda"]) if k == "FROM")
        assert base.startswith("nvidia/cuda:")

    @pytest.mark.parametrize("kind", DOCKERFILES)
    def test_hadolint(self, kind):
        hadolint = shutil.which("hadolint")
        if not hadolint:
            pytest.skip("hadolint is not installed; the parser checks above still ran")
        result = subprocess.run([hadolint, "--failure-threshold", "warning", str(DOCKERFILES[kind])],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


def test_the_worker_command_is_wired_in_the_metalic_cli():
    """``metalic worker`` (compose, CUDA image) runs worker.main:main."""
    probe = subprocess.run([metalic_executable(), "worker", "--help"], capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr
    assert "--burst" in probe.stdout
