"""A watcher process outside the worker's GIL: it kills a worker frozen in native code once its lease lapsed.

The watchdog thread (:mod:`worker.watchdog`) acts only while it gets the GIL.
A native call that *holds* the GIL (C code that never releases it, a deadlock
on a lock taken with the GIL held) freezes every thread of the worker: no
renewal, no stall check, no signal handler runs, SIGTERM does nothing. The
job's lease lapses and a reaper gives the job to another worker, but the frozen
process would keep its slot (and its GPU memory) for good. ``metalic worker``
therefore starts this small process, which shares nothing with it but a pipe::

    watchdog thread, each tick ── "busy <s left on the lease> <job>" ──> pipe ──> watcher
    the job's end              ── "idle" ───────────────────────────────────┘      │
    no tick for stale_after s, the lease lapsed, the worker not stopped ──> SIGKILL the worker
    end of the pipe (the worker is gone) ──> exit

It kills only once the lease has lapsed: from then on the job is the reaper's
and the frozen process could never commit (the compare-and-set refuses it), so
killing loses nothing. A stopped process (SIGSTOP, a debugger) is left alone:
whoever stopped it holds it on purpose, and once continued its watchdog finds
the lease gone and exits by itself (71). The worker's restart comes from
``metalic serve``'s supervisor or compose's restart policy, as for any exit.

.. note:: Imports only the standard library: it starts in tens of
   milliseconds and holds no model, no torch, no Redis connection.
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

log = logging.getLogger("metalic.worker")


def stale_after(interval: float, renew_timeout: float) -> float:
    """Seconds between two ticks of a watchdog thread that still runs, at most, plus a second of slack.

    One tick of :class:`~worker.watchdog.Watchdog` waits ``interval`` and then
    makes at most two Redis calls (renewal, RQ's heartbeats), each of which may
    spend a connect and a read timeout.
    """
    return interval + 4 * renew_timeout + 1.0


class LivenessReporter:
    """The worker's end of the pipe: the watchdog thread reports each tick; the worker reports idle.

    Writes never block (a full pipe drops the tick: the next one carries newer news),
    and a watcher that is gone is logged once and then ignored.
    """

    def __init__(self, fd: int, process: subprocess.Popen | None = None):
        self.fd = fd
        self.process = process
        self._broken = False

    def busy(self, job_id: str, lease_left: float) -> None:
        self._send(f"busy {max(lease_left, 0.0):.3f} {job_id}\n")

    def idle(self) -> None:
        self._send("idle\n")

    def _send(self, line: str) -> None:
        if self._broken:
            return
        try:
            os.write(self.fd, line.encode())
        except BlockingIOError:
            pass
        except OSError as exc:
            self._broken = True
            log.error("the liveness watcher is gone (%s); a hang that holds the GIL is no longer caught", exc)
            if self.process is not None:
                self.process.poll()

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass
        if self.process is not None:
            try:
                self.process.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_watcher(stale: float) -> LivenessReporter:
    """Start the watcher of this process (``python -m worker.liveness``) and return the pipe to it."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    try:
        process = subprocess.Popen([sys.executable, "-m", "worker.liveness", "--pid", str(os.getpid()),
                                    "--fd", str(read_end), "--stale-after", f"{stale:.3f}"],
                                   pass_fds=(read_end,), stdin=subprocess.DEVNULL)
    finally:
        os.close(read_end)
    log.info("liveness watcher started (pid %d; kills this worker after %.0fs frozen past its lease)",
             process.pid, stale)
    return LivenessReporter(write_end, process)


def is_stopped(pid: int) -> bool:
    """True if ``pid`` is stopped by a signal or a debugger (Linux ``/proc``; False where unknown)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return bool(fields) and fields[0] in (b"T", b"t")


class Watcher:
    """The decision, apart from the pipe and the clock: feed it lines and the time, ask whether to kill.

    Args:
        stale_after: float. Seconds without a tick after which a busy worker counts as frozen.
        clock: callable() -> float. Monotonic seconds (this process's clock for every time it keeps).
    """

    def __init__(self, stale_after: float, clock: Callable[[], float] = time.monotonic):
        self.stale_after = stale_after
        self.clock = clock
        self.lease_lapses: float | None = None
        self.job = ""
        self.last_sign = clock()

    def feed(self, line: bytes) -> None:
        fields = line.decode(errors="replace").split()
        now = self.clock()
        self.last_sign = now
        if fields[:1] == ["busy"] and len(fields) >= 2:
            try:
                self.lease_lapses = now + float(fields[1])
            except ValueError:
                return
            self.job = fields[2] if len(fields) > 2 else ""
        elif fields[:1] == ["idle"]:
            self.lease_lapses, self.job = None, ""

    def stopped(self) -> None:
        """The worker is stopped now: its silence is not its own doing."""
        self.last_sign = self.clock()

    def frozen_for(self) -> float | None:
        """Seconds the busy worker has been silent, if it is to be killed now; else None."""
        now = self.clock()
        silent = now - self.last_sign
        if self.lease_lapses is not None and now >= self.lease_lapses and silent >= self.stale_after:
            return silent
        return None


def watch(pid: int, fd: int, stale: float, poll: float = 0.25) -> int:
    """Watch worker ``pid`` through the pipe ``fd`` until the pipe ends or the worker is killed."""
    watcher = Watcher(stale)
    pending = b""
    while True:
        ready, _, _ = select.select([fd], [], [], poll)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                return 0  # the worker closed the pipe or ended
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                if line.strip():
                    watcher.feed(line)
        if is_stopped(pid):
            watcher.stopped()
            continue
        silent = watcher.frozen_for()
        if silent is not None:
            print(f"metalic worker liveness: worker pid {pid} ran no Python for {silent:.1f}s (frozen in native "
                  f"code holding the GIL) and its lease on job {watcher.job or '?'} has lapsed; killing it "
                  f"(SIGKILL); its job goes to another worker", file=sys.stderr, flush=True)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.liveness", description=__doc__.splitlines()[0])
    parser.add_argument("--pid", type=int, required=True, help="the worker to watch")
    parser.add_argument("--fd", type=int, required=True, help="read end of the worker's pipe")
    parser.add_argument("--stale-after", type=float, required=True, help="seconds without a tick that count as frozen")
    args = parser.parse_args(argv)
    # A Ctrl-C or SIGTERM meant for the worker must not end its watcher while it drains; the pipe's end does.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return watch(args.pid, args.fd, args.stale_after)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
