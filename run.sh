#!/usr/bin/env bash
# One command on a fresh machine: install, then encode and decode a generated
# sample image in process with the shipped model (no Redis needed).
set -euo pipefail
cd "$(dirname "$0")"
./scripts/setup.sh
exec metalic demo --out metalic-demo "$@"
