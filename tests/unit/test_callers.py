"""Who a request's caller is, from the identity API Gateway passes (pure)."""

from __future__ import annotations

import pytest
from tasklane.callers import LOCAL, NotAuthenticated, from_authorizer
from tasklane.local.events import iam_identity, jwt_identity

ROLE = "arn:aws:iam::123456789012:role/OpsRole"
APP = "arn:aws:iam::123456789012:role/AppRole"
OPS_X = "arn:aws:iam::123456789012:role/OpsRoleX"
OTHER_ACCOUNT = "arn:aws:iam::999999999999:role/OpsRole"
CHINA = "arn:aws-cn:iam::123456789012:role/OpsRole"


@pytest.mark.parametrize(
    ("arn", "owner", "operator"),
    [
        # every session of a role is the role: replicas of one service are one owner
        ("arn:aws:sts::123456789012:assumed-role/OpsRole/carol", ROLE, True),
        ("arn:aws:sts::123456789012:assumed-role/AppRole/4f1a9c0e", APP, False),
        ("arn:aws:sts::123456789012:assumed-role/AppRole/9b3e77d2", APP, False),
        (ROLE, ROLE, True),
        ("arn:aws:sts::123456789012:assumed-role/OpsRoleX/carol", OPS_X, False),  # no prefixes
        ("arn:aws:sts::999999999999:assumed-role/OpsRole/carol", OTHER_ACCOUNT, False),
        ("arn:aws:iam::123456789012:user/bob", "arn:aws:iam::123456789012:user/bob", False),
        ("arn:aws-cn:sts::123456789012:assumed-role/OpsRole/c", CHINA, False),  # a partition
    ],
)
def test_iam_callers_are_principals_and_operators_are_named(arn, owner, operator):
    caller = from_authorizer("AWS_IAM", iam_identity(arn), [ROLE])
    assert caller.owner == owner and caller.operator is operator
    assert caller.sees(owner) and caller.sees("someone else") is operator
    assert caller.scope == (None if operator else owner)


def test_an_operator_role_may_be_named_with_its_path():
    """SSO permission sets' roles live under a path; their sessions' ARNs carry none."""
    role = (
        "arn:aws:iam::123456789012:role/aws-reserved/sso.amazonaws.com/eu-west-1/"
        "AWSReservedSSO_Ops_0123456789abcdef"
    )
    session = "arn:aws:sts::123456789012:assumed-role/AWSReservedSSO_Ops_0123456789abcdef/c@x.io"
    assert from_authorizer("AWS_IAM", iam_identity(session), [role]).operator
    assert not from_authorizer("AWS_IAM", iam_identity(session), [ROLE]).operator


def test_identity_pool_users_are_each_their_own_identity():
    """A Cognito identity pool's users all sign as one role's session: the identity tells them
    apart."""

    def pool_user(identity_id: str) -> dict:
        arn = "arn:aws:sts::123456789012:assumed-role/Cognito_Auth_Role/CognitoIdentityCredentials"
        ident = iam_identity(arn)
        ident["iam"]["cognitoIdentity"] = {"identityId": identity_id, "amr": ["authenticated"]}
        return ident

    one = from_authorizer("AWS_IAM", pool_user("eu-west-1:aaaa"), [])
    two = from_authorizer("AWS_IAM", pool_user("eu-west-1:bbbb"), [])
    assert one.owner == "cognito-identity:eu-west-1:aaaa" and one.owner != two.owner


def test_jwt_callers_are_issuer_and_subject_and_operators_by_scope_or_cognito_group():
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
    "claims",
    [
        # a group whose name holds the operators' group as a word is not that group
        {"cognito:groups": ["support,Admins"]},
        {"groups": ["Read-only Admins"]},  # rendered "[Read-only Admins]": ambiguous, ignored
        {"groups": "Admins"},  # another IdP's groups as a string: not trusted
        {"scope": "Admins-read"},
    ],
)
def test_no_operator_grant_is_read_into_a_name_that_merely_contains_it(claims):
    token = jwt_identity({"iss": "https://i.example", "sub": "eve"} | claims)
    assert not from_authorizer("JWT", token, ["Admins"]).operator


def test_another_idps_groups_count_when_they_arrive_as_a_list():
    token = {"jwt": {"claims": {"iss": "i", "sub": "s", "groups": ["Read-only Admins"]}}}
    assert from_authorizer("JWT", token, ["Read-only Admins"]).operator
    assert not from_authorizer("JWT", token, ["Admins"]).operator


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
