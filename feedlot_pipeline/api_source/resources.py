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
from typing import Any
from urllib.parse import urlsplit

import dagster as dg
from pydantic import Field, field_validator

from feedlot_pipeline.api_source.client import PAGINATION_MODES, FetchSpec, redact_url
from feedlot_pipeline.core.aws import client
from feedlot_pipeline.core.lake import safe_token
from feedlot_pipeline.core.settings import PublicApiSettings

NAME_LIMIT = 64


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
    """The resource bound to the FEEDLOT_API_* settings (core.settings.PublicApiSettings).

    URL and credential are ``dg.EnvVar``s: resolved when a run starts, so the code location loads
    without them and the UI shows their names, not their values. The rest is read at load time.
    """
    s = PublicApiSettings()
    headers: Any = json.loads(s.api_headers)
    if not isinstance(headers, dict):
        raise ValueError("FEEDLOT_API_HEADERS must be a JSON object")
    return PublicApiResource(
        name=s.api_name,
        url=dg.EnvVar(PublicApiSettings.variable("api_url")),
        headers={str(k): str(v) for k, v in headers.items()},
        auth_header=s.api_auth_header,
        auth_prefix=s.api_auth_prefix,
        auth_value=dg.EnvVar(PublicApiSettings.variable("api_auth_value"))
        if s.api_auth_value is not None
        else None,
        auth_ssm_parameter=s.api_auth_ssm_parameter,
        pagination=s.api_pagination,
        page_param=s.api_page_param,
        next_path=s.api_next_path,
        records_path=s.api_records_path,
        timeout_seconds=s.api_timeout_seconds,
        max_retries=s.api_max_retries,
        backoff_base_seconds=s.api_backoff_seconds,
        max_pages=s.api_max_pages,
    )
