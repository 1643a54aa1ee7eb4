"""The REST API proxy event (payload 1.0) that API Gateway sends a Lambda for one HTTP request."""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime, timezone
from urllib.parse import parse_qs

from feedlot_pipeline.local.lambda_runtime import ACCOUNT
from feedlot_pipeline.local.services import LOOPBACK

DEFAULT_STAGE = "local"
ROUTES: dict[str, tuple[str, ...]] = {"/consumo": ("POST",)}


def key_id(key: str) -> str:
    """A stable, non-secret id for the key (API Gateway logs the key id, never the key)."""
    return hashlib.sha256(key.encode()).hexdigest()[:10]


def to_proxy_event(
    *,
    method: str,
    path: str,
    query: str,
    header_items: list[tuple[str, str]],
    body: bytes | None,
    request_id: str,
    api_key: str | None,
    source_ip: str,
    stage: str = DEFAULT_STAGE,
    api_id: str = "local",
    host: str = LOOPBACK,
) -> dict:
    """The REST API proxy event (payload 1.0) API Gateway sends the Lambda for one request."""
    headers: dict[str, str] = {}
    multi_headers: dict[str, list[str]] = {}
    for name, value in header_items:
        headers[name] = value  # API Gateway keeps the last value in ``headers``
        multi_headers.setdefault(name, []).append(value)
    multi_query = parse_qs(query, keep_blank_values=True) if query else {}
    if body is None or body == b"":
        text, encoded = None, False
    else:
        try:
            text, encoded = body.decode("utf-8"), False
        except UnicodeDecodeError:
            text, encoded = base64.b64encode(body).decode("ascii"), True
    now = datetime.now(timezone.utc)
    resource = path if path in ROUTES else "/{proxy+}"
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": headers or None,
        "multiValueHeaders": multi_headers or None,
        "queryStringParameters": {k: v[-1] for k, v in multi_query.items()} or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourceId": hashlib.sha1(resource.encode()).hexdigest()[:6],
            "resourcePath": resource,
            "httpMethod": method,
            "extendedRequestId": request_id[:16],
            "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "path": f"/{stage}{path}",
            "accountId": ACCOUNT,
            "protocol": "HTTP/1.1",
            "stage": stage,
            "domainPrefix": api_id,
            "requestTimeEpoch": int(now.timestamp() * 1000),
            "requestId": request_id,
            "identity": {
                "cognitoIdentityPoolId": None,
                "accountId": None,
                "cognitoIdentityId": None,
                "caller": None,
                "sourceIp": source_ip,
                "principalOrgId": None,
                "accessKey": None,
                "cognitoAuthenticationType": None,
                "cognitoAuthenticationProvider": None,
                "userArn": None,
                "userAgent": headers.get("User-Agent") or headers.get("user-agent"),
                "user": None,
                "apiKey": api_key,
                "apiKeyId": key_id(api_key) if api_key else None,
            },
            "domainName": host,
            "apiId": api_id,
        },
        "body": text,
        "isBase64Encoded": encoded,
    }
