"""CPU use during a measurement, from /proc (Linux): the whole machine, the server processes (with
their worker children) and this client process, in cores busy (1.0 = one core for the whole time)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class Usage:
    machine: float
    """Cores busy on the whole machine (client, servers, database and anything else)."""
    servers: float
    """Cores busy in the server processes and their children."""
    client: float
    """Cores busy in this (load client) process."""

    def text(self) -> str:
        return f"{self.machine:.2f} / {self.servers:.2f} / {self.client:.2f}"


def _machine() -> tuple[float, float]:
    """(busy, total) seconds of all cores so far, from the first line of /proc/stat."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0, 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already inside user
    return (total - idle) / TICKS, total / TICKS


def _proc_stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, user + system seconds) of one process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    after = text.rpartition(")")[2].split()  # the name may hold spaces and parentheses
    return int(after[1]), (int(after[11]) + int(after[12])) / TICKS


def _tree_seconds(roots: Iterable[int]) -> float:
    """CPU seconds so far of `roots` and all their descendants that are alive now."""
    stats = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            found = _proc_stat(int(entry.name))
            if found is not None:
                stats[int(entry.name)] = found
    wanted, frontier = set(), set(roots)
    while frontier:
        wanted |= frontier
        frontier = {pid for pid, (ppid, _) in stats.items() if ppid in frontier and pid not in wanted}
    return sum(stats[pid][1] for pid in wanted if pid in stats)


class Meter:
    """Start it before a measurement, read it after: average cores busy in between."""

    def __init__(self, server_pids: Iterable[int]) -> None:
        self.pids = list(server_pids)
        self.wall = time.perf_counter()
        self.busy, _ = _machine()
        self.servers = _tree_seconds(self.pids)
        times = os.times()
        self.client = times.user + times.system

    def read(self) -> Usage:
        wall = max(time.perf_counter() - self.wall, 1e-9)
        busy, _ = _machine()
        times = os.times()
        return Usage(machine=(busy - self.busy) / wall, servers=(_tree_seconds(self.pids) - self.servers) / wall,
                     client=(times.user + times.system - self.client) / wall)
