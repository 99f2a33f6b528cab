"""Function "containers": each function runs in child processes of its own, as in Lambda.

A child imports its handler once (the cold start) and then serves invocations one at a time, so
module-level state (clients, engines, the logger's keys) belongs to one function, as it does in
Lambda, and each function sees only its own environment. An invocation that runs past its
timeout has its process killed, as Lambda ends a timed-out execution environment.

Protocol: the parent writes one JSON line per invocation to the child's stdin; the child answers
with one JSON line on a pipe whose descriptor it finds in ``TASKLANE_RESULT_FD``. The child's
stdout and stderr are its logs.
"""

from __future__ import annotations

import json
import os
import queue
import select
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from tasklane.local import logstream


class InvocationError(Exception):
    """The handler raised; the message is its exception, as Lambda reports it."""


class InvocationTimeout(InvocationError, TimeoutError):
    """The invocation ran past its deadline; its process was killed."""


class _Child:
    #: The pool's generation it was spawned in (FunctionPool.recycle).
    generation = 0

    def __init__(
        self, code_uri: Path, handler: str, name: str, env: dict[str, str], layers: list[str]
    ) -> None:
        read_fd, write_fd = os.pipe()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tasklane.local.runtime",
                str(code_uri),
                handler,
                name,
                os.pathsep.join(layers),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            # AWS_LAMBDA_FUNCTION_NAME as Lambda sets it (tasklane logs at INFO in a function)
            env=env
            | {
                "AWS_LAMBDA_FUNCTION_NAME": name,
                "PYTHONUNBUFFERED": "1",
                "TASKLANE_RESULT_FD": str(write_fd),
            },
            pass_fds=(write_fd,),
            start_new_session=True,
        )
        os.close(write_fd)
        self.results = os.fdopen(read_fd, "r")
        logstream.pipe(self.process, name)

    def invoke(self, event: dict, timeout: float, memory: int) -> Any:
        request = {"event": event, "timeout": timeout, "memory": memory}
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        ready, _, _ = select.select([self.results], [], [], timeout)
        if not ready:
            self.kill()
            raise InvocationTimeout(f"Task timed out after {timeout:.2f} seconds")
        line = self.results.readline()
        if not line:
            self.kill()
            raise InvocationError("Runtime exited without providing a reason")
        answer = json.loads(line)
        if "error" in answer:
            raise InvocationError(answer["error"])
        return answer["response"]

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        if self.alive:
            self.process.kill()
        self.process.wait()
        self.results.close()

    def close(self) -> None:
        if self.alive:
            assert self.process.stdin is not None
            self.process.stdin.close()  # the child's loop ends on EOF
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.results.close()


class FunctionPool:
    """Up to ``size`` warm children of one function; an invocation borrows one."""

    def __init__(
        self,
        code_uri: Path,
        handler: str,
        name: str,
        env: dict[str, str],
        *,
        timeout: float,
        memory: int,
        layers: list[str],
        size: int = 4,
    ) -> None:
        self.args = (code_uri, handler, name, env, layers)
        self.timeout, self.memory, self.size = timeout, memory, size
        self.idle: queue.LifoQueue[_Child] = queue.LifoQueue()
        self.count = 0
        self.spawned: list[_Child] = []
        self.lock = threading.Lock()
        self.closed = False
        #: Bumped by :meth:`recycle`: a child of an older generation is not lent again.
        self.generation = 0

    def warm(self) -> None:
        self.idle.put(self._spawn())

    def _spawn(self) -> _Child:
        child = _Child(*self.args)
        child.generation = self.generation
        with self.lock:
            self.count += 1
            self.spawned.append(child)
        return child

    def recycle(self) -> None:
        """The code changed (``tasklane dev --reload``): idle children are closed now, busy ones
        when their invocation ends, and the next invocations import the code afresh."""
        with self.lock:
            self.generation += 1
        while True:
            try:
                child = self.idle.get_nowait()
            except queue.Empty:
                break
            child.close()
            with self.lock:
                self.count -= 1
        self.warm()

    @property
    def pids(self) -> list[int]:
        return [c.process.pid for c in self.spawned if c.alive]

    def _borrow(self) -> _Child:
        try:
            return self.idle.get_nowait()
        except queue.Empty:
            pass
        with self.lock:
            can_spawn = self.count < self.size
        return self._spawn() if can_spawn else self.idle.get()

    def __call__(self, event: dict, context: Any = None) -> Any:
        """Invoke like a handler: ``pool(event, context)``; the context's deadline is honoured."""
        timeout = self.timeout
        if context is not None and hasattr(context, "get_remaining_time_in_millis"):
            timeout = context.get_remaining_time_in_millis() / 1000
        child = self._borrow()
        try:
            return child.invoke(event, timeout, self.memory)
        finally:
            if child.alive and not self.closed and child.generation == self.generation:
                self.idle.put(child)
            else:
                if child.alive:
                    child.close()  # of an older generation: its code changed since
                with self.lock:
                    self.count -= 1

    def close(self) -> None:
        self.closed = True
        for child in self.spawned:
            child.close()


def _serve(code_uri: str, handler_name: str, name: str, layers: str) -> None:
    """The child's loop: import the handler, then answer invocations until stdin closes."""
    for layer in filter(None, layers.split(os.pathsep)):
        if layer not in sys.path:
            sys.path.append(layer)  # what /opt/python is in Lambda
    from tasklane.local.events import LambdaContext
    from tasklane.local.functions import load_handler

    results = os.fdopen(int(os.environ["TASKLANE_RESULT_FD"]), "w")
    handler = load_handler(Path(code_uri), handler_name, name)
    for line in sys.stdin:
        request = json.loads(line)
        context = LambdaContext(
            function_name=name,
            timeout_seconds=request["timeout"],
            memory_limit_in_mb=request["memory"],
        )
        try:
            answer = {"response": handler(request["event"], context)}
            text = json.dumps(answer, default=str)
        except Exception as exc:  # reported to the caller, as Lambda reports a function error
            import traceback

            traceback.print_exc()
            text = json.dumps({"error": f"{type(exc).__name__}: {exc}"})
        results.write(text + "\n")
        results.flush()
        sys.stdout.flush()


if __name__ == "__main__":
    _serve(*sys.argv[1:5])
