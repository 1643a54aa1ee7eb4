"""Configuration of the public-API source: which API, how to authenticate and page through it.

The auth secret comes from an environment variable bound with ``dg.EnvVar`` (resolved at run time,
shown in the UI by name only) or from an SSM Parameter Store SecureString read with decryption at
run time through ``aws.client("ssm")`` — dagster-aws's ``ParameterStoreResource`` ignores
``AWS_ENDPOINT_URL``, so it would miss the local moto server. The secret is never logged: errors
mask it and cross-field checks run here, not in a pydantic model validator whose error would echo
every input value.
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import urlsplit

import dagster as dg
from pydantic import Field, field_validator

from feedlot_pipeline.api_source.client import PAGINATION_MODES, FetchSpec, redact_url
from feedlot_pipeline.core.aws import client
from feedlot_pipeline.core.lake import safe_token

NAME_LIMIT = 64

# Every environment variable the source reads, with its default ("" = none) and meaning.
API_ENV: dict[str, tuple[str, str]] = {
    "FEEDLOT_API_NAME": ("public_api", "snapshot name: api_snapshots/<name>/… (A-Z a-z 0-9 _ -)"),
    "FEEDLOT_API_URL": ("", "URL of the JSON API (required when the snapshot runs)"),
    "FEEDLOT_API_HEADERS": ("{}", "extra request headers as a JSON object (no secrets here)"),
    "FEEDLOT_API_AUTH_HEADER": ("", "header that carries the credential, e.g. Authorization"),
    "FEEDLOT_API_AUTH_PREFIX": ("", "text before the credential, e.g. 'Bearer '"),
    "FEEDLOT_API_AUTH_VALUE": ("", "the credential itself (bound with dg.EnvVar)"),
    "FEEDLOT_API_AUTH_SSM_PARAMETER": ("", "SSM SecureString holding the credential instead"),
    "FEEDLOT_API_PAGINATION": ("none", "none | page | next_link"),
    "FEEDLOT_API_PAGE_PARAM": ("page", "query parameter of the page number"),
    "FEEDLOT_API_NEXT_PATH": ("next", "dotted JSON path of the next-page link"),
    "FEEDLOT_API_RECORDS_PATH": ("", "dotted JSON path of the records list ('' = the body)"),
    "FEEDLOT_API_TIMEOUT_SECONDS": ("30", "time budget of one request"),
    "FEEDLOT_API_MAX_RETRIES": ("4", "retries after the first attempt of each request"),
    "FEEDLOT_API_BACKOFF_SECONDS": ("1", "base of the exponential backoff"),
    "FEEDLOT_API_MAX_PAGES": ("1000", "safety bound on pages per pull"),
    "FEEDLOT_API_CRON": ("0 6 * * *", "cron (UTC) of api_snapshot_schedule"),
}


def api_env(name: str) -> str:
    """An FEEDLOT_API_* setting: the environment first, then the default in API_ENV."""
    value = os.environ.get(name)
    return value if value not in (None, "") else API_ENV[name][0]


def check_name(name: str) -> str:
    """A snapshot name that is one safe key segment: no '/', no '..', nothing to escape with."""
    if not name or len(name) > NAME_LIMIT or safe_token(name, NAME_LIMIT) != name:
        raise ValueError(
            f"invalid API name {name!r}: 1-{NAME_LIMIT} characters from A-Z a-z 0-9 _ - only"
        )
    return name


class ApiConfigError(ValueError):
    """The source's configuration cannot work; the message names the setting (never a secret)."""


class PublicApiResource(dg.ConfigurableResource):
    """One JSON HTTP API pulled into the raw zone under api_snapshots/<name>/."""

    name: str = Field(description="Snapshot name, one key segment: A-Z a-z 0-9 _ - only.")
    url: str = Field(description="First page URL (http or https).")
    headers: dict[str, str] = Field(
        default_factory=dict, description="Extra request headers; visible in the UI, no secrets."
    )
    auth_header: str | None = Field(
        default=None, description="Header carrying the credential (e.g. Authorization, X-Api-Key)."
    )
    auth_prefix: str = Field(default="", description="Text before the credential, e.g. 'Bearer '.")
    auth_value: str | None = Field(
        default=None, description="The credential; bind it with dg.EnvVar, never a literal."
    )
    auth_ssm_parameter: str | None = Field(
        default=None, description="SSM parameter (SecureString) holding the credential."
    )
    pagination: str = Field(default="none", description="none | page | next_link")
    page_param: str = Field(default="page", description="Query parameter of the page number.")
    page_start: int = Field(default=1, description="Number of the first page.")
    page_size_param: str | None = Field(default=None, description="Query parameter of page size.")
    page_size: int | None = Field(default=None, description="Page size to ask for.")
    next_path: str = Field(default="next", description="Dotted JSON path of the next-page link.")
    records_path: str = Field(
        default="", description="Dotted JSON path of the records list; '' when the body is it."
    )
    timeout_seconds: float = Field(default=30.0, description="Time budget of one request.")
    max_retries: int = Field(default=4, description="Retries after each request's first try.")
    backoff_base_seconds: float = Field(default=1.0, description="Base of exponential backoff.")
    backoff_max_seconds: float = Field(
        default=60.0, description="Cap of one wait, Retry-After included."
    )
    max_pages: int = Field(default=1000, description="Safety bound: more pages fails the pull.")

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return check_name(value)

    @field_validator("pagination")
    @classmethod
    def _valid_pagination(cls, value: str) -> str:
        if value not in PAGINATION_MODES:
            raise ValueError(f"pagination must be one of {PAGINATION_MODES}")
        return value

    @field_validator("timeout_seconds", "backoff_base_seconds", "backoff_max_seconds")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be > 0")
        return value

    @field_validator("max_retries")
    @classmethod
    def _not_negative(cls, value: int) -> int:
        if value < 0:
            raise ValueError("must be >= 0")
        return value

    @field_validator("max_pages")
    @classmethod
    def _at_least_one(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be >= 1")
        return value

    def source_url(self) -> str:
        """The URL as it may be shown: credentials and secret-looking query values masked."""
        return redact_url(self.url)

    def _credential(self) -> str | None:
        if self.auth_value and self.auth_ssm_parameter:
            raise ApiConfigError("set auth_value or auth_ssm_parameter, not both")
        if (self.auth_value or self.auth_ssm_parameter) and not self.auth_header:
            raise ApiConfigError("auth_header is required with auth_value/auth_ssm_parameter")
        if self.auth_value:
            return self.auth_value.strip()
        if not self.auth_ssm_parameter:
            return None
        ssm = client("ssm")
        try:
            found = ssm.get_parameter(Name=self.auth_ssm_parameter, WithDecryption=True)
        except ssm.exceptions.ParameterNotFound:
            raise ApiConfigError(
                f"SSM parameter {self.auth_ssm_parameter!r} does not exist"
            ) from None
        # Stripped: a stray newline would make requests reject the header, echoing its value.
        return found["Parameter"]["Value"].strip()

    def fetch_spec(self) -> FetchSpec:
        """The pull's settings with the credential resolved (reads SSM when configured)."""
        if urlsplit(self.url).scheme.lower() not in ("http", "https"):
            raise ApiConfigError(f"url must start with http:// or https://: {self.source_url()!r}")
        headers = dict(self.headers)
        sensitive: tuple[str, ...] = ()
        secrets: tuple[str, ...] = ()
        credential = self._credential()
        if credential and self.auth_header:
            headers[self.auth_header] = f"{self.auth_prefix}{credential}"
            sensitive = (self.auth_header,)
            secrets = (credential,)
        return FetchSpec(
            url=self.url,
            headers=headers,
            pagination=self.pagination,
            page_param=self.page_param,
            page_start=self.page_start,
            page_size_param=self.page_size_param,
            page_size=self.page_size,
            next_path=self.next_path,
            records_path=self.records_path,
            timeout_seconds=self.timeout_seconds,
            max_retries=self.max_retries,
            backoff_base_seconds=self.backoff_base_seconds,
            backoff_max_seconds=self.backoff_max_seconds,
            max_pages=self.max_pages,
            sensitive_headers=sensitive,
            secret_values=secrets,
        )


def build_public_api_resource() -> PublicApiResource:
    """The resource bound to the FEEDLOT_API_* environment (see API_ENV).

    URL and credential are ``dg.EnvVar``s: resolved when a run starts, so the code location loads
    without them and the UI shows their names, not their values. The rest is read at load time.
    """
    headers: Any = json.loads(api_env("FEEDLOT_API_HEADERS"))
    if not isinstance(headers, dict):
        raise ValueError("FEEDLOT_API_HEADERS must be a JSON object")
    return PublicApiResource(
        name=api_env("FEEDLOT_API_NAME"),
        url=dg.EnvVar("FEEDLOT_API_URL"),
        headers={str(k): str(v) for k, v in headers.items()},
        auth_header=api_env("FEEDLOT_API_AUTH_HEADER") or None,
        auth_prefix=api_env("FEEDLOT_API_AUTH_PREFIX"),
        auth_value=dg.EnvVar("FEEDLOT_API_AUTH_VALUE")
        if os.environ.get("FEEDLOT_API_AUTH_VALUE")
        else None,
        auth_ssm_parameter=api_env("FEEDLOT_API_AUTH_SSM_PARAMETER") or None,
        pagination=api_env("FEEDLOT_API_PAGINATION"),
        page_param=api_env("FEEDLOT_API_PAGE_PARAM"),
        next_path=api_env("FEEDLOT_API_NEXT_PATH"),
        records_path=api_env("FEEDLOT_API_RECORDS_PATH"),
        timeout_seconds=float(api_env("FEEDLOT_API_TIMEOUT_SECONDS")),
        max_retries=int(api_env("FEEDLOT_API_MAX_RETRIES")),
        backoff_base_seconds=float(api_env("FEEDLOT_API_BACKOFF_SECONDS")),
        max_pages=int(api_env("FEEDLOT_API_MAX_PAGES")),
    )
