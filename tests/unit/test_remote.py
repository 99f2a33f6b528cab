"""The CLI's client for a deployed API: which authentication it picks, and SigV4 signatures
checked by an independent implementation of the algorithm (AWS's documented steps)."""

from __future__ import annotations

import hashlib
import hmac
import urllib.parse

import pytest
from botocore.credentials import Credentials
from tasklane.cli.remote import Api, sign

CREDENTIALS = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "session-1")


def test_an_execute_api_url_is_signed_for_its_region_and_a_token_is_a_bearer():
    deployed = Api.to("https://a1b2c3.execute-api.eu-west-1.amazonaws.com/")
    assert deployed.sign and deployed.region == "eu-west-1" and deployed.token is None
    assert deployed.url == "https://a1b2c3.execute-api.eu-west-1.amazonaws.com"
    jwt = Api.to("https://a1b2c3.execute-api.eu-west-1.amazonaws.com", token="t0k")
    assert jwt.token == "t0k" and not jwt.sign
    local = Api.to("http://127.0.0.1:3000")
    assert not local.sign and local.token is None


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def verify(
    method: str,
    url: str,
    body: bytes | None,
    headers: dict[str, str],
    service: str = "execute-api",
) -> bool:
    """AWS Signature Version 4, step by step, from the request as it would be sent."""
    headers = {k.lower(): v for k, v in headers.items()}
    authorization = headers["authorization"]
    algorithm, rest = authorization.split(" ", 1)
    parts = dict(p.strip().split("=", 1) for p in rest.split(","))
    access_key, date, region, service, terminator = parts["Credential"].split("/")
    assert (algorithm, terminator) == ("AWS4-HMAC-SHA256", "aws4_request")
    assert parts["Credential"].split("/")[3] == service
    signed = parts["SignedHeaders"].split(";")
    split = urllib.parse.urlsplit(url)
    headers["host"] = split.netloc
    query = sorted(urllib.parse.parse_qsl(split.query, keep_blank_values=True))
    canonical = "\n".join(
        [
            method,
            urllib.parse.quote(split.path or "/", safe="/~"),
            "&".join(
                f"{urllib.parse.quote(k, safe='~')}={urllib.parse.quote(v, safe='~')}"
                for k, v in query
            ),
            "".join(f"{name}:{' '.join(headers[name].split())}\n" for name in signed),
            ";".join(signed),
            hashlib.sha256(body or b"").hexdigest(),
        ]
    )
    stamp = headers["x-amz-date"]
    scope = f"{date}/{region}/{service}/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = f"AWS4{CREDENTIALS.secret_key}".encode()
    for part in (date, region, service, "aws4_request"):
        key = _hmac(key, part)
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return access_key == CREDENTIALS.access_key and hmac.compare_digest(
        expected, parts["Signature"]
    )


def test_the_verifier_agrees_with_aws_published_known_answer():
    """AWS's SigV4 test suite, case get-vanilla: the verifier that checks our signatures
    accepts AWS's own signature, and no other."""
    signature = "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
    headers = {
        "host": "example.amazonaws.com",
        "x-amz-date": "20150830T123600Z",
        "authorization": "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/"
        f"aws4_request, SignedHeaders=host;x-amz-date, Signature={signature}",
    }
    url = "https://example.amazonaws.com/"
    assert verify("GET", url, None, headers, service="service")
    assert not verify("GET", url + "?a=b", None, headers, service="service")
    assert not verify("POST", url, None, headers, service="service")


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/tasks?status=failed&limit=50&cursor=abc%3D%3D", None),
        ("POST", "/tasks", b'{"task": "text.wordcount", "payload": {"text": "a b"}}'),
        ("POST", "/tasks/retry", b"{}"),
    ],
)
def test_sigv4_signatures_verify(method, path, body):
    url = "https://a1b2c3.execute-api.eu-west-1.amazonaws.com" + path
    headers = sign(
        method, url, body, {"content-type": "application/json"}, "eu-west-1", CREDENTIALS
    )
    assert headers["X-Amz-Security-Token"] == "session-1"
    assert "eu-west-1/execute-api/aws4_request" in headers["Authorization"]
    assert verify(method, url, body, headers)
    tampered = dict(headers, **{"content-type": "text/plain"})
    assert not verify(method, url, body, tampered)  # the verifier can say no
    assert not verify(method, url, (body or b"") + b" ", headers)


@pytest.fixture
def upstream():
    """A stand-in API on loopback that records what reaches it."""
    import http.server
    import threading

    seen: list[tuple[str, str, dict[str, str], bytes]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def _record(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            seen.append((self.command, self.path, dict(self.headers.items()), body))
            answer = b'{"error": {"code": "conflict", "message": "no"}}'
            self.send_response(409 if self.command == "POST" else 200)
            self.send_header("content-type", "application/json")
            self.send_header("set-cookie", "tracking=1")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        do_GET = do_POST = _record

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()


def _through(proxy_port: int, method: str, target: str, body: bytes | None = None):
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        f"http://127.0.0.1:{proxy_port}{target}",
        data=body,
        method=method,
        headers={
            "content-type": "application/json",
            "cookie": "session=browser",
            "authorization": "Basic x",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers.items()), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), exc.read()


def test_the_console_proxy_adds_the_token_and_drops_the_browsers_credentials(upstream):
    from tasklane.cli.proxy import serve

    url, seen = upstream
    proxy = serve(Api.to(url, token="t0ken"))
    try:
        status, headers, body = _through(proxy.server_address[1], "POST", "/tasks/1/retry", b"{}")
    finally:
        proxy.shutdown()
    assert status == 409 and b"conflict" in body  # the API's answer, as it was
    assert "set-cookie" not in {k.lower() for k in headers}
    method, path, received, sent = seen[0]
    received = {k.lower(): v for k, v in received.items()}
    assert (method, path, sent) == ("POST", "/tasks/1/retry", b"{}")
    assert received["authorization"] == "Bearer t0ken" and "cookie" not in received


def test_the_console_proxy_signs_each_request_with_sigv4(upstream, monkeypatch):
    from tasklane.cli.proxy import serve

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", CREDENTIALS.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", CREDENTIALS.secret_key)
    monkeypatch.setenv("AWS_SESSION_TOKEN", CREDENTIALS.token)
    url, seen = upstream
    proxy = serve(Api(url, sign=True, region="eu-west-1"))
    try:
        status, _, _ = _through(proxy.server_address[1], "GET", "/tasks?status=failed&limit=50")
    finally:
        proxy.shutdown()
    assert status == 200
    method, path, received, body = seen[0]
    assert verify(method, url + path, body or None, received)
    assert received["X-Amz-Security-Token"] == "session-1"


def test_the_console_proxy_serves_only_its_own_page(upstream):
    """DNS rebinding (another Host) and cross-site requests (another Origin) are refused
    before anything is signed or sent."""
    import urllib.error
    import urllib.request

    from tasklane.cli.proxy import serve

    url, seen = upstream
    proxy = serve(Api.to(url, token="t0ken"))
    port = proxy.server_address[1]

    def status(headers: dict[str, str], method: str = "POST") -> int:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/tasks/1/cancel", data=b"", method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    try:
        assert status({"host": "evil.example:80"}) == 403
        assert status({"host": f"127.0.0.1:{port}", "origin": "https://evil.example"}) == 403
        assert seen == []  # nothing reached the API
        assert status({"host": f"localhost:{port}", "origin": f"http://localhost:{port}"}) == 409
        assert len(seen) == 1
    finally:
        proxy.shutdown()
