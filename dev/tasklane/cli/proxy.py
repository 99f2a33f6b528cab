"""``tasklane console``: the console of a deployed API, in a local browser.

A browser cannot sign requests with SigV4, so a stack with IAM authorization serves its console
through this proxy: it listens on loopback only and passes each request on to the API, signed with
the operator's AWS credentials (or carrying ``--token``), exactly as the other commands do. Nothing
is cached or stored; the API still checks every call.
"""

from __future__ import annotations

import http.server
import threading

from tasklane.cli.remote import Api

#: Request headers passed on; the rest (cookies, the browser's own authorization) stay here.
FORWARDED = ("content-type", "accept", "idempotency-key")
#: Response headers passed back.
RETURNED = (
    "content-type",
    "cache-control",
    "content-security-policy",
    "x-content-type-options",
    "referrer-policy",
    "allow",
)
MAX_BODY = 6 * 1024 * 1024  # what the API itself takes


def serve(api: Api, port: int = 0) -> http.server.ThreadingHTTPServer:
    """A started proxy to ``api`` on ``127.0.0.1:port`` (0: any free port)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _ours(self) -> bool:
            """Only the console's own page may use the proxy: a request naming another host
            (a page whose domain was rebound to 127.0.0.1) or sent by another origin (a
            cross-site form or fetch) never gets the operator's credentials."""
            port = self.server.server_address[1]
            mine = {f"127.0.0.1:{port}", f"localhost:{port}"}
            origin = self.headers.get("origin")
            return self.headers.get("host") in mine and (
                origin is None or origin in {f"http://{h}" for h in mine}
            )

        def _forward(self) -> None:
            if not self._ours():
                self.send_error(403, explain="only the console served here may use this proxy")
                return
            length = int(self.headers.get("content-length") or 0)
            if length > MAX_BODY:
                self.send_error(413)
                return
            data = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() in FORWARDED}
            try:
                status, answer_headers, body = api.send(self.command, self.path, data, headers)
            except Exception as exc:  # the API unreachable: say so in the page's own terms
                self.send_error(502, explain=str(exc))
                return
            self.send_response(status)
            for name, value in answer_headers.items():
                if name.lower() in RETURNED:
                    self.send_header(name, value)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _forward

        def log_message(self, format: str, *args) -> None:  # quiet: the CLI prints the URL
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
