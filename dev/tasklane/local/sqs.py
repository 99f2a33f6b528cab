"""moto's SQS server on loopback, and queues created from ``template.yaml``'s definitions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from tasklane.errors import ConfigurationError
from tasklane.local.postgres import port_is_free

#: moto accepts any credentials; boto3 only needs some to sign requests.
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class MotoServer:
    port: int
    host: str = "127.0.0.1"
    #: The server's command line before its options: ``moto.server``, or a wrapper of it.
    program: tuple[str, ...] = (sys.executable, "-m", "moto.server")
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, log: Any = subprocess.DEVNULL) -> MotoServer:
        if not port_is_free(self.port, self.host):
            raise ConfigurationError(f"port {self.port} is taken: cannot start moto's SQS server")
        self.process = subprocess.Popen(
            [*self.program, "-H", self.host, "-p", str(self.port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            env=os.environ | FAKE_CREDENTIALS,
            start_new_session=True,  # a terminal's Ctrl-C reaches its owner, which stops it
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ConfigurationError(
                    "moto's server exited at start (is moto[server] installed?)"
                )
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1).close()
                return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        raise ConfigurationError("moto's server did not answer within 30 s")

    def reset(self) -> None:
        """Drop every queue (moto slows down as queues fill; tests start empty)."""
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        urllib.request.urlopen(request, timeout=10).close()

    def stop(self) -> None:
        """Killed: moto's server ignores SIGTERM, and holds nothing worth a clean stop (its
        queues live in its memory)."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@dataclass(frozen=True)
class QueueSpec:
    """A queue as the template declares it (logical id, name, attributes, its DLQ's logical id)."""

    logical_id: str
    name: str
    attributes: dict[str, str] = field(default_factory=dict)
    dead_letter_target: str | None = None
    max_receive_count: int | None = None


def create_queues(client: Any, specs: list[QueueSpec]) -> dict[str, str]:
    """Create queues, dead-letter targets first; returns logical id → queue URL."""
    urls: dict[str, str] = {}
    arns: dict[str, str] = {}
    pending = list(specs)
    while pending:
        ready = [s for s in pending if s.dead_letter_target is None or s.dead_letter_target in arns]
        if not ready:
            missing = ", ".join(s.logical_id for s in pending)
            raise ConfigurationError(f"dead-letter targets not found for: {missing}")
        for spec in ready:
            attributes = dict(spec.attributes)
            if spec.dead_letter_target:
                attributes["RedrivePolicy"] = json.dumps(
                    {
                        "deadLetterTargetArn": arns[spec.dead_letter_target],
                        "maxReceiveCount": str(spec.max_receive_count or 5),
                    }
                )
            url = client.create_queue(QueueName=spec.name, Attributes=attributes)["QueueUrl"]
            urls[spec.logical_id] = url
            arns[spec.logical_id] = client.get_queue_attributes(
                QueueUrl=url, AttributeNames=["QueueArn"]
            )["Attributes"]["QueueArn"]
            pending.remove(spec)
    return urls
