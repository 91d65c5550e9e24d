"""CPU time of process trees over a measured interval, read from /proc.

A benchmark that compares two systems by throughput alone hides what each figure cost; the
CPU each side burned per message is the other half of the comparison. A side is a set of
process trees (telgate: the daemon and the PostgreSQL postmaster; Kannel: bearerbox and
smsbox). For each tree we add, from /proc/<pid>/stat, utime+stime of every live process and
cutime+cstime of each (what its reaped children used): a child that exits during the interval
moves its whole life into its parent's cutime, and the difference of the two snapshots is then
exactly what it used inside the interval. Only a process reparented away from the tree (a
daemonising grandchild) escapes; none of the measured programs does that.
"""

from __future__ import annotations

import asyncio
import os
import resource
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (which may hold spaces)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None  # gone between listing and reading
    return raw.rsplit(")", 1)[1].split()


def _children(pid: int) -> list[int]:
    """Direct children of `pid`, from every thread's children file."""
    kids: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    for tid in tasks:
        try:
            kids.extend(int(k) for k in Path(f"/proc/{pid}/task/{tid}/children").read_text().split())
        except OSError:
            continue
    return kids


def tree(pid: int) -> list[int]:
    """`pid` and its live descendants."""
    seen: set[int] = set()
    todo = [pid]
    while todo:
        p = todo.pop()
        if p not in seen:
            seen.add(p)
            todo.extend(_children(p))
    return sorted(seen)


def tree_seconds(pid: int) -> float:
    """CPU seconds used so far by the tree rooted at `pid`, reaped children included."""
    ticks = 0
    for p in tree(pid):
        f = _stat_fields(p)
        if f is None:
            continue
        # After the name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
        ticks += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
    return ticks / TICK


def machine_busy_seconds() -> float:
    """CPU seconds all CPUs of the machine have been busy (not idle, not waiting on I/O)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / TICK


def self_seconds() -> float:
    """CPU seconds of this process alone (its threads, not its children)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


@dataclass
class CpuMeter:
    """CPU seconds of named process trees between `start()` and `stop()`.

    `roots` maps a part's name to its root pid; the name "bench" is this process (read with
    getrusage, since its own children, the measured ones, must not be counted twice).
    `others` is what the rest of the machine used meanwhile (another user's benchmark, say):
    a figure taken while it was large is not comparable.
    """

    roots: Mapping[str, int]
    _before: dict[str, float] = field(default_factory=dict)
    used: dict[str, float] = field(default_factory=dict)
    others: float = 0.0

    def _read(self) -> dict[str, float]:
        now = {name: self_seconds() if name == "bench" else tree_seconds(pid)
               for name, pid in self.roots.items()}
        now[" machine"] = machine_busy_seconds()
        return now

    def start(self) -> None:
        self._before = self._read()

    def stop(self) -> dict[str, float]:
        after = self._read()
        self.used = {name: round(after[name] - self._before[name], 3) for name in self.roots}
        busy = after[" machine"] - self._before[" machine"]
        self.others = round(max(0.0, busy - sum(self.used.values())), 3)
        return self.used

    def per_message(self, messages: int, parts: Iterable[str]) -> dict[str, float]:
        """µs of CPU per message for each named part and for their sum ("total")."""
        chosen = list(parts)
        out = {name: round(self.used[name] * 1e6 / messages, 1) for name in chosen}
        out["total"] = round(sum(self.used[name] for name in chosen) * 1e6 / messages, 1)
        return out


async def wait_quiet(limit: float, busy_below: float = 0.15, quiet_for: int = 3) -> float:
    """Wait (at most `limit` seconds) until the machine has been idle for `quiet_for` whole
    seconds, a second being idle when under `busy_below` of all CPUs was busy; returns the
    seconds waited. Called between runs, when none of ours is working: on a shared machine
    another user's benchmark would otherwise land inside a measured interval."""
    cpus = os.cpu_count() or 1
    started = time.monotonic()
    calm = 0
    while calm < quiet_for and time.monotonic() - started < limit:
        before = machine_busy_seconds()
        await asyncio.sleep(1.0)
        calm = calm + 1 if machine_busy_seconds() - before < busy_below * cpus else 0
    return round(time.monotonic() - started, 1)
