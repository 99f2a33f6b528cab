"""The template's ``Schedule``/``ScheduleV2`` events, run locally as timers.

Only ``rate()`` runs here (a ``cron()`` is named in the log and left to ``tasklane invoke``):
each tick invokes the function with the event EventBridge Scheduler would send, or the
schedule's own ``Input``. Ticks keep time whatever the last one is doing, as EventBridge's do:
an invocation that outlasts the rate runs beside the next (the reconciler's passes overlap so,
sharing the rows they claim), up to the function's pool of warm children.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from tasklane.local import logstream
from tasklane.local.events import ACCOUNT_ID, LambdaContext, schedule_event
from tasklane.local.runtime import FunctionPool
from tasklane.local.template import Function, Template
from tasklane.logs import logger

_RATE = re.compile(r"rate\((\d+)\s+(minute|minutes|hour|hours|day|days)\)")
_UNIT = {"minute": 60, "hour": 3600, "day": 86400}
SCHEDULE_ARNS = f"arn:aws:scheduler:us-east-1:{ACCOUNT_ID}:schedule/default/"


@dataclass(frozen=True)
class Schedule:
    """One schedule event of one function: every ``every`` seconds, ``event``."""

    function: Function
    name: str
    every: float
    rule: str
    given: Any = None

    def run(self, handler: FunctionPool, stop: threading.Event) -> None:
        """Invoke the function every ``every`` seconds until ``stop`` is set, each invocation
        in a thread of its own, so a long one never delays the next tick."""
        next_tick = time.monotonic() + self.every
        while not stop.wait(max(0.0, next_tick - time.monotonic())):
            next_tick += self.every
            threading.Thread(
                target=self._invoke, args=(handler,), name=f"tick-{self.name}", daemon=True
            ).start()

    def _invoke(self, handler: FunctionPool) -> None:
        fn = self.function
        logstream.set_part(fn.logical_id)
        context = LambdaContext(function_name=fn.logical_id, timeout_seconds=fn.timeout)
        event = self.given if self.given is not None else schedule_event(self.rule)
        try:
            handler(event, context)
        except Exception:
            logger.exception("scheduled invocation failed", extra={"function": fn.logical_id})


def schedules_of(
    template: Template, functions: dict[str, Function], refs: dict[str, Any]
) -> list[Schedule]:
    """Every enabled ``rate()`` schedule of the template's functions."""
    found = []
    for fn in functions.values():
        for name, event in fn.events.items():
            if event.get("Type") not in ("Schedule", "ScheduleV2"):
                continue
            props = event.get("Properties") or {}
            expression = str(
                template.resolve(props.get("ScheduleExpression") or props.get("Schedule"), refs)
            )
            state = str(props.get("State", "ENABLED")).upper()
            if state == "DISABLED" or props.get("Enabled") is False:
                continue
            match = _RATE.fullmatch(expression.strip())
            if not match:
                logger.warning(
                    "only rate() schedules run locally; use `tasklane invoke`",
                    extra={"function": fn.logical_id, "schedule": expression},
                )
                continue
            every = int(match.group(1)) * _UNIT[match.group(2).rstrip("s")]
            rule = f"{SCHEDULE_ARNS}{fn.logical_id}{name}"
            given = props.get("Input")  # the schedule's own event, as EventBridge sends it
            found.append(Schedule(fn, name, every, rule, json.loads(given) if given else None))
    return found
