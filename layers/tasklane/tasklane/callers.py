"""Who is calling: each caller sees and acts on only the tasks it submitted; operators on all.

A task records its submitter as its ``owner``. Through the HTTP API the owner is the identity
API Gateway has already authenticated: the IAM principal's ARN (``userArn``, for a role the
session: ``arn:aws:sts::…:assumed-role/ROLE/SESSION``), or a JWT's issuer and subject. Another
owner's task is answered as if it did not exist (404), so ids cannot be probed. Operators
(``OPERATORS``: IAM ARNs, or JWT groups or scopes) see everything: the console and bulk retry
are theirs. Idempotency keys are each owner's own.

Python code that shares the database is trusted as the database is: it reads any task, and
records an owner only when it passes one (``''`` otherwise: no one in particular, seen by
operators).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tasklane.errors import TasklaneError

#: An assumed-role session's ARN, and the role's own ARN that an operator list may name.
_SESSION = re.compile(r"^arn:(aws[a-z-]*):sts::(\d{12}):assumed-role/([^/]+)/[^/]+$")


class NotAuthenticated(TasklaneError):
    """The request carries no identity where the API requires one (a route left without its
    authorizer): refused, never served as anyone."""

    code = "not_authenticated"


@dataclass(frozen=True, slots=True)
class Caller:
    """One caller: the owner it submits as, and whether it is an operator (sees all)."""

    owner: str
    operator: bool = False

    def sees(self, owner: str) -> bool:
        return self.operator or owner == self.owner

    @property
    def scope(self) -> str | None:
        """The owner to filter on: None for an operator (everyone's tasks)."""
        return None if self.operator else self.owner


#: The local stack has no authorizer: one local owner, who operates it.
LOCAL = Caller("local", operator=True)


def _names(value: Any) -> set[str]:
    """A claim's values: a list, or API Gateway's rendering of one (``"[a b]"``), or a
    space- or comma-separated string."""
    if isinstance(value, list | tuple):
        return {str(v) for v in value}
    if isinstance(value, str):
        return {v for v in re.split(r"[\s,]+", value.strip("[]")) if v}
    return set()


def _role_of(arn: str) -> str | None:
    match = _SESSION.match(arn)
    if match is None:
        return None
    partition, account, role = match.groups()
    return f"arn:{partition}:iam::{account}:role/{role}"


def from_authorizer(
    authorization: str, authorizer: Mapping[str, Any] | None, operators: Iterable[str]
) -> Caller:
    """The caller of an HTTP API request, from ``requestContext.authorizer`` as API Gateway
    passes it, for the API's ``authorization`` (``AWS_IAM``, ``JWT``, or ``NONE`` for the
    local stack)."""
    operators = {o.strip() for o in operators if o.strip()}
    authorizer = authorizer or {}
    if authorization == "NONE":
        return LOCAL
    if authorization == "AWS_IAM":
        arn = (authorizer.get("iam") or {}).get("userArn")
        if not arn:
            raise NotAuthenticated("this request carries no IAM identity")
        return Caller(arn, operator=arn in operators or _role_of(arn) in operators)
    if authorization == "JWT":
        jwt = authorizer.get("jwt") or {}
        claims = jwt.get("claims") or {}
        if not claims.get("sub") or not claims.get("iss"):
            raise NotAuthenticated("this request carries no token subject")
        granted = (
            _names(claims.get("cognito:groups"))
            | _names(claims.get("groups"))
            | _names(claims.get("scope"))
            | _names(jwt.get("scopes"))
        )
        return Caller(f"{claims['iss']}#{claims['sub']}", operator=bool(granted & operators))
    raise NotAuthenticated(f"unknown API_AUTHORIZATION {authorization!r}")
