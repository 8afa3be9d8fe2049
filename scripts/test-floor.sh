#!/usr/bin/env bash
# Runs the worker and service tests against the oldest versions pyproject.toml
# allows (constraints-floor.txt) in a fresh venv, the rest of the set pinned by
# constraints.txt. Run it after raising or lowering a floor; CI runs it too.
# FLOOR_SYSTEM_SITE=1 reuses this Python's installed packages (no torch download);
# only the floored packages are then installed into the venv.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(mktemp -d)/venv
python3 -m venv ${FLOOR_SYSTEM_SITE:+--system-site-packages} "$venv"
pins=$(mktemp)
floored=$(sed -n 's/^\([A-Za-z0-9_.-]*\)==.*/\1/p' constraints-floor.txt | paste -sd'|')
grep -v -i -E "^(${floored})==" constraints.txt > "$pins"
"$venv/bin/pip" install -q -c "$pins" -c constraints-floor.txt -e ".[test]" -e ./client
"$venv/bin/pip" install -q -c "$pins" -r constraints-floor.txt  # a venv on system packages must shadow them
"$venv/bin/python" - <<'PY'
import importlib.metadata as md, re
for line in open("constraints-floor.txt"):
    if re.match(r"^[A-Za-z0-9_.-]+==", line):
        name, version = line.strip().split("==")
        assert md.version(name) == version, f"{name} {md.version(name)} installed, floor is {version}"
        print(f"floor: {name}=={version}")
PY
PATH="$venv/bin:$PATH" "$venv/bin/python" -m pytest -q tests/worker tests/service tests/metalic/test_supervisor.py \
  --deselect tests/service/test_api_real_codec.py
