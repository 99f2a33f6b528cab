"""What ``/proc/PID/stat`` says of a process: its parent, the CPU it has used.

The fault suite finds a Celery worker's pool processes by their parent; the scale benchmark
adds up the CPU of the Postgres server's processes.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Positions in :func:`stat`'s fields (proc(5), counted after the command name).
PARENT, UTIME, STIME, CUTIME, CSTIME = 1, 11, 12, 13, 14


def pids() -> list[int]:
    """Every process now running."""
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def stat(pid: int) -> list[str] | None:
    """The process's stat fields after its command name (which may hold spaces and
    parentheses); None when it has gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def parent(pid: int) -> int | None:
    fields = stat(pid)
    return int(fields[PARENT]) if fields else None


def cpu_seconds(fields: list[str], *, children: bool = False) -> float:
    """CPU time in seconds: user and system, with its waited-for children's if asked."""
    last = CSTIME if children else STIME
    return sum(int(v) for v in fields[UTIME : last + 1]) / os.sysconf("SC_CLK_TCK")
