"""``dicomguard serve`` as a real subprocess, for tests of the whole service (signals, start/stop, reloads)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from dicomguard.dimse.server import free_port


@contextmanager
def cli_process(*args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Start ``dicomguard ARGS...`` for ``$DICOMGUARD_HOME`` and wait for its READY line (yielded with the process);
    killed at exit if still running."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-m", "dicomguard", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        assert proc.stdout is not None
        line = ""
        for line in proc.stdout:
            if line.startswith("READY"):
                break
        assert line.startswith("READY"), proc.stderr.read() if proc.stderr else f"{args[0]} exited before READY"
        yield proc, line.strip()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@contextmanager
def serve_process(dimse_port: int | None = None, https_port: int | None = None) -> Iterator[subprocess.Popen[str]]:
    """Start ``dicomguard serve`` for ``$DICOMGUARD_HOME`` and wait for its READY line; killed at exit if still running."""
    with cli_process("serve", "--dimse-port", str(dimse_port or free_port()), "--https-port", str(https_port or free_port())) as (proc, _):
        yield proc


def stop_gracefully(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[str, str]:
    """SIGTERM, then the rest of stdout and stderr; the exit status must be 0."""
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return out, err
