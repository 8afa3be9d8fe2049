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

from service.redis_server import APPENDFSYNC

COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILES = {"cpu": ROOT / "docker" / "Dockerfile", "cuda": ROOT / "docker" / "Dockerfile.cuda"}
WORKER_SERVICES = ("worker", "worker-gpu", "worker-gpu-1")
APP_SERVICES = ("api", *WORKER_SERVICES)
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
        assert {"redis", *APP_SERVICES} <= set(compose["services"])

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
        assert compose["services"]["worker-gpu-1"]["command"] == WORKER_COMMAND

    def test_every_service_has_a_health_check(self, compose):
        for name, service in compose["services"].items():
            assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"

    def test_app_services_wait_for_healthy_redis_and_share_settings(self, compose):
        for name in APP_SERVICES:
            service = compose["services"][name]
            assert service["depends_on"]["redis"]["condition"] == "service_healthy"
            assert re.fullmatch(r"redis://:\$\{REDIS_PASSWORD:\?[^}]+\}@redis:6379/0", service["environment"]["REDIS_URL"])
            assert "METALIC_API_KEYS" in service["environment"]

    def test_redis_wants_the_password_the_apps_send(self, compose):
        redis = compose["services"]["redis"]
        command = redis["command"]
        assert command[command.index("--requirepass") + 1].startswith("${REDIS_PASSWORD:?")
        assert redis["environment"]["REDISCLI_AUTH"].startswith("${REDIS_PASSWORD:?")  # for the health check
        assert "ports" not in redis  # reachable from the compose network only

    def test_redis_fsyncs_like_the_tests_and_has_a_memory_limit(self, compose):
        command = compose["services"]["redis"]["command"]
        assert command[command.index("--appendfsync") + 1] == APPENDFSYNC == "always"
        assert command[command.index("--maxmemory") + 1]
        assert command[command.index("--maxmemory-policy") + 1] == "noeviction"

    def test_every_service_runs_under_an_init(self, compose):
        for name, service in compose["services"].items():
            assert service.get("init") is True, f"{name} runs as PID 1 without an init"

    def test_each_gpu_worker_reserves_exactly_one_gpu_of_its_own(self, compose):
        gpus = []
        for name, service in compose["services"].items():
            devices = service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
            if not devices:
                continue
            assert service["deploy"]["replicas"] == 1, f"{name}: replicas would share one GPU"
            (device,) = devices
            assert "count" not in device and len(device["device_ids"]) == 1, name
            gpus += device["device_ids"]
        assert len(gpus) >= 2 and len(set(gpus)) == len(gpus)

    def test_images_are_pinned_to_exact_versions(self, compose):
        images = [s["image"] for s in compose["services"].values() if "build" not in s]
        images += [a.split()[0] for path in DOCKERFILES.values() for k, a in parse_dockerfile(path) if k == "FROM"]
        for image in images:
            assert re.search(r":\d+\.\d+\.\d+", image), f"{image} is not pinned to a full version"

    def test_stop_grace_period_exceeds_job_timeout(self, compose):
        for name in WORKER_SERVICES:
            service = compose["services"][name]
            timeout = float(service["environment"]["METALIC_JOB_TIMEOUT"])
            assert duration_seconds(service["stop_grace_period"]) > timeout

    def test_gpu_worker_reserves_devices_in_a_profile(self, compose):
        gpu = compose["services"]["worker-gpu"]
        assert gpu["profiles"] == ["gpu"]
        assert compose["services"]["worker-gpu-1"]["profiles"] == ["gpu-1"]
        device = gpu["deploy"]["resources"]["reservations"]["devices"][0]
        assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
        assert gpu["build"]["dockerfile"] == "docker/Dockerfile.cuda"
        assert "profiles" not in compose["services"]["worker"]  # the CPU fallback runs by default

    def test_workers_can_scale(self, compose):
        for name in ("worker",):
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
                                text=True, env={"METALIC_API_KEYS": "k", "REDIS_PASSWORD": "p",
                                                "PATH": "/usr/bin:/bin:/usr/local/bin"})
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

    @pytest.mark.parametrize("kind", DOCKERFILES)
    def test_every_install_is_pinned_by_constraints(self, kind):
        installs = [a for k, a in parse_dockerfile(DOCKERFILES[kind]) if k == "RUN" and "pip install" in a]
        assert installs and all("-c constraints.txt" in a for a in installs)

    def test_the_cpu_image_installs_the_cpu_build_of_torch_first(self):
        instructions = parse_dockerfile(DOCKERFILES["cpu"])
        args = dict(a.split("=", 1) for k, a in instructions if k == "ARG" and "=" in a)
        runs = [a for k, a in instructions if k == "RUN" and "pip install" in a]
        torch_run = next(a for a in runs if " torch" in a)
        assert runs.index(torch_run) < next(i for i, a in enumerate(runs) if a.rstrip().endswith(". && rm -rf /root/.cache"))
        assert "--index-url" in torch_run and args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
        assert "torchvision" in torch_run
        pins = (ROOT / "constraints.txt").read_text()
        assert re.search(r"^torch==\d", pins, re.M) and re.search(r"^torchvision==\d", pins, re.M)

    def test_the_build_context_leaves_out_history_environments_and_runs(self):
        ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                   if line.strip() and not line.startswith("#")]
        assert {".git", ".venv", "runs", "tests"} <= set(ignored)
        for path in DOCKERFILES.values():
            for keyword, args in parse_dockerfile(path):
                if keyword == "COPY" and "--from" not in args:
                    for source in shlex.split(args)[:-1]:
                        assert source not in ignored, f"COPY {source} is excluded by .dockerignore"

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
