"""Browser fixtures: ``metalic serve`` (embedded Redis, one worker, the real codec) and Chromium.

Chromium is the system's (Debian ``chromium``), driven by Playwright; no browser
is ever downloaded. Outside CI the tests skip when it is missing; in CI
(``CI`` set) a missing browser is a failure, so they cannot silently not run.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from metalic.ready import wait_ready
from service.redis_server import EmbeddedRedis, free_port

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "ui-test-key"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
LOCAL_HOSTS = {"127.0.0.1", "localhost"}


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/ui/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.browser)


def _unavailable(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so the browser tests must run: .ci/run installs chromium)")
    pytest.skip(reason)


def chromium_path() -> str | None:
    explicit = os.environ.get("METALIC_CHROMIUM")
    if explicit:
        return explicit
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def serve_argv(port: int, data_dir: Path) -> list[str]:
    """``metalic serve`` from this interpreter's environment, else its twin ``python -m service``."""
    args = ["--port", str(port), "--data-dir", str(data_dir)]
    script = Path(sys.executable).with_name("metalic")
    if script.exists():
        return [str(script), "serve", *args]
    return [sys.executable, "-m", "service", *args]


class Server:
    """One ``metalic serve`` process group and its log."""

    def __init__(self, tmp: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / "serve.log"
        env = dict(os.environ)
        for name in ("REDIS_URL", "METALIC_REDIS_URL"):
            env.pop(name, None)  # without them, serve starts its own redis-server and worker
        env.update({
            "METALIC_API_KEYS": API_KEY,
            "METALIC_PROGRESS_INTERVAL": "0.1",
            "METALIC_DEVICE": "cpu",
            "OMP_NUM_THREADS": "1",
            "PYTHONWARNINGS": "ignore",
        })
        (tmp / "redis").mkdir()
        self.proc = subprocess.Popen(serve_argv(self.port, tmp / "redis"), cwd=ROOT, env=env,
                                     stdout=self.log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 240.0) -> None:
        def alive():
            if self.proc.poll() is not None:
                raise RuntimeError(f"metalic serve exited with {self.proc.returncode}:\n{self.tail()}")

        wait_ready(self.url, timeout, alive=alive, logs=self.tail, interval=0.5)

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # serve stops its worker and redis-server itself
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not EmbeddedRedis.available():
        pytest.skip("needs the redis-server binary")
    server = Server(tmp_path_factory.mktemp("serve"))
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[test]')")
    executable = chromium_path()
    if executable is None:
        _unavailable("no chromium on PATH (apt-get install chromium, or set METALIC_CHROMIUM)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield browser
        browser.close()


class PageLog:
    """What the page said and tried: console errors, uncaught exceptions, requests off this machine."""

    def __init__(self):
        self.errors: list[str] = []
        self.external: list[str] = []
        self.expected_statuses: set[int] = set()

    def expect_http_error(self, status: int) -> None:
        """The test provokes an API error with this status; Chromium logs each failed fetch."""
        self.expected_statuses.add(status)

    def unexpected(self) -> list[str]:
        allowed = tuple(f"the server responded with a status of {s}" for s in self.expected_statuses)
        return [e for e in self.errors if not (allowed and "Failed to load resource" in e and any(a in e for a in allowed))]


@pytest.fixture
def page_log():
    return PageLog()


@pytest.fixture
def page(browser, server, page_log):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=server.url,
                                  accept_downloads=True)

    def gate(route):
        # Only this machine: a page that needs the internet is blank on a machine without it.
        if urlsplit(route.request.url).hostname in LOCAL_HOSTS or route.request.url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            page_log.external.append(route.request.url)
            route.abort()

    context.route("**/*", gate)
    page = context.new_page()
    page.on("console", lambda msg: msg.type == "error" and page_log.errors.append(f"{msg.text} @ {msg.location}"))
    page.on("pageerror", lambda exc: page_log.errors.append(f"uncaught: {exc}"))
    page.set_default_timeout(30_000)
    yield page
    context.close()
    assert not page_log.external, f"the page tried to reach other hosts: {page_log.external}"
    assert not page_log.unexpected(), f"console errors: {page_log.unexpected()}"
