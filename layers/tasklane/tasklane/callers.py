"""Who is calling: each caller sees and acts on only the tasks it submitted; operators on all.

A task records its submitter as its ``owner``. Through the HTTP API the owner is the identity
API Gateway has already authenticated:

- IAM: the principal. An IAM user is its ARN; a role's sessions are the role
  (``arn:aws:iam::ACCOUNT:role/NAME``): the session name is the caller's own choice (or an ECS
  task's, an instance's id), so it cannot tell callers apart, and the replicas of one service
  are one owner. A Cognito identity pool's users all sign as one role: each is its identity
  (``cognito-identity:ID``).
- JWT: the token's issuer and subject, ``"{iss}#{sub}"``.

Another owner's task is answered as if it did not exist (404), so ids cannot be probed.
Operators (``OPERATORS``) see everything: IAM user or role ARNs (a role's path may be given or
not), or, with JWT, OAuth scopes (granted by the authorizer, or in the token's ``scope``) or
Cognito groups (``cognito:groups``). Other IdPs' group claims count only when they arrive as a
real list: API Gateway renders a list claim as ``"[a b]"``, which cannot be split safely when a
group's name may hold a space (Cognito's cannot). Idempotency keys are each owner's own.

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

#: An assumed-role session's ARN: its partition, account and role name.
_SESSION = re.compile(r"^arn:(aws[a-z-]*):sts::(\d{12}):assumed-role/([^/]+)/[^/]+$")
#: A role's ARN, with or without a path.
_ROLE = re.compile(r"^arn:(aws[a-z-]*):iam::(\d{12}):role/(?:.*/)?([^/]+)$")


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


def _principal(arn: str) -> str:
    """The principal an ARN names: a role (without its path) for a role or a role's session,
    else the ARN itself (an IAM user, the account root)."""
    for pattern in (_SESSION, _ROLE):
        match = pattern.match(arn)
        if match is not None:
            partition, account, role = match.groups()
            return f"arn:{partition}:iam::{account}:role/{role}"
    return arn


def _groups(claims: Mapping[str, Any]) -> set[str]:
    """Cognito's groups, whose names hold no whitespace, so that API Gateway's ``"[a b]"``
    rendering splits safely; another IdP's ``groups`` only as a real list."""
    found: set[str] = set()
    cognito = claims.get("cognito:groups")
    if isinstance(cognito, list | tuple):
        found |= {str(g) for g in cognito}
    elif isinstance(cognito, str):
        found |= set(cognito.strip("[]").split())
    other = claims.get("groups")
    if isinstance(other, list | tuple):
        found |= {str(g) for g in other}
    return found


def _scopes(jwt: Mapping[str, Any]) -> set[str]:
    """OAuth scopes: the authorizer's list, and the token's ``scope`` (space-separated; a
    scope holds no space)."""
    granted = {str(s) for s in jwt.get("scopes") or []}
    scope = (jwt.get("claims") or {}).get("scope")
    return granted | (set(scope.split()) if isinstance(scope, str) else set())


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
        iam = authorizer.get("iam") or {}
        arn = iam.get("userArn")
        if not arn:
            raise NotAuthenticated("this request carries no IAM identity")
        principal = _principal(arn)
        operator = principal in {_principal(o) for o in operators}
        identity = (iam.get("cognitoIdentity") or {}).get("identityId")
        owner = f"cognito-identity:{identity}" if identity else principal
        return Caller(owner, operator=operator)
    if authorization == "JWT":
        jwt = authorizer.get("jwt") or {}
        claims = jwt.get("claims") or {}
        if not claims.get("sub") or not claims.get("iss"):
            raise NotAuthenticated("this request carries no token subject")
        granted = _groups(claims) | _scopes(jwt)
        return Caller(f"{claims['iss']}#{claims['sub']}", operator=bool(granted & operators))
    raise NotAuthenticated(f"unknown API_AUTHORIZATION {authorization!r}")
