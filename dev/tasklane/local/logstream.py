"""One log stream for the whole local stack, every line tagged with the part that wrote it.

In-process parts (the functions, the HTTP API, the event sources) run in threads; each thread
names its part with :func:`set_part`, and a wrapper around stdout prefixes their lines. Child
processes (moto, the Celery worker) are read line by line and tagged the same way.
"""

from __future__ import annotations

import io
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


class TaggedStream(io.TextIOBase):
    """A stdout stand-in that writes whole lines, each prefixed with its thread's part."""

    def __init__(self, target: IO[str]) -> None:
        self.target = target
        self.color = bool(getattr(target, "isatty", lambda: False)())
        self._partial = threading.local()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        pending = getattr(self._partial, "text", "") + text
        *lines, rest = pending.split("\n")
        self._partial.text = rest
        if lines:
            prefix = _tag(current_part(), self.color)
            with _lock:
                self.target.write("".join(f"{prefix}{line}\n" for line in lines))
                self.target.flush()
        return len(text)

    def flush(self) -> None:
        self.target.flush()

    def fileno(self) -> int:
        return self.target.fileno()


def install() -> TaggedStream:
    """Tag everything written to stdout and stderr from here on (idempotent)."""
    if not isinstance(sys.stdout, TaggedStream):
        sys.stdout = TaggedStream(sys.__stdout__)
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
