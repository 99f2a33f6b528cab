"""The CLI's HTTP client: the same requests to a local stack or to a deployed one.

A deployed API is called with the caller's AWS credentials (the standard chain: environment,
profile, SSO, instance role), the request signed with SigV4 for ``execute-api``, when the
stack uses IAM authorization; or with a bearer token (``--token`` / ``TASKLANE_TOKEN``) when
it uses JWT. A local stack (``tasklane dev``) takes neither.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from tasklane.errors import TasklaneError

#: ``https://{api-id}.execute-api.{region}.amazonaws.com``: where the region comes from.
_EXECUTE_API = re.compile(r"^[a-z0-9]+\.execute-api\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?$")


class ApiError(TasklaneError):
    """The API answered with an error (``status``, and its ``code`` and message)."""

    code = "api_error"

    def __init__(self, status: int, body: Any) -> None:
        error = (body or {}).get("error", {}) if isinstance(body, dict) else {}
        self.status = status
        self.error_code = error.get("code", "error")
        super().__init__(f"{status} {self.error_code}: {error.get('message', body)}")


@dataclass
class Api:
    """One API to call: its base URL and how to authenticate."""

    url: str
    token: str | None = None
    sign: bool = False
    region: str | None = None

    @classmethod
    def to(cls, url: str, token: str | None = None) -> Api:
        """The API at ``url``: SigV4 for an ``execute-api`` URL without a token."""
        url = url.rstrip("/")
        host = urllib.parse.urlsplit(url).hostname or ""
        match = _EXECUTE_API.match(host)
        if token:
            return cls(url, token=token)
        if match:
            return cls(url, sign=True, region=match.group(1))
        return cls(url)

    def request(self, method: str, path: str, *args: Any, **kwargs: Any) -> Any:
        """The JSON answer (:meth:`answer`'s, without its status)."""
        return self.answer(method, path, *args, **kwargs)[1]

    def answer(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: dict | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """The status and JSON answer (a 200 and a 202 say different things of a submission);
        :class:`ApiError` for an error status."""
        query = {k: v for k, v in (query or {}).items() if v is not None}
        target = path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        data = json.dumps(body).encode() if body is not None else None
        headers = {"content-type": "application/json"} | (headers or {})
        status, _, raw = self.send(method, target, data, headers)
        try:
            answer = json.loads(raw or b"null")
        except ValueError:
            answer = {"error": {"code": "http", "message": raw[:200].decode(errors="replace")}}
        if status >= 400:
            raise ApiError(status, answer)
        return status, answer

    def send(
        self, method: str, target: str, data: bytes | None, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        """One request to ``target`` (a path and query under the API's URL), authenticated:
        its status, headers and body, whatever the status."""
        url = self.url + target
        headers = {"accept": "application/json"} | {k.lower(): v for k, v in headers.items()}
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        if self.sign:
            headers = sign(method, url, data, headers, self.region or "us-east-1")
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=35) as response:
                return response.status, dict(response.headers.items()), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers.items()), exc.read()
        except urllib.error.URLError as exc:
            raise TasklaneError(f"cannot reach {self.url} ({exc.reason})") from None


def sign(
    method: str,
    url: str,
    data: bytes | None,
    headers: dict[str, str],
    region: str,
    credentials: Any = None,
) -> dict[str, str]:
    """``headers`` with SigV4's (``authorization``, ``x-amz-date``, a session token if any),
    for API Gateway (``execute-api``) in ``region``, from the standard credential chain."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.session import Session

    credentials = credentials or Session().get_credentials()
    if credentials is None:
        raise TasklaneError(
            "no AWS credentials found (environment, profile, SSO or role) to sign the request; "
            "for a JWT API pass --token"
        )
    request = AWSRequest(method=method, url=url, data=data, headers=dict(headers))
    SigV4Auth(credentials.get_frozen_credentials(), "execute-api", region).add_auth(request)
    return dict(request.headers.items())
