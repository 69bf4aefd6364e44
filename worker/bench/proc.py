"""What /proc says about a process (Linux): resident memory, CPU time, children."""

from __future__ import annotations

import os
import time
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def status_kb(pid: int, field: str = "VmRSS") -> int | None:
    """A ``kB`` field of /proc/<pid>/status (VmRSS, VmHWM); None when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def pss_kb(pid: int) -> int | None:
    """Proportional set size (shared pages split between the processes sharing them): with
    a prefork pool, what the parent loaded before forking is in every child's RSS."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _stat(path: Path) -> list[str] | None:
    """The fields of a /proc/<pid>/stat after the command name (index 0 = state, field 3 of
    stat); None when the process is gone."""
    try:
        return path.read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def cpu_seconds(pid: int, *, waited_children: bool = False) -> float | None:
    """User + system CPU seconds the process has used; with ``waited_children`` also that of
    its children that have exited and been waited for (a multiprocessing pool joined)."""
    fields = _stat(Path(f"/proc/{pid}/stat"))
    if fields is None:
        return None
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)
    if waited_children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / _TICKS


def minor_faults(pid: int) -> int | None:
    """Minor page faults the process has taken (pages mapped in without reading a disk: a
    heap grown again after it was given back, say); None when the process is gone."""
    fields = _stat(Path(f"/proc/{pid}/stat"))
    return None if fields is None else int(fields[7])  # minflt (field 10 of stat)


def _pids_where(field: int, value: int) -> list[int]:
    """Processes whose /proc/<pid>/stat field (0 = state, 1 = ppid, 2 = pgrp) is `value`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat(entry / "stat")
        if fields is not None and len(fields) > field and int(fields[field]) == value:
            found.append(int(entry.name))
    return sorted(found)


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (the prefork pool of a Celery worker)."""
    return _pids_where(1, pid)


def group_pids(pgid: int) -> list[int]:
    """Every process of process group ``pgid`` (a worker started in its own session)."""
    return _pids_where(2, pgid)


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine_busy_seconds() -> float | None:
    """CPU seconds all cores have been busy since boot (/proc/stat), to tell our load from
    everyone else's over a phase."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICKS


class Phase:
    """Wall time, our processes' CPU and minor page faults, and the whole machine's busy CPU
    over one phase.

    ``groups()`` names our live processes ({"worker": [pids], "redis": [pid]}); this process
    (with the children it has waited for) is "bench". ``other_cores`` is the machine's busy
    CPU that was not ours, per second of wall time: 0.0 on a quiet machine, 1.0 when someone
    else kept a whole core busy meanwhile.
    """

    def __init__(self, groups=dict) -> None:
        self.groups = groups

    def _cpu(self) -> dict[str, dict[int, float]]:
        found = {name: {pid: cpu for pid in pids if (cpu := cpu_seconds(pid)) is not None}
                 for name, pids in self.groups().items()}
        found["bench"] = {os.getpid(): cpu_seconds(os.getpid(), waited_children=True) or 0.0}
        return found

    def _faults(self) -> dict[str, dict[int, int]]:
        return {name: {pid: n for pid in pids if (n := minor_faults(pid)) is not None}
                for name, pids in self.groups().items()}

    def __enter__(self) -> "Phase":
        self._load = loadavg()
        self._busy = machine_busy_seconds()
        self._before = self._cpu()
        self._faults_before = self._faults()
        self._time = time.monotonic()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.monotonic() - self._time
        after = self._cpu()
        busy = machine_busy_seconds()
        self.cpu = {
            name: sum(cpu - self._before.get(name, {}).get(pid, 0.0) for pid, cpu in pids.items())
            for name, pids in after.items()
        }
        self.minor_faults = {  # a process that appeared during the phase counts from 0
            name: sum(n - self._faults_before.get(name, {}).get(pid, 0) for pid, n in pids.items())
            for name, pids in self._faults().items()
        }
        ours = sum(self.cpu.values())
        other = (busy - self._busy - ours) if busy is not None and self._busy is not None else None
        self.figures = {
            "seconds": round(self.seconds, 3),
            "cpu_seconds": {name: round(value, 3) for name, value in self.cpu.items()},
            "minor_faults": self.minor_faults,
            "loadavg_before": self._load,
            "other_cores": round(max(other, 0.0) / self.seconds, 2)
            if other is not None and self.seconds else None,
        }


def local_ports_to(pids: list[int], remote_port: int) -> set[int]:
    """Local ports of the TCP connections these processes hold to ``remote_port`` (to find
    the PostgreSQL backends serving them: pg_stat_activity.client_port)."""
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[9] in inodes \
                    and int(fields[2].rsplit(":", 1)[1], 16) == remote_port:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports
