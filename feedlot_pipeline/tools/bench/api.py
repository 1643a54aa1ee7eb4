"""``feedlot api-bench``: throughput and latency of the HTTP ingest route with concurrent clients.

Against ``FEEDLOT_INGEST_API_URL`` (a running ``feedlot local up``, key from
``FEEDLOT_INGEST_API_KEY``) when it is set; otherwise it starts what the route needs itself: a moto
server (provisioned), a scratch warehouse database for the client → farm table (on
``FEEDLOT_WAREHOUSE_URL``'s server, else an embedded PostgreSQL, as ``feedlot bench`` does) and the
local API gateway in this process on a free port. In that mode the clients and the server share one
Python process (and its GIL), so the figures are a floor for a separate server.

Each run sends ``--records`` synthetic records with ``feedlot produce --via api``'s poster
(batches of ``--batch-size``, ``C`` concurrent clients) and prints records/s, requests/s and the
request latency p50/p95 for each ``C`` in ``--clients``.
"""

from __future__ import annotations

import secrets
import shutil
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import click

from feedlot_pipeline.core.settings import Settings
from feedlot_pipeline.local.services import environ
from feedlot_pipeline.tools.produce.api import ApiPoster
from feedlot_pipeline.tools.produce.common import PublishResult, iter_generated


def _local_route(stack: ExitStack, echo: Any) -> tuple[str, str]:
    """Start moto, a scratch warehouse and the gateway in-process; (url, key). Undone by stack."""
    from feedlot_pipeline.local.api_gateway import ApiGateway
    from feedlot_pipeline.local.provision import provision
    from feedlot_pipeline.local.services import free_port, start_moto
    from feedlot_pipeline.tools.bench.load import scratch_database, server_or_embedded

    work = Path(tempfile.mkdtemp(prefix="feedlot-api-bench-"))
    stack.callback(shutil.rmtree, work, True)
    port = free_port()
    echo("starting moto …")
    moto = start_moto(port, work / "moto.log")

    def stop_moto() -> None:
        moto.terminate()
        moto.wait(10)

    stack.callback(stop_moto)
    server_url = server_or_embedded(stack, Settings().warehouse_url_value(), work, echo)
    db_url = scratch_database(stack, server_url)
    key = secrets.token_urlsafe(32)
    stack.enter_context(
        environ(
            {
                "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": Settings().region,
                "FEEDLOT_WAREHOUSE_URL": db_url,
            }
        )
    )
    provision(Settings())
    # The handler's per-request INFO lines would bury the figures: warnings only, meanwhile.
    from feedlot_pipeline.lambdas import api_handler

    level = api_handler.logger.log_level
    api_handler.logger.setLevel("WARNING")
    stack.callback(api_handler.logger.setLevel, level)
    gateway = stack.enter_context(ApiGateway(0, api_key=key))
    return gateway.url, key


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def run(
    url: str, key: str, records: int, clients: int, batch_size: int, seed: int
) -> tuple[PublishResult, float]:
    """One run: (result, wall seconds)."""
    poster = ApiPoster(url, key, batch_size=batch_size, concurrency=clients)
    started = time.perf_counter()
    poster.publish_stream(iter_generated(records, seed))
    result = poster.close()
    return result, time.perf_counter() - started


def _client_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"{text!r}: comma-separated numbers, e.g. 1,4,8") from None
    if not counts or any(c < 1 or c > 256 for c in counts):
        raise click.BadParameter("each client count must be 1..256")
    return counts


@click.command("api-bench")
@click.option("--records", default=20_000, show_default=True, type=click.IntRange(1))
@click.option(
    "--clients",
    "clients_text",
    default="1,4,8",
    show_default=True,
    help="Concurrent clients; a comma-separated list runs once per value.",
)
@click.option("--batch-size", default=100, show_default=True, type=click.IntRange(1, 10_000))
@click.option(
    "--url", default=None, help="API base URL [default: FEEDLOT_INGEST_API_URL, else local]."
)
@click.option("--seed", default=7, show_default=True)
def api_bench(records: int, clients_text: str, batch_size: int, url: str | None, seed: int) -> None:
    """Measure records/s, requests/s and latency p50/p95 of POST /consumo."""
    counts = _client_counts(clients_text)
    url = url or Settings().ingest_api_url
    with ExitStack() as stack:
        if url:
            from feedlot_pipeline.tools.produce.api import api_target

            url, key = api_target(url)
            where = f"{url} (running)"
        else:
            url, key = _local_route(stack, click.echo)
            where = f"{url} (in-process gateway, moto, PostgreSQL)"
        click.echo(
            f"api-bench: {records:,} records per run, batch {batch_size}, POST {url}/consumo"
        )
        click.echo(f"  route {where}\n")
        click.echo(
            f"  {'clients':>7} {'seconds':>8} {'records/s':>10} {'requests/s':>11} "
            f"{'p50 ms':>7} {'p95 ms':>7} {'failures':>8}"
        )
        failures = 0
        for i, clients in enumerate(counts):
            result, seconds = run(url, key, records, clients, batch_size, seed + i)
            failures += result.failures
            ms = [x * 1000 for x in result.latencies]
            click.echo(
                f"  {clients:>7} {seconds:>8.2f} {result.records / seconds:>10,.0f} "
                f"{result.messages / seconds:>11,.1f} {_percentile(ms, 50):>7.1f} "
                f"{_percentile(ms, 95):>7.1f} {result.failures:>8}"
            )
            for line in result.details[:5]:
                click.echo(f"      {line}", err=True)
    if failures:
        raise click.ClickException(f"{failures} record(s) were not accepted")
