"""The dependency floors pyproject.toml states are the ones the code was tested on (constraints-floor.txt)."""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def pins(path: Path) -> dict[str, Version]:
    out = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)$", line.strip())
        if match:
            out[match[1].lower()] = Version(match[2])
    return out


def requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {Requirement(r).name.lower(): Requirement(r) for r in project["dependencies"]}


FLOOR = pins(ROOT / "constraints-floor.txt")


@pytest.mark.parametrize("name", sorted(FLOOR))
def test_pyproject_states_the_tested_floor(name):
    requirement = requirements()[name]
    lower = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
    assert lower == [FLOOR[name]], f"pyproject says {requirement}, constraints-floor.txt tests {FLOOR[name]}"


@pytest.mark.parametrize("name", sorted(FLOOR))
def test_the_pinned_and_installed_versions_are_allowed(name):
    requirement = requirements()[name]
    assert pins(ROOT / "constraints.txt")[name] in requirement.specifier
    assert Version(importlib.metadata.version(name)) in requirement.specifier


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("METALIC_SLOW"), reason="set METALIC_SLOW=1: a fresh venv and a package index")
def test_the_worker_and_service_tests_pass_on_the_floor():
    result = subprocess.run([str(ROOT / "scripts" / "test-floor.sh")], capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert all(f"floor: {name}==" in result.stdout for name in FLOOR)
