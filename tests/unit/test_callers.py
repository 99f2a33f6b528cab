"""Who a request's caller is, from the identity API Gateway passes (pure)."""

from __future__ import annotations

import pytest
from tasklane.callers import LOCAL, NotAuthenticated, from_authorizer
from tasklane.local.events import iam_identity, jwt_identity

ROLE = "arn:aws:iam::123456789012:role/OpsRole"


@pytest.mark.parametrize(
    ("arn", "operator"),
    [
        ("arn:aws:sts::123456789012:assumed-role/OpsRole/carol", True),  # a session of the role
        (ROLE, True),
        ("arn:aws:sts::123456789012:assumed-role/OpsRoleX/carol", False),  # not a prefix match
        ("arn:aws:sts::999999999999:assumed-role/OpsRole/carol", False),  # another account
        ("arn:aws:iam::123456789012:user/bob", False),
        ("arn:aws-cn:sts::123456789012:assumed-role/OpsRole/carol", False),  # another partition
    ],
)
def test_iam_callers_own_what_they_submit_and_operators_are_named(arn, operator):
    caller = from_authorizer("AWS_IAM", iam_identity(arn), [ROLE])
    assert caller.owner == arn and caller.operator is operator
    assert caller.sees(arn) and caller.sees("someone else") is operator
    assert caller.scope == (None if operator else arn)


def test_jwt_callers_are_issuer_and_subject_and_operators_by_group_or_scope():
    iss = "https://issuer.example"
    ann = from_authorizer("JWT", jwt_identity({"iss": iss, "sub": "ann"}), ["ops"])
    assert ann.owner == f"{iss}#ann" and not ann.operator
    grouped = jwt_identity({"iss": iss, "sub": "x", "cognito:groups": ["staff", "ops"]})
    assert from_authorizer("JWT", grouped, ["ops"]).operator
    scoped = jwt_identity({"iss": iss, "sub": "x", "scope": "openid tasklane/operate"})
    assert from_authorizer("JWT", scoped, ["tasklane/operate"]).operator
    granted = jwt_identity({"iss": iss, "sub": "x"}, scopes=["tasklane/operate"])
    assert from_authorizer("JWT", granted, ["tasklane/operate"]).operator
    assert not from_authorizer("JWT", grouped, ["operators"]).operator
    # the same subject from another issuer is another caller
    other = from_authorizer("JWT", jwt_identity({"iss": "https://b.example", "sub": "ann"}), [])
    assert other.owner != ann.owner


@pytest.mark.parametrize(
    ("mode", "authorizer"),
    [
        ("AWS_IAM", None),
        ("AWS_IAM", {"jwt": {"claims": {"iss": "i", "sub": "s"}}}),
        ("JWT", None),
        ("JWT", {"jwt": {"claims": {"iss": "i"}}}),  # no subject
        ("JWT", iam_identity("arn:aws:iam::123456789012:user/bob")),
    ],
)
def test_a_missing_identity_is_refused_never_a_default_one(mode, authorizer):
    with pytest.raises(NotAuthenticated):
        from_authorizer(mode, authorizer, [])


def test_the_local_stack_has_one_operator():
    assert from_authorizer("NONE", None, []) is LOCAL and LOCAL.operator
