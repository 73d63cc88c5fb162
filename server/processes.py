"""Helper processes on this machine: the faces started by the e2e suite and `mutual bench`, and the
test servers (OpenID provider). Each listens on a free loopback port, logs to a file, is waited for
until it answers, and is stopped by whoever started it."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (at the moment of asking)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def start(command: Sequence[str], log: Path, *, env: Mapping[str, str] | None = None,
          cwd: Path | None = None) -> subprocess.Popen:
    """Start `command` with its output (stdout and stderr) going to `log`."""
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(list(command), env=dict(env) if env is not None else None, cwd=cwd,
                                stdout=out, stderr=subprocess.STDOUT)


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-3000:]
    except OSError:
        return ""


def wait_until_answering(url: str, proc: subprocess.Popen, log: Path, timeout: float = 30) -> None:
    """Wait until GET `url` answers 200; raise with the end of the log when the process exits first or
    does not answer within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            args = proc.args if isinstance(proc.args, list | tuple) else [proc.args]
            raise RuntimeError(f"{' '.join(map(str, args))} exited with {proc.returncode}:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout}s:\n{_tail(log)}")


def stop(procs: Iterable[subprocess.Popen]) -> None:
    """Terminate the processes, then kill any that have not exited within ten seconds."""
    running = list(procs)
    for proc in running:
        proc.terminate()
    for proc in running:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
