"""HTTP fetching for the public-API source: retries, pagination, records streamed to JSON Lines.

Free of Dagster and AWS on purpose, so it can be exercised against any HTTP server. The rules:

- retry (exponential backoff with jitter, Retry-After honoured but capped) on connection errors,
  timeouts, 429 and 5xx; never on other 4xx, which a retry cannot fix;
- every error names the URL with secrets masked, the HTTP status and a short body excerpt, and
  carries no exception chain (a requests error's text holds the raw URL);
- records go to a file one per line as each page arrives, so memory holds one page, not the pull;
- the configured auth header never follows a redirect or a next link to another origin.
"""

from __future__ import annotations

import email.utils
import json
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timezone
from typing import IO, Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import requests

PAGINATION_MODES = ("none", "page", "next_link")
# One page is parsed in memory; a body beyond this is a misconfiguration, not a page.
MAX_PAGE_BYTES = 256 * 1024 * 1024
EXCERPT_CHARS = 200
MASK = "***"
_SECRET_QUERY = re.compile(
    r"(key|token|secret|passw|signature|sig|auth|credential|session)", re.IGNORECASE
)
_ANY_QUERY = re.compile(r"\?[^\s'\"]*")
RETRY_STATUSES = frozenset({429}) | frozenset(range(500, 600))


class ApiFetchError(RuntimeError):
    """A pull that cannot complete; the message is safe to log (secrets masked)."""

    def __init__(
        self,
        message: str,
        *,
        url: str,
        status: int | None = None,
        attempts: int = 0,
        excerpt: str = "",
    ) -> None:
        super().__init__(message)
        self.url = url
        self.status = status
        self.attempts = attempts
        self.excerpt = excerpt


@dataclass(frozen=True)
class FetchSpec:
    """Everything one pull needs, secrets resolved (see ``PublicApiResource.fetch_spec``)."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    pagination: str = "none"
    page_param: str = "page"
    page_start: int = 1
    page_size_param: str | None = None
    page_size: int | None = None
    next_path: str = "next"
    records_path: str = ""
    timeout_seconds: float = 30.0
    max_retries: int = 4
    backoff_base_seconds: float = 1.0
    backoff_max_seconds: float = 60.0
    max_pages: int = 1000
    # Header names whose values must not leave the configured origin or appear in messages.
    sensitive_headers: tuple[str, ...] = ()
    # Values masked wherever they might surface (the bare credential, besides its header).
    secret_values: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.pagination not in PAGINATION_MODES:
            raise ValueError(
                f"pagination must be one of {PAGINATION_MODES}, not {self.pagination!r}"
            )
        if urlsplit(self.url).scheme not in ("http", "https"):
            raise ValueError(f"url must be http(s): {redact_url(self.url)!r}")

    @property
    def secrets(self) -> tuple[str, ...]:
        wanted = {name.lower() for name in self.sensitive_headers}
        in_headers = tuple(v for k, v in self.headers.items() if k.lower() in wanted and v)
        in_query = tuple(
            v
            for k, v in parse_qsl(urlsplit(self.url).query)
            if _SECRET_QUERY.search(k) and len(v) >= 4
        )
        return in_headers + tuple(v for v in self.secret_values if v) + in_query


@dataclass
class SchemaTracker:
    """Top-level field → JSON types seen, and in how many records the field appeared."""

    types: dict[str, set[str]] = field(default_factory=dict)
    present: Counter[str] = field(default_factory=Counter)
    records: int = 0

    def observe(self, record: Any) -> None:
        self.records += 1
        items = record.items() if isinstance(record, dict) else [("$", record)]
        for name, value in items:
            self.types.setdefault(str(name), set()).add(json_type(value))
            self.present[str(name)] += 1

    def as_dict(self) -> dict[str, list[str]]:
        return {name: sorted(self.types[name]) for name in sorted(self.types)}

    def markdown(self) -> str:
        rows = ["| field | JSON types | present in |", "|---|---|---|"]
        for name, kinds in self.as_dict().items():
            cell = name.replace("|", "\\|")
            rows.append(f"| {cell} | {', '.join(kinds)} | {self.present[name]}/{self.records} |")
        return "\n".join(rows)


@dataclass(frozen=True)
class FetchResult:
    records: int
    pages: int
    bytes: int
    requests: int
    schema: SchemaTracker


def json_type(value: Any) -> str:
    """The JSON Schema type name of a parsed JSON value (bool checked before int on purpose)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def redact_url(url: str, secrets: Iterable[str] = ()) -> str:
    """The URL fit for logs and metadata: no user:password, secret-looking query values masked."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    hidden = {s for s in secrets if s}
    query = [
        (k, MASK if _SECRET_QUERY.search(k) or v in hidden else v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query, safe="*"), ""))


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret value replaced by a mask."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds a Retry-After header asks for (delta-seconds or HTTP date); None when unusable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    current = now if now is not None else time.time()
    return max(0.0, when.timestamp() - current)


def retry_delay(
    attempt: int,
    base: float,
    cap: float,
    retry_after: str | None = None,
    rng: Callable[[float, float], float] = random.uniform,
) -> float:
    """Wait before retry number ``attempt + 1``: exponential with jitter, >= Retry-After, <= cap.

    "Equal jitter" (half fixed, half random) keeps a real backoff while spreading clients out.
    """
    ceiling = min(cap, base * (2**attempt))
    delay = ceiling / 2 + rng(0.0, ceiling / 2)
    asked = parse_retry_after(retry_after)
    if asked is not None:
        delay = max(delay, asked)
    return min(cap, delay)


def json_path(body: Any, path: str) -> Any:
    """Value at a dotted path (``data``, ``links.next``, ``items.0``); the body itself for ''."""
    value = body
    for part in [p for p in path.split(".") if p]:
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default


class _GuardedSession(requests.Session):
    """A session that also strips the configured auth header on a cross-origin redirect.

    requests itself only strips ``Authorization``; an ``X-Api-Key`` would follow the redirect.
    """

    def __init__(self, sensitive_headers: Iterable[str]) -> None:
        super().__init__()
        self.sensitive_headers = tuple(sensitive_headers)

    def rebuild_auth(self, prepared_request: Any, response: requests.Response) -> None:
        super().rebuild_auth(prepared_request, response)
        if self.should_strip_auth(response.request.url or "", prepared_request.url or ""):
            for name in self.sensitive_headers:
                prepared_request.headers.pop(name, None)


class _Deadline(Exception):
    """The body did not arrive within the request's time budget."""


class _TooLarge(Exception):
    """A page body beyond MAX_PAGE_BYTES."""


def _read_body(response: requests.Response, deadline: float) -> bytes:
    """The whole body of one page, bounded in time (a trickling server) and in size."""
    chunks = bytearray()
    for chunk in response.iter_content(chunk_size=1 << 16):
        chunks.extend(chunk)
        if len(chunks) > MAX_PAGE_BYTES:
            raise _TooLarge()
        if time.monotonic() > deadline:
            raise _Deadline()
    return bytes(chunks)


class ApiClient:
    """Fetches one configured API page by page, with retries; one instance per pull."""

    def __init__(
        self,
        spec: FetchSpec,
        *,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.spec = spec
        self._own_session = session is None
        self.session = session or _GuardedSession(spec.sensitive_headers)
        self.session.headers.update(spec.headers)
        self.sleep = sleep
        self.log = log or (lambda _message: None)
        self.requests_made = 0
        self.pages_fetched = 0

    def close(self) -> None:
        if self._own_session:
            self.session.close()

    def _safe(self, text: str) -> str:
        return scrub(text, self.spec.secrets)

    def _shown(self, url: str, params: Mapping[str, Any]) -> str:
        full = requests.Request("GET", url, params=dict(params)).prepare().url or url
        return redact_url(full, self.spec.secrets)

    def get_json(self, url: str, params: Mapping[str, Any] | None = None) -> Any:
        """One page's parsed JSON body, retrying what a retry can fix."""
        spec = self.spec
        params = dict(params or {})
        shown = self._shown(url, params)
        attempts = spec.max_retries + 1
        for attempt in range(attempts):
            self.requests_made += 1
            status: int | None = None
            excerpt = ""
            retry_after: str | None = None
            started = time.monotonic()
            try:
                with self.session.get(
                    url, params=params, timeout=spec.timeout_seconds, stream=True
                ) as response:
                    status = response.status_code
                    body = _read_body(response, started + spec.timeout_seconds)
                    retry_after = response.headers.get("Retry-After")
                    reason = response.reason or ""
            except (requests.Timeout, _Deadline):
                problem = f"timed out after {spec.timeout_seconds:g}s"
            except requests.exceptions.SSLError:  # a bad certificate stays bad: no retry
                raise ApiFetchError(
                    f"GET {shown} failed: TLS error (certificate or handshake)",
                    url=shown,
                    attempts=attempt + 1,
                ) from None
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as err:
                problem = f"connection failed ({type(err).__name__})"
            except _TooLarge:
                raise ApiFetchError(
                    f"GET {shown} failed: page larger than {MAX_PAGE_BYTES} bytes",
                    url=shown,
                    status=status,
                    attempts=attempt + 1,
                ) from None
            except requests.RequestException as err:  # invalid URL, too many redirects, ...
                # Its text may quote a raw URL: mask every query string and secret in it.
                text = _ANY_QUERY.sub("?" + MASK, self._safe(str(err)))[:300]
                raise ApiFetchError(
                    f"GET {shown} failed: {type(err).__name__}: {text}",
                    url=shown,
                    attempts=attempt + 1,
                ) from None
            else:
                excerpt = self._safe(body[:EXCERPT_CHARS].decode("utf-8", "replace"))
                if 200 <= status < 300:
                    try:
                        return json.loads(body)
                    except ValueError:
                        raise ApiFetchError(
                            f"GET {shown} returned HTTP {status} but the body is not JSON: "
                            f"{excerpt!r}",
                            url=shown,
                            status=status,
                            attempts=attempt + 1,
                            excerpt=excerpt,
                        ) from None
                problem = f"HTTP {status} {reason}".rstrip()
                if status not in RETRY_STATUSES:
                    raise ApiFetchError(
                        f"GET {shown} failed with {problem} (not retried): {excerpt!r}",
                        url=shown,
                        status=status,
                        attempts=attempt + 1,
                        excerpt=excerpt,
                    )
            if attempt + 1 == attempts:
                detail = f": {excerpt!r}" if excerpt else ""
                raise ApiFetchError(
                    f"GET {shown} failed after {attempts} attempts, last: {problem}{detail}",
                    url=shown,
                    status=status,
                    attempts=attempts,
                    excerpt=excerpt,
                )
            delay = retry_delay(
                attempt, spec.backoff_base_seconds, spec.backoff_max_seconds, retry_after
            )
            self.log(
                f"GET {shown}: {problem}; retry {attempt + 1}/{spec.max_retries} in {delay:.2f}s"
            )
            self.sleep(delay)
        raise AssertionError("unreachable")

    def _records(self, body: Any, page: int, shown: str) -> list[Any]:
        records = json_path(body, self.spec.records_path)
        if isinstance(records, list):
            return records
        where = f"at {self.spec.records_path!r}" if self.spec.records_path else "(the body itself)"
        keys = sorted(body)[:20] if isinstance(body, dict) else []
        raise ApiFetchError(
            f"page {page} of {shown}: no list of records {where}; "
            f"found {json_type(records)}, body keys {keys}",
            url=shown,
        )

    def _next_url(self, body: Any, current: str, seen: set[str]) -> str | None:
        link = json_path(body, self.spec.next_path)
        if link in (None, ""):
            return None
        if not isinstance(link, str):
            raise ApiFetchError(
                f"next link at {self.spec.next_path!r} is {json_type(link)}, not a URL",
                url=redact_url(current, self.spec.secrets),
            )
        target = urljoin(current, link)
        shown = redact_url(target, self.spec.secrets)
        if _origin(target) != _origin(self.spec.url):
            raise ApiFetchError(
                f"next link {shown} leaves the configured origin; refusing to send credentials",
                url=shown,
            )
        if target in seen:
            raise ApiFetchError(
                f"next link {shown} was already fetched: the pagination loops", url=shown
            )
        return target

    def pages(self) -> Iterable[tuple[int, list[Any]]]:
        """(page number, records) for every page, stopping as the pagination mode says."""
        spec = self.spec
        url = spec.url
        page_no = spec.page_start
        seen: set[str] = set()
        fetched = 0
        while True:
            if fetched >= spec.max_pages:
                raise ApiFetchError(
                    f"{redact_url(spec.url, spec.secrets)} has more than max_pages={spec.max_pages}"
                    " pages; nothing landed (raise max_pages if the API is really that large)",
                    url=redact_url(spec.url, spec.secrets),
                )
            params: dict[str, Any] = {}
            if spec.pagination == "page":
                params[spec.page_param] = page_no
                if spec.page_size_param and spec.page_size:
                    params[spec.page_size_param] = spec.page_size
            seen.add(url)
            body = self.get_json(url, params)
            fetched += 1
            self.pages_fetched = fetched
            shown = self._shown(url, params)
            records = self._records(body, fetched, shown)
            if fetched <= 3 or fetched % 50 == 0:  # enough to follow, not one event per page
                self.log(f"page {fetched}: {len(records)} records from {shown}")
            if spec.pagination == "page" and not records:
                return
            yield fetched, records
            if spec.pagination == "none":
                return
            if spec.pagination == "page":
                page_no += 1
                continue
            next_url = self._next_url(body, url, seen)
            if next_url is None:
                return
            url = next_url


def _json_line(record: Any) -> bytes:
    """One record as compact UTF-8 JSON; escaped ASCII when it holds a lone surrogate."""
    text = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
    try:
        return text.encode()
    except UnicodeEncodeError:  # "\ud800" is valid JSON but has no UTF-8 form
        return json.dumps(record, separators=(",", ":")).encode()


def fetch_to_jsonl(
    spec: FetchSpec,
    out: IO[bytes],
    *,
    session: requests.Session | None = None,
    sleep: Callable[[float], None] = time.sleep,
    log: Callable[[str], None] | None = None,
) -> FetchResult:
    """Pull every page into ``out`` as JSON Lines; raise ApiFetchError if any page fails."""
    client = ApiClient(spec, session=session, sleep=sleep, log=log)
    schema = SchemaTracker()
    written = 0
    try:
        for _page, records in client.pages():
            for record in records:
                line = _json_line(record)
                out.write(line + b"\n")
                written += len(line) + 1
                schema.observe(record)
    finally:
        client.close()
    out.flush()
    return FetchResult(
        records=schema.records,
        pages=client.pages_fetched,
        bytes=written,
        requests=client.requests_made,
        schema=schema,
    )
