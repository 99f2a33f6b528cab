"""One log stream for the whole local stack, every line tagged with the part that wrote it.

In-process parts (the functions, the HTTP API, the event sources) run in threads; each thread
names its part with :func:`set_part`, and a wrapper around stdout prefixes their lines. Child
processes (moto, the Celery worker) are read line by line and tagged the same way.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import threading
from typing import IO

_local = threading.local()
_COLORS = ["36", "32", "35", "33", "34", "91", "96", "92", "95", "93"]
_assigned: dict[str, str] = {}
_lock = threading.Lock()


def set_part(name: str) -> None:
    _local.part = name


def current_part() -> str:
    return getattr(_local, "part", "stack")


def _tag(part: str, color: bool) -> str:
    with _lock:
        code = _assigned.setdefault(part, _COLORS[len(_assigned) % len(_COLORS)])
    label = f"{part:>12} |"
    return f"\033[{code}m{label}\033[0m " if color else f"{label} "


#: What a compact line leaves out of a JSON log line: said by its place, its time and its part.
_LEFT_OUT = {
    "level",
    "message",
    "timestamp",
    "service",
    "location",
    "cold_start",
    "function_name",
    "function_memory_size",
    "function_arn",
    "function_request_id",
    "sampling_rate",
    "xray_trace_id",
    "traceback",
}


def compact(line: str) -> str:
    """A Powertools JSON log line as a person reads it in a terminal: ``HH:MM:SS LEVEL message
    key=value ...``, and its traceback (if any) below it, indented. Any other line as it is."""
    if not line.startswith("{"):
        return line
    try:
        entry = json.loads(line)
    except ValueError:
        return line
    if not isinstance(entry, dict) or "message" not in entry or "level" not in entry:
        return line
    clock = str(entry.get("timestamp", ""))[11:19]
    fields = " ".join(
        f"{key}={value if isinstance(value, str) else json.dumps(value)}"
        for key, value in entry.items()
        if key not in _LEFT_OUT
    )
    text = f"{clock} {entry['level']:<7} {entry['message']}" + (f"  {fields}" if fields else "")
    if trace := entry.get("traceback"):
        text += "\n" + "\n".join(f"    {row}" for row in str(trace).rstrip().splitlines())
    return text


class TaggedStream(io.TextIOBase):
    """A stdout stand-in that writes whole lines, each prefixed with its thread's part (and,
    ``compact``, JSON log lines shortened for a person: :func:`compact`)."""

    def __init__(self, target: IO[str], compact_lines: bool = False) -> None:
        self.target = target
        self.color = bool(getattr(target, "isatty", lambda: False)())
        self.compact = compact_lines
        self._partial = threading.local()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        pending = getattr(self._partial, "text", "") + text
        *lines, rest = pending.split("\n")
        self._partial.text = rest
        if lines:
            prefix = _tag(current_part(), self.color)
            if self.compact:
                lines = [row for line in lines for row in compact(line).split("\n")]
            with _lock:
                self.target.write("".join(f"{prefix}{line}\n" for line in lines))
                self.target.flush()
        return len(text)

    def flush(self) -> None:
        self.target.flush()

    def fileno(self) -> int:
        return self.target.fileno()


def install(compact_lines: bool = False) -> TaggedStream:
    """Tag everything written to stdout and stderr from here on (idempotent); ``compact_lines``:
    JSON log lines shortened for a person (a terminal), not for a machine."""
    if not isinstance(sys.stdout, TaggedStream):
        sys.stdout = TaggedStream(sys.__stdout__, compact_lines)
    if not isinstance(sys.stderr, TaggedStream):
        sys.stderr = sys.stdout
    # Loggers configured earlier hold the old stream; point their handlers at the new one.
    import logging

    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, logging.StreamHandler) and handler.stream in (
                sys.__stdout__,
                sys.__stderr__,
            ):
                handler.setStream(sys.stdout)
    return sys.stdout  # type: ignore[return-value]


def pipe(process: subprocess.Popen, part: str, skip: re.Pattern | None = None) -> threading.Thread:
    """Copy a child's combined output into the stream, tagged as ``part`` (less ``skip`` lines)."""

    def copy() -> None:
        set_part(part)
        assert process.stdout is not None
        for line in process.stdout:
            if skip is not None and skip.search(line):
                continue
            sys.stdout.write(line if line.endswith("\n") else line + "\n")

    thread = threading.Thread(target=copy, name=f"pipe-{part}", daemon=True)
    thread.start()
    return thread
