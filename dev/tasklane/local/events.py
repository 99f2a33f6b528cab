"""Real Lambda event shapes, built locally: API Gateway HTTP API (v2.0), SQS batches, schedules.

The local stack and ``tasklane invoke`` hand these to the unmodified function handlers, so a
handler cannot tell the emulation from AWS by the event's shape.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

ACCOUNT_ID = "123456789012"


@dataclass
class LambdaContext:
    """The fields and method of the Lambda context object, with a real deadline."""

    function_name: str = "local"
    memory_limit_in_mb: int = 128
    timeout_seconds: float = 30
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = ""
    log_stream_name: str = ""
    region: str = "us-east-1"
    _deadline: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.timeout_seconds
        self.log_group_name = self.log_group_name or f"/aws/lambda/{self.function_name}"
        self.log_stream_name = self.log_stream_name or f"local/[$LATEST]{uuid.uuid4().hex}"

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{ACCOUNT_ID}:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def http_event(
    method: str,
    path: str,
    *,
    route_key: str | None = None,
    path_parameters: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    query: str = "",
    body: bytes | str | None = None,
    stage: str = "$default",
    authorizer: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An API Gateway HTTP API payload-format-2.0 event (header names lower-cased, as AWS does);
    ``authorizer``: the identity an authorizer put in ``requestContext`` (:func:`iam_identity`,
    :func:`jwt_identity`), none as the local stack has none."""
    now = datetime.now(UTC)
    raw = body.encode() if isinstance(body, str) else body
    is_text = True
    if raw is not None:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            is_text = False
            text = base64.b64encode(raw).decode()
    hdrs = {k.lower(): v for k, v in (headers or {}).items()}
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key or f"{method} {path}",
        "rawPath": path,
        "rawQueryString": query,
        "headers": hdrs,
        "requestContext": {
            "accountId": ACCOUNT_ID,
            "apiId": "local",
            "domainName": hdrs.get("host", "localhost"),
            "domainPrefix": "localhost",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": hdrs.get("user-agent", ""),
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": route_key or f"{method} {path}",
            "stage": stage,
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "isBase64Encoded": not is_text,
    }
    if authorizer is not None:
        event["requestContext"]["authorizer"] = authorizer
    if "cookie" in hdrs:
        event["cookies"] = [c.strip() for c in hdrs["cookie"].split(";")]
    if query:
        event["queryStringParameters"] = dict(parse_qsl(query, keep_blank_values=True))
    if path_parameters:
        event["pathParameters"] = dict(path_parameters)
    if raw is not None:
        event["body"] = text
    return event


def iam_identity(user_arn: str) -> dict[str, Any]:
    """``requestContext.authorizer`` as API Gateway fills it for a SigV4-signed request (IAM)."""
    account = user_arn.split(":")[4]
    return {
        "iam": {
            "accessKey": "ASIAEXAMPLE",
            "accountId": account,
            "callerId": "AROAEXAMPLE:session",
            "cognitoIdentity": None,
            "principalOrgId": None,
            "userArn": user_arn,
            "userId": "AROAEXAMPLE:session",
        }
    }


def jwt_identity(claims: dict[str, Any], scopes: list[str] | None = None) -> dict[str, Any]:
    """``requestContext.authorizer`` as a JWT authorizer fills it (claims as strings; a list
    claim rendered ``"[a b]"``, as API Gateway renders it)."""
    rendered = {
        k: f"[{' '.join(map(str, v))}]" if isinstance(v, list) else str(v)
        for k, v in claims.items()
    }
    return {"jwt": {"claims": rendered, "scopes": scopes}}


def queue_arn(name: str, region: str = "us-east-1") -> str:
    return f"arn:aws:sqs:{region}:{ACCOUNT_ID}:{name}"


def sqs_record(message: Mapping[str, Any], arn: str, region: str = "us-east-1") -> dict[str, Any]:
    """One Lambda SQS record from a ReceiveMessage result (with all attributes requested)."""
    attrs = message.get("Attributes", {})
    now_ms = str(int(time.time() * 1000))
    record_attrs = {
        "ApproximateReceiveCount": attrs.get("ApproximateReceiveCount", "1"),
        "SentTimestamp": attrs.get("SentTimestamp", now_ms),
        "SenderId": attrs.get("SenderId", ACCOUNT_ID),
        "ApproximateFirstReceiveTimestamp": attrs.get("ApproximateFirstReceiveTimestamp", now_ms),
    }
    for key in ("MessageGroupId", "MessageDeduplicationId", "SequenceNumber"):
        if key in attrs:
            record_attrs[key] = attrs[key]
    message_attributes = {
        name: {
            "stringValue": value.get("StringValue"),
            "binaryValue": value.get("BinaryValue"),
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": value.get("DataType", "String"),
        }
        for name, value in message.get("MessageAttributes", {}).items()
    }
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": record_attrs,
        "messageAttributes": message_attributes,
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": arn,
        "awsRegion": region,
    }


def sqs_event(messages: Sequence[Mapping[str, Any]], arn: str, region: str = "us-east-1") -> dict:
    return {"Records": [sqs_record(m, arn, region) for m in messages]}


def schedule_event(rule_arn: str, region: str = "us-east-1") -> dict[str, Any]:
    """An EventBridge scheduled event, as a Schedule/ScheduleV2 event source delivers it."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT_ID,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [rule_arn],
        "detail": {},
    }
