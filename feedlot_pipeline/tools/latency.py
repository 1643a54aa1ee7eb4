"""``feedlot latency``: time from publishing a record to its row in historico_consumo.

A measurement, not a test: run it against a live stack with the sensor running (``make dev`` in
another shell, or a ``dagster-daemon``). Each record is new (a unique lot id), is published as its
own SNS message, and is timed until its deterministic id_treated_data appears in the warehouse.
"""

from __future__ import annotations

import json
import statistics
import time
import uuid
from datetime import date, datetime, timedelta, timezone

import click

from feedlot_pipeline.core.aws import client, topic_arn
from feedlot_pipeline.core.records import DEFAULT_RULE, clean
from feedlot_pipeline.core.settings import Settings


def _record(day: date, lote: str, cod_cliente: str) -> dict:
    return {
        "id_curral": "10000000000001",
        "id_raca": "28551700000020",
        "id_lote": lote,
        "peso_entrada": 250.0,
        "peso_medio": 380.5,
        "data": f"{day.isoformat()} 00:00:00 UTC",
        "quantidade_animais": "40",
        "dia_confinamento": "30",
        "consumo_real": 8.4,
        "cod_cliente": cod_cliente,
    }


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1))))
    return ordered[rank]


@click.command()
@click.option("--records", "count", default=20, show_default=True, help="Records to time.")
@click.option("--interval", default=2.0, show_default=True, help="Seconds between publishes.")
@click.option("--days", default=10, show_default=True, help="Spread records over this many days.")
@click.option("--timeout", default=120.0, show_default=True, help="Give up on a record after this.")
@click.option("--state-dir", default=None, help="Local stack folder whose env file to read.")
def latency(count: int, interval: float, days: int, timeout: float, state_dir: str | None) -> None:
    """Publish COUNT records one by one and report publish→warehouse latency (p50/p95).

    Against the running local stack (``make dev``): its endpoints and credentials come from its
    env file unless DAGSTER_HOME says the environment is set up already."""
    from sqlalchemy import bindparam, text

    from feedlot_pipeline.tools.replay import load_stack_env
    from feedlot_pipeline.warehouse.store import Warehouse

    load_stack_env(state_dir)
    settings = Settings()
    sns = client("sns")
    arn = topic_arn(settings.records_topic)
    clients = {"FazendaUm": "fazenda_um", "FazendaDois": "fazenda_dois"}
    today = datetime.now(timezone.utc).date()
    pending: dict[str, float] = {}
    done: dict[str, float] = {}
    run_tag = uuid.uuid4().int % 10**8
    wh = Warehouse.from_env()
    query = text(
        "SELECT id_treated_data FROM historico_consumo WHERE id_treated_data IN :ids"
    ).bindparams(bindparam("ids", expanding=True))
    next_publish = time.monotonic()
    published = 0
    try:
        while published < count or pending:
            now = time.monotonic()
            if published < count and now >= next_publish:
                code = ("FazendaUm", "FazendaDois")[published % 2]
                day = today - timedelta(days=published % max(days, 1))
                rec = _record(day, f"{run_tag:08d}{published:06d}", code)
                row_id = clean(rec, clients, DEFAULT_RULE, "", datetime.now(timezone.utc))[0]
                sns.publish(TopicArn=arn, Message=json.dumps([rec]))
                pending[row_id] = time.monotonic()
                published += 1
                next_publish = now + interval
            if pending:
                with wh.engine.connect() as conn:
                    found = conn.execute(query, {"ids": list(pending)}).scalars().all()
                for row_id in found:
                    done[row_id] = time.monotonic() - pending.pop(row_id)
                    click.echo(f"  record {len(done):>3}: {done[row_id]:6.2f} s")
                stale = [k for k, t in pending.items() if time.monotonic() - t > timeout]
                if stale:
                    raise click.ClickException(
                        f"{len(stale)} record(s) not in the warehouse after {timeout:.0f}s: is the "
                        "sensor running (make dev)?"
                    )
            time.sleep(0.2)
    finally:
        wh.dispose()
    values = list(done.values())
    click.echo(
        f"\n{len(values)} records: p50 {percentile(values, 50):.2f} s, "
        f"p95 {percentile(values, 95):.2f} s, min {min(values):.2f} s, max {max(values):.2f} s, "
        f"mean {statistics.mean(values):.2f} s"
    )
