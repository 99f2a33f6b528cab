"""Real processes the tests start (Celery workers), and a proxy that can cut their network."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from pathlib import Path

from tasklane import testing

ROOT = Path(__file__).resolve().parents[1]
#: A worker imports this checkout's tasklane and tests, as the test process does.
PYTHONPATH = os.pathsep.join([str(ROOT / "layers" / "tasklane"), str(ROOT)])


class Worker(testing.Worker):
    """A real Celery worker importing this checkout's tasklane and tests."""

    def __init__(self, env: dict[str, str], queue: str, *extra: str, **kwargs: str) -> None:
        super().__init__(env | {"PYTHONPATH": PYTHONPATH}, queue, *extra, cwd=ROOT, **kwargs)


class Proxy:
    """A TCP proxy a test can cut, as a network partition between a process and a server would:
    open connections are dropped and new ones refused until :meth:`restore`."""

    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.target = (host, target_port)
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind((host, 0))
        self.server.listen(64)
        self.port = self.server.getsockname()[1]
        self.endpoint = f"http://{host}:{self.port}"
        self.open = threading.Event()
        self.open.set()
        self.connections: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            try:
                if not self.open.is_set():
                    raise OSError("partitioned")
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.connections += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.open.clear()
        with self.lock:
            for connection in self.connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
                connection.close()
            self.connections.clear()

    def restore(self) -> None:
        self.open.set()

    def close(self) -> None:
        self.cut()
        self.server.close()
