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


def verify(method: str, url: str, body: bytes | None, headers: dict[str, str]) -> bool:
    """AWS Signature Version 4, step by step, from the request as it would be sent."""
    headers = {k.lower(): v for k, v in headers.items()}
    authorization = headers["authorization"]
    algorithm, rest = authorization.split(" ", 1)
    parts = dict(p.strip().split("=", 1) for p in rest.split(","))
    access_key, date, region, service, terminator = parts["Credential"].split("/")
    assert (algorithm, service, terminator) == ("AWS4-HMAC-SHA256", "execute-api", "aws4_request")
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
