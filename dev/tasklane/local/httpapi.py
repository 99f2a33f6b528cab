"""The local HTTP API: API Gateway's HTTP API (payload format 2.0) in front of the template's
functions, each ``HttpApi`` event a route, served on loopback.

A request becomes the event API Gateway would send, the route's function runs in its pool
with API Gateway's 30-second integration timeout, and its response becomes HTTP; as there, a
body over Lambda's 6 MB request limit is refused before any function sees it.
"""

from __future__ import annotations

import base64
import http.server
import json
import re
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from tasklane.local import logstream
from tasklane.local.events import LambdaContext, http_event
from tasklane.local.runtime import FunctionPool, InvocationError
from tasklane.local.template import Function
from tasklane.logs import logger

API_TIMEOUT_S = 30  # API Gateway's integration timeout
API_MAX_BODY = 6 * 1024 * 1024  # Lambda's synchronous request payload limit


@dataclass
class Route:
    method: str
    path: str
    pattern: re.Pattern
    function: str

    @classmethod
    def of(cls, method: str, path: str, function: str) -> Route:
        regex = re.sub(r"\\\{(\w+)\\\+\\\}", r"(?P<\1>.+)", re.escape(path))
        regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", regex)
        return cls(method.upper(), path, re.compile(f"^{regex}$"), function)

    @property
    def specificity(self) -> tuple[int, int]:
        return (self.path.count("{"), -len(self.path))


class HttpApi:
    """The routes of every function's ``HttpApi`` events, most specific first."""

    def __init__(self, functions: dict[str, Function], handlers: dict[str, FunctionPool]) -> None:
        self.functions, self.handlers = functions, handlers
        self.routes: list[Route] = []
        for fn in functions.values():
            for event in fn.events.values():
                if event.get("Type") == "HttpApi":
                    props = event.get("Properties") or {}
                    self.routes.append(
                        Route.of(
                            props.get("Method", "ANY"),
                            props.get("Path", "/{proxy+}"),
                            fn.logical_id,
                        )
                    )
        self.routes.sort(key=lambda r: r.specificity)
        self.pool = ThreadPoolExecutor(8, thread_name_prefix="invoke")
        self.server: http.server.ThreadingHTTPServer | None = None

    def serve(self, host: str, port: int, threads: list[threading.Thread]) -> HttpApi:
        """Serve on ``host:port`` from a daemon thread (added to ``threads``)."""
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt: str, *args: Any) -> None:
                logstream.set_part("api")
                sys.stdout.write(f'{self.address_string()} "{self.requestline}" {args[1]}\n')

            def _serve(self) -> None:
                status, headers, body = api.handle(self)
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve

        self.server = http.server.ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        thread = threading.Thread(target=self.server.serve_forever, name="api", daemon=True)
        thread.start()
        threads.append(thread)
        return self

    def close(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def handle(self, request: http.server.BaseHTTPRequestHandler) -> tuple[int, list, bytes]:
        """One HTTP request → the route's function → an HTTP response, as API Gateway does."""
        url = urlsplit(request.path)
        method = request.command
        length = int(request.headers.get("Content-Length") or 0)
        if length > API_MAX_BODY:
            return _plain(413, "Request Entity Too Large")
        raw = request.rfile.read(length) if length else None
        for route in self.routes:
            match = route.pattern.match(url.path)
            if match and route.method in (method, "ANY"):
                break
        else:
            return _plain(404, "Not Found")
        fn = self.functions[route.function]
        event = http_event(
            method,
            url.path,
            route_key=f"{route.method} {route.path}",
            path_parameters=match.groupdict() or None,
            headers=dict(request.headers.items()),
            query=url.query,
            body=raw,
        )
        timeout = min(fn.timeout, API_TIMEOUT_S)
        context = LambdaContext(
            function_name=fn.logical_id, timeout_seconds=timeout, memory_limit_in_mb=fn.memory
        )
        future = self.pool.submit(self.handlers[fn.logical_id], event, context)
        try:
            response = future.result(timeout=timeout + 1)
        except (FutureTimeout, InvocationError) as exc:
            logger.warning(
                "invocation failed", extra={"function": fn.logical_id, "error": str(exc)}
            )
            return _plain(503, "Service Unavailable")
        return http_response(response)


def _plain(status: int, message: str) -> tuple[int, list, bytes]:
    return status, [("Content-Type", "application/json")], json.dumps({"message": message}).encode()


def http_response(response: Any) -> tuple[int, list, bytes]:
    """A payload-format-2.0 Lambda response as HTTP (a bare value means 200 and JSON)."""
    if not (isinstance(response, dict) and "statusCode" in response):
        body = response if isinstance(response, str) else json.dumps(response)
        return 200, [("Content-Type", "application/json")], body.encode()
    headers = [(k, str(v)) for k, v in (response.get("headers") or {}).items()]
    for key, values in (response.get("multiValueHeaders") or {}).items():
        headers += [(key, str(v)) for v in values]
    headers += [("Set-Cookie", c) for c in response.get("cookies") or []]
    body = response.get("body") or ""
    data = base64.b64decode(body) if response.get("isBase64Encoded") else str(body).encode()
    return int(response["statusCode"]), headers, data
