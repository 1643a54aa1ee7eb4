"""``feedlot produce`` and the library entry points (publish_files, publish_generated)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click

from feedlot_pipeline.core.settings import Settings
from feedlot_pipeline.tools.produce.api import DEFAULT_CONCURRENCY, ApiPoster, api_target
from feedlot_pipeline.tools.produce.common import (
    RETRY_FOR_SECONDS,
    BadLine,
    PublishResult,
    count_lines,
    iter_file,
    iter_generated,
)
from feedlot_pipeline.tools.produce.firehose import FirehoseWriter
from feedlot_pipeline.tools.produce.sns import Publisher


def _progress_bar(enabled: bool | None, total: int | None) -> Any:
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="rec", unit_scale=True, desc="publishing", file=sys.stderr)


def _sink(
    via: str,
    *,
    topic: str | None,
    batch_size: int,
    rate: float,
    bar: Any,
    url: str | None,
    api_key: str | None,
    concurrency: int,
    stream: str | None,
    retry_for: float = RETRY_FOR_SECONDS,
) -> Publisher | ApiPoster | FirehoseWriter:
    if via == "api":
        if not (url and api_key):
            url, api_key = api_target(url)
        return ApiPoster(
            url,
            api_key,
            batch_size=batch_size,
            rate=rate,
            concurrency=concurrency,
            bar=bar,
            retry_for=retry_for,
        )
    if via == "firehose":
        stream = stream or Settings().firehose_stream
        return FirehoseWriter(stream, rate=rate, bar=bar, retry_for=retry_for)
    if via != "sns":
        raise ValueError(f"unknown --via {via!r}: sns, api or firehose")
    topic = topic or Settings().records_topic
    return Publisher(topic, batch_size=batch_size, rate=rate, bar=bar, retry_for=retry_for)


def _publish(
    sources: list[tuple[str, Iterable[bytes | BadLine]]],
    *,
    total: int | None,
    topic: str | None,
    batch_size: int,
    rate: float,
    progress: bool | None,
    via: str = "sns",
    url: str | None = None,
    api_key: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    stream: str | None = None,
    retry_for: float = RETRY_FOR_SECONDS,
) -> PublishResult:
    started = time.monotonic()
    bar = _progress_bar(progress, total)
    try:
        publisher = _sink(
            via,
            topic=topic,
            batch_size=batch_size,
            rate=rate,
            bar=bar,
            url=url,
            api_key=api_key,
            concurrency=concurrency,
            stream=stream,
            retry_for=retry_for,
        )
        for kind, items in sources:
            if publisher.result.aborted:
                break
            if kind == "file":
                publisher.result.files += 1
            publisher.publish_stream(items)
        result = publisher.close()
    finally:
        if bar is not None:
            bar.close()
    result.seconds = time.monotonic() - started
    return result


def publish_files(
    paths: Iterable[Path | str],
    *,
    topic: str | None = None,
    batch_size: int = 100,
    rate: float = 0.0,
    progress: bool | None = None,
    **via: Any,
) -> PublishResult:
    """Publish JSON Lines files (``-`` is stdin) to the records topic (default from settings).

    ``via`` options (``via="api"|"firehose"``, ``url``, ``api_key``, ``concurrency``, ``stream``)
    choose another way in; ``retry_for`` is how long an outage is ridden out (seconds).
    """
    paths = list(paths)
    total = None
    if progress or (progress is None and sys.stderr.isatty()):
        total = sum(count_lines(p) for p in paths if str(p) != "-")
    return _publish(
        [("file", iter_file(p)) for p in paths],
        total=total,
        topic=topic,
        batch_size=batch_size,
        rate=rate,
        progress=progress,
        **via,
    )


def publish_generated(
    n: int,
    *,
    seed: int = 7,
    topic: str | None = None,
    batch_size: int = 100,
    rate: float = 0.0,
    progress: bool | None = None,
    **via: Any,
) -> PublishResult:
    """Publish ``n`` synthetic records (``feedlot_pipeline.tools.synthetic.generate``)."""
    return _publish(
        [("generated", iter_generated(n, seed))],
        total=n,
        topic=topic,
        batch_size=batch_size,
        rate=rate,
        progress=progress,
        **via,
    )


@click.command()
@click.argument(
    "files",
    nargs=-1,
    type=click.Path(exists=True, dir_okay=False, allow_dash=True, path_type=Path),
)
@click.option("--generate", "generate_n", type=click.IntRange(min=1), help="Synthetic records.")
@click.option("--seed", default=7, show_default=True, help="Seed of --generate.")
@click.option(
    "--batch-size",
    default=100,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Most records per SNS message (capped by 256 KiB) or API request (capped by "
    "FEEDLOT_INGEST_API_MAX_BODY_BYTES); Firehose batches are always up to 500 records / 4 MiB.",
)
@click.option(
    "--rate",
    default=0.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Records per second; 0 = as fast as possible.",
)
@click.option("--topic", default=None, help="Topic name or ARN [default: FEEDLOT_RECORDS_TOPIC].")
@click.option(
    "--via",
    type=click.Choice(["sns", "api", "firehose"]),
    default="sns",
    show_default=True,
    help="sns: the records topic; api: POST $FEEDLOT_INGEST_API_URL/consumo with "
    "$FEEDLOT_INGEST_API_KEY; firehose: PutRecordBatch to the delivery stream.",
)
@click.option(
    "--concurrency",
    default=DEFAULT_CONCURRENCY,
    show_default=True,
    type=click.IntRange(1, 256),
    help="Concurrent requests with --via api.",
)
@click.option(
    "--url", default=None, help="API base URL [default: FEEDLOT_INGEST_API_URL] (--via api)."
)
@click.option(
    "--stream", default=None, help="Delivery stream [default: FEEDLOT_FIREHOSE_STREAM] (firehose)."
)
@click.option(
    "--retry-for",
    default=RETRY_FOR_SECONDS,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds to keep retrying through an outage (connection errors, 5xx, throttling) "
    "before giving up on a batch.",
)
@click.option("--progress/--no-progress", default=None, help="Progress bar [default: on a tty].")
def produce(
    files: tuple[Path, ...],
    generate_n: int | None,
    seed: int,
    batch_size: int,
    rate: float,
    topic: str | None,
    via: str,
    concurrency: int,
    url: str | None,
    stream: str | None,
    retry_for: float,
    progress: bool | None,
) -> None:
    """Send consumption records from FILE... (JSON Lines; - for stdin) or --generate N."""
    if bool(files) == bool(generate_n):
        raise click.UsageError("give FILE... or --generate N (one of the two)")
    from botocore.exceptions import BotoCoreError, ClientError

    options: dict[str, Any] = {
        "topic": topic,
        "batch_size": batch_size,
        "rate": rate,
        "progress": progress,
        "retry_for": retry_for,
    }
    if via != "sns":
        options |= {"via": via, "concurrency": concurrency, "url": url, "stream": stream}
    if via == "api":
        options["url"], options["api_key"] = api_target(url)
    try:
        if generate_n:
            result = publish_generated(generate_n, seed=seed, **options)
        else:
            result = publish_files(files, **options)
    except (BotoCoreError, ClientError) as err:  # before anything was sent: no topic ARN
        where = Settings().aws_endpoint_url or "AWS"
        service = {"sns": "SNS", "firehose": "Firehose"}.get(via, via)
        raise click.ClickException(
            f"cannot reach {service} at {where}: {err} (local stack: feedlot local up, then "
            'eval "$(feedlot local env)")'
        ) from None
    for line in result.details:
        click.echo(f"  {line}", err=True)
    if result.aborted:
        click.echo(f"  {result.aborted}", err=True)
    click.echo(f"Published (run {result.run_id}): {result.summary()}")
    if not result.ok:
        sys.exit(1)
