#!/usr/bin/env bash
# Installs metalic (server distribution + client SDK) into the current Python.
# torch/torchvision are pinned to the builds that this project is tested with.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch, torchvision" 2>/dev/null; then
  "$PY" -m pip install -q torch==2.14.1 torchvision==0.29.1
fi
"$PY" -m pip install -q -e ".[test]" -e ./client
if ! command -v redis-server >/dev/null 2>&1; then
  echo "note: redis-server not found; 'metalic serve' and the service tests need it" >&2
  echo "      (Debian/Ubuntu: apt-get install -y redis-server)" >&2
fi
