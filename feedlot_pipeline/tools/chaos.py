"""``feedlot chaos``: break one part of the running local stack at a time while records stream in,
and show whether the pipeline lost anything and how long it took to drain by itself.

For each case it registers a farm of its own (``Chaos<tag><n>`` → ``fazenda_chaos_<tag>_<n>``),
publishes ``--records`` records dated today through SNS with ``feedlot produce``'s publisher
(at ``--rate``; it rides out outages), injects the fault a few seconds in, restarts only what it
broke (``feedlot local up``, which reuses every healthy part, or a new Dagster daemon), waits for
the producer, then waits — touching nothing — until every published record is in the warehouse
(loaded or rejected) and no batch run is queued or running, or ``--settle-timeout`` passes.

Cases: ``warehouse`` (embedded PostgreSQL stopped 30 s), ``moto`` (SIGKILL, restarted),
``daemon`` (the Dagster daemon this command started: SIGKILL of its process group, runs included;
a new one started), ``bridge`` (the Lambda bridge SIGKILLed, restarted), ``redeliveries``
(a fifth of the records published again as new SNS messages), ``forged`` (notices on the sensor
queue for a missing object, for another bucket, for a farm not in ``clientes``, and garbage).

Per case one row: published, landed (raw lines), loaded + rejected (distinct natural keys in the
warehouse), redelivered (raw lines beyond the distinct records), lost (published but not in the
warehouse when it settled), time to drain (from the end of the fault and the produce to settled),
ingest runs failed, and whether the case recovered with no manual step. ``forged`` also says how
many forged notices reached the DLQ with a reason and whether a partition was registered for the
farm that does not exist.

Run it against a stack it may break: ``feedlot local up`` with its own state dir; it starts its
own Dagster daemon (``dagster-daemon run`` on the stack's instance) unless one is running, in which
case the ``daemon`` case is skipped. The daemon it starts sweeps the lake every ``--sweep-seconds``
(``FEEDLOT_SWEEP_INTERVAL_SECONDS``; objects older than ``FEEDLOT_SWEEP_MIN_AGE_SECONDS`` = 2 ×
that), which is what loads objects whose notices died with moto's sensor queue or whose run died
with the daemon.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click
import orjson

from feedlot_pipeline.core.settings import LocalSettings, Settings, export

CASES = ("warehouse", "moto", "daemon", "bridge", "redeliveries", "forged")
ACTIVE = {"QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING"}
JOB = "ingest_batch_job"


@dataclass
class Row:
    case: str
    published: int = 0
    landed: int = 0
    loaded: int = 0
    rejected: int = 0
    redelivered: int = 0
    lost: int = 0
    drain_seconds: float | None = None  # None: did not settle within the timeout
    runs: int = 0
    runs_failed: int = 0
    notes: list[str] = field(default_factory=list)
    extra_restarts: list[str] = field(default_factory=list)  # beyond the part it broke

    @property
    def recovered(self) -> bool:
        return self.lost == 0 and self.drain_seconds is not None and not self.extra_restarts

    def cells(self) -> list[str]:
        drain = "not settled" if self.drain_seconds is None else f"{self.drain_seconds:.0f} s"
        return [
            self.case,
            str(self.published),
            str(self.landed),
            f"{self.loaded} + {self.rejected}",
            str(self.redelivered),
            str(self.lost),
            drain,
            f"{self.runs_failed} of {self.runs}",
            "yes" if self.recovered else "NO",
            "; ".join(self.notes + [f"had to restart {r}" for r in self.extra_restarts]),
        ]


HEADER = [
    "case",
    "published",
    "landed",
    "loaded + rejected",
    "redelivered",
    "lost",
    "drain",
    "runs failed",
    "recovered by itself",
    "notes",
]


def markdown(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(r.cells()) + " |" for r in rows]
    return "\n".join(lines)


def chaos_record(cod: str, n: int, day: str) -> dict:
    """A valid record whose natural key is unique by ``n`` (the lot)."""
    return {
        "id_curral": "30000000000003",
        "id_raca": "28551700000020",
        "id_lote": f"{n:014d}",
        "peso_entrada": 250.0,
        "peso_medio": 380.5,
        "data": f"{day} 00:00:00 UTC",
        "quantidade_animais": "40",
        "dia_confinamento": "30",
        "consumo_real": 8.4,
        "cod_cliente": cod,
    }


# --- what is where -------------------------------------------------------------------------------


def landed_lots(fazenda: str, settings: Settings) -> tuple[int, set[str]]:
    """(raw lines, distinct lots) under the farm's raw partitions."""
    from feedlot_pipeline.core.aws import client
    from feedlot_pipeline.core.lake import RAW_PREFIX

    s3 = client("s3")
    lines, lots = 0, set()
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=settings.lake_bucket, Prefix=f"{RAW_PREFIX}/{fazenda}/"
    )
    for page in pages:
        for obj in page.get("Contents", []):
            body = s3.get_object(Bucket=settings.lake_bucket, Key=obj["Key"])["Body"].read()
            for line in body.splitlines():
                if line.strip():
                    lines += 1
                    with contextlib.suppress(orjson.JSONDecodeError, AttributeError):
                        lots.add(orjson.loads(line).get("id_lote"))
    return lines, lots


def warehouse_lots(engine: Any, fazenda: str) -> tuple[set[str], set[str]]:
    """(loaded lots, rejected lots) of the farm."""
    import sqlalchemy as sa

    with engine.connect() as conn:
        loaded = conn.execute(
            sa.text("SELECT id_lote FROM historico_consumo WHERE fazenda = :f"), {"f": fazenda}
        ).scalars()
        loaded_set = set(loaded)
        raw = conn.execute(
            sa.text("SELECT raw_record FROM historico_consumo_rejeitados WHERE fazenda = :f"),
            {"f": fazenda},
        ).scalars()
        rejected: set[str] = set()
        for text in raw:
            with contextlib.suppress(orjson.JSONDecodeError, AttributeError):
                rejected.add(orjson.loads(text).get("id_lote"))
        return loaded_set, rejected


class Harness:
    """The running stack, the daemon this command may own, and the ways to break them."""

    def __init__(self, state_dir: Path, sweep_seconds: int, say: Callable[[str], None]) -> None:
        from dagster import DagsterInstance

        from feedlot_pipeline.local import stack
        from feedlot_pipeline.local.state import state_paths

        self.state_dir = state_dir
        self.say = say
        self.sweep_seconds = sweep_seconds
        say("Starting (or reusing) the local stack …")
        stack.up(state_dir)
        export(stack.env(state_dir))
        self.paths = state_paths(state_dir)
        self.settings = Settings()
        self.instance = DagsterInstance.get()
        self.daemon: Any = None
        self.external_daemon = False
        self.tag = uuid.uuid4().hex[:4]
        self._engine: Any = None

    # --- daemon ---------------------------------------------------------------------------------

    def start_daemon(self) -> None:
        from feedlot_pipeline.tools.demo import _daemon_alive

        if self.daemon is None and _daemon_alive(self.instance):
            self.external_daemon = True
            self.say("Using the Dagster daemon already running (the daemon case is skipped).")
            return
        self.daemon = self._spawn_daemon()

    def wait_daemon(self, timeout: float = 300.0) -> None:
        """Until the daemon this command started heartbeats (it may take a minute here)."""
        from feedlot_pipeline.tools.demo import _daemon_alive

        deadline = time.monotonic() + timeout
        while not _daemon_alive(self.instance):
            if self.daemon is not None and self.daemon.poll() is not None:
                raise click.ClickException(
                    f"the Dagster daemon exited (code {self.daemon.returncode}); see "
                    f"{self.paths.root / 'logs' / 'dagster-daemon.log'}"
                )
            if time.monotonic() > deadline:
                raise click.ClickException("the Dagster daemon did not heartbeat in time")
            time.sleep(2)

    def daemon_died(self) -> int | None:
        """The exit code of this command's daemon if it died by itself (then it is restarted)."""
        if self.daemon is None or self.daemon.poll() is None:
            return None
        code = self.daemon.returncode
        self.instance.wipe_daemon_heartbeats()
        self.daemon = self._spawn_daemon()
        return code

    def _spawn_daemon(self) -> Any:
        from feedlot_pipeline.tools.demo import _start_daemon

        overrides = {
            "FEEDLOT_SWEEP_INTERVAL_SECONDS": str(self.sweep_seconds),
            "FEEDLOT_SWEEP_MIN_AGE_SECONDS": str(2 * self.sweep_seconds),
        }
        before = os.environ.copy()
        os.environ.update(overrides)
        try:
            return _start_daemon(self.paths.root / "logs")
        finally:
            for key in overrides:
                if key in before:
                    os.environ[key] = before[key]
                else:
                    os.environ.pop(key, None)

    def stop_daemon(self) -> None:
        from feedlot_pipeline.tools.demo import _stop

        if self.daemon is not None:
            _stop(self.daemon)
            self.daemon = None
            self.instance.wipe_daemon_heartbeats()

    # --- the warehouse --------------------------------------------------------------------------

    @property
    def engine(self) -> Any:
        if self._engine is None:
            import sqlalchemy as sa

            url = self.settings.warehouse_url_value() or ""
            self._engine = sa.create_engine(url, pool_pre_ping=True)
        return self._engine

    def register(self, cod: str, fazenda: str) -> None:
        from feedlot_pipeline.tools.soak import _register

        _register([(cod, fazenda)], self.settings)

    # --- faults ---------------------------------------------------------------------------------

    def up(self) -> None:
        from feedlot_pipeline.local import stack

        stack.up(self.state_dir)

    def kill(self, name: str) -> None:
        from feedlot_pipeline.local import supervisor
        from feedlot_pipeline.local.components import PROCESSES

        pid = supervisor.recorded_pid(self.paths, name, PROCESSES[name])
        if pid is None:
            raise click.ClickException(f"{name} is not running: nothing to kill")
        os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while supervisor.is_running(pid) and time.monotonic() < deadline:
            time.sleep(0.1)

    def stop_warehouse(self) -> None:
        from feedlot_pipeline.local import databases

        databases.stop_embedded(self.paths)

    def kill_daemon(self) -> None:
        os.killpg(self.daemon.pid, signal.SIGKILL)
        self.daemon.wait(10)
        self.instance.wipe_daemon_heartbeats()  # the dead one's last beat is still fresh

    # --- measures -------------------------------------------------------------------------------

    def runs(self, since: datetime) -> dict[str, str]:
        import dagster as dg

        records = self.instance.get_run_records(dg.RunsFilter(job_name=JOB, created_after=since))
        return {r.dagster_run.run_id: r.dagster_run.status.value for r in records}

    def wait_for_running(self, since: datetime, timeout: float) -> int:
        """Runs STARTED since ``since``, once there is one (0 after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            running = sum(s == "STARTED" for s in self.runs(since).values())
            if running:
                return running
            time.sleep(0.5)
        return 0

    def bridge_pending(self) -> int:
        from feedlot_pipeline.local.state import read_record
        from feedlot_pipeline.local.supervisor import service_health

        port = int((read_record(self.paths.record("lambda_bridge")) or {}).get("port") or 0)
        health = service_health(port) or {}
        return int(health.get("pending", 0))  # the inbox's held messages are among them

    def measure(self, row: Row, fazenda: str, published: set[str]) -> bool:
        """Fill the row's counts; True when every published record is in the warehouse."""
        lines, landed = landed_lots(fazenda, self.settings)
        loaded, rejected = warehouse_lots(self.engine, fazenda)
        row.landed = lines
        row.redelivered = lines - len(landed)
        row.loaded, row.rejected = len(loaded & published), len(rejected & published)
        row.lost = len(published - loaded - rejected)
        return row.lost == 0


# --- one case ------------------------------------------------------------------------------------


def _produce(records: list[bytes], rate: float, out: dict, retry_for: float) -> None:
    from feedlot_pipeline.tools.produce.sns import Publisher

    publisher = Publisher(
        Settings().records_topic,
        batch_size=100,
        rate=rate,
        retry_for=retry_for,
        say=lambda text: click.echo(text, err=True),
    )
    publisher.publish_stream(records)
    out["result"] = publisher.close()


def _forge(h: Harness, fazenda: str, today: str) -> list[str]:
    """Forged and garbage notices on the sensor queue; their marker event ids."""
    from feedlot_pipeline.core.aws import client, queue_url
    from feedlot_pipeline.core.lake import raw_object_key

    sqs = client("sqs")
    url = queue_url(h.settings.sensor_queue)
    day = datetime.fromisoformat(today).date()
    marker = f"forged-{h.tag}"
    evil = f"evil_farm_{h.tag}"
    base = {
        "type": "raw_landing",
        "version": 1,
        "records": 1,
        "source": "sns",
        "landed_at": datetime.now(timezone.utc).isoformat(),
    }
    bodies = [
        {  # an object that does not exist, in a real partition
            **base,
            "bucket": h.settings.lake_bucket,
            "key": raw_object_key(fazenda, day, "sns", f"{marker}-missing"),
            "fazenda": fazenda,
            "dia": today,
            "event_id": f"{marker}-missing",
        },
        {  # another bucket
            **base,
            "bucket": "/etc",
            "key": raw_object_key(fazenda, day, "sns", f"{marker}-bucket"),
            "fazenda": fazenda,
            "dia": today,
            "event_id": f"{marker}-bucket",
        },
        {  # a farm that is not in clientes
            **base,
            "bucket": h.settings.lake_bucket,
            "key": raw_object_key(evil, day, "sns", f"{marker}-farm"),
            "fazenda": evil,
            "dia": today,
            "event_id": f"{marker}-farm",
        },
    ]
    for body in bodies:
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps(body))
    sqs.send_message(QueueUrl=url, MessageBody=f"not json {marker} \x01")
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"type": "raw_landing", "m": marker}))
    return [marker, evil]


def _forged_outcome(h: Harness, marker: str, evil: str) -> str:
    from feedlot_pipeline.core.aws import client, queue_url

    sqs = client("sqs")
    url = queue_url(h.settings.sensor_dlq)
    found, with_reason = 0, 0
    seen: set[str] = set()
    for _ in range(20):
        batch = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            MessageAttributeNames=["All"],
            VisibilityTimeout=60,  # peek: they reappear for `feedlot dlq list`
        ).get("Messages", [])
        if not batch:
            break
        for m in batch:
            if marker in m["Body"] and m["MessageId"] not in seen:
                seen.add(m["MessageId"])
                found += 1
                if (m.get("MessageAttributes") or {}).get("reason"):
                    with_reason += 1
    partitions = h.instance.get_dynamic_partitions("fazenda")
    registered = "REGISTERED" if evil in partitions else "not registered"
    return (
        f"forged/garbage notices: 5 sent, {found} in DLQ ({with_reason} with reason); "
        f"{evil} {registered}"
    )


def run_case(
    h: Harness,
    case: str,
    n: int,
    *,
    records: int,
    rate: float,
    fault_after: float,
    settle_timeout: float,
    say: Callable[[str], None],
) -> Row:
    row = Row(case)
    cod, fazenda = f"Chaos{h.tag}{n}", f"fazenda_chaos_{h.tag}_{n}"
    h.register(cod, fazenda)
    today = datetime.now(timezone.utc).date().isoformat()
    recs = [orjson.dumps(chaos_record(cod, i, today)) for i in range(records)]
    published = {f"{i:014d}" for i in range(records)}
    since = datetime.now(timezone.utc)
    out: dict[str, Any] = {}
    producer = threading.Thread(
        target=_produce, args=(recs, rate, out, max(300.0, settle_timeout)), daemon=True
    )
    say(f"[{case}] producing {records} records at {rate:.0f}/s into {fazenda} …")
    producer.start()
    time.sleep(fault_after)
    if case in ("warehouse", "daemon"):  # break it while a run is loading, not before
        running = h.wait_for_running(since, timeout=180)
        row.notes.append(
            f"fault injected with {running} run(s) in progress"
            if running
            else "no run was in progress when the fault was injected"
        )
    forged: list[str] = []
    if case == "warehouse":
        say("[warehouse] stopping PostgreSQL for 30 s")
        h.stop_warehouse()
        time.sleep(30)
        h.up()
    elif case == "moto":
        say("[moto] SIGKILL moto; restarting it 3 s later (feedlot local up)")
        h.kill("moto")
        time.sleep(3)
        h.up()
    elif case == "daemon":
        say("[daemon] SIGKILL the Dagster daemon's process group; new daemon 3 s later")
        h.kill_daemon()
        time.sleep(3)
        h.daemon = h._spawn_daemon()
        h.wait_daemon()
    elif case == "bridge":
        say("[bridge] SIGKILL the Lambda bridge; restarting it 3 s later (feedlot local up)")
        pending = h.bridge_pending()
        row.notes.append(f"{pending} invocation(s) pending in the bridge when it was killed")
        h.kill("lambda_bridge")
        time.sleep(3)
        h.up()
    elif case == "forged":
        say("[forged] forged and garbage notices on the sensor queue")
        forged = _forge(h, fazenda, today)
    producer.join()
    result = out.get("result")
    if case == "redeliveries":
        again = recs[: max(1, records // 5)]
        say(f"[redeliveries] publishing {len(again)} of the records again (new SNS messages)")
        extra: dict[str, Any] = {}
        _produce(again, rate, extra, 300.0)
        row.notes.append(f"{extra['result'].records} records published again")
    row.published = result.records if result is not None else 0
    if result is None or not result.ok:
        row.notes.append("producer: " + (result.summary() if result is not None else "crashed"))
    elif result.outages:
        row.notes.append(
            f"producer rode out {result.outages} outage(s), {result.retries} retries"
            + (f", {result.maybe_twice} maybe twice" if result.maybe_twice else "")
        )
    settled_from = time.monotonic()
    deadline = settled_from + settle_timeout
    quiet = 0
    last = ""
    while time.monotonic() < deadline:
        died = h.daemon_died()
        if died is not None:
            say(f"  [{case}] the Dagster daemon exited by itself (code {died}): restarted it")
            row.extra_restarts.append(f"the Dagster daemon (it exited with code {died})")
        try:
            complete = h.measure(row, fazenda, published)
            statuses = h.runs(since)
        except Exception as err:  # noqa: BLE001 - a part may still be coming back
            line = f"  [{case}] measuring failed: {type(err).__name__}"
            complete, statuses = False, {}
        else:
            active = sum(s in ACTIVE for s in statuses.values())
            line = (
                f"  [{case}] landed {row.landed}, in warehouse {row.loaded + row.rejected}"
                f"/{len(published)}, runs {len(statuses)} (active {active})"
            )
            complete = complete and active == 0
        if line != last:
            say(line)
            last = line
        quiet = quiet + 1 if complete else 0
        if quiet >= 2:
            row.drain_seconds = time.monotonic() - settled_from
            break
        time.sleep(3)
    statuses = h.runs(since)
    row.runs = len(statuses)
    row.runs_failed = sum(s == "FAILURE" for s in statuses.values())
    if forged:
        row.notes.append(_forged_outcome(h, *forged))
    if row.drain_seconds is None:
        row.notes.append(f"not drained within {settle_timeout:.0f} s")
    return row


@click.command()
@click.option(
    "--records",
    default=5000,
    show_default=True,
    type=click.IntRange(min=1),
    help="Records published per case (the issue's scale is 50000).",
)
@click.option(
    "--rate",
    default=500.0,
    show_default=True,
    type=click.FloatRange(min=1),
    help="Records per second of each case's produce.",
)
@click.option(
    "--case",
    "cases",
    multiple=True,
    type=click.Choice(CASES),
    help="Run only these cases (repeatable) [default: all, in order].",
)
@click.option("--fault-after", default=3.0, show_default=True, help="Seconds into the produce.")
@click.option(
    "--settle-timeout",
    default=900.0,
    show_default=True,
    help="Seconds a case may take to drain after the fault; past it the row says not drained.",
)
@click.option(
    "--sweep-seconds",
    default=30,
    show_default=True,
    type=click.IntRange(min=10),
    help="lake_sweep_sensor interval of the daemon this command starts.",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=lambda: LocalSettings().state_dir,
)
@click.option(
    "--markdown-out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the table (Markdown) to this file.",
)
def chaos(
    records: int,
    rate: float,
    cases: tuple[str, ...],
    fault_after: float,
    settle_timeout: float,
    sweep_seconds: int,
    state_dir: Path,
    markdown_out: Path | None,
) -> None:
    """Inject faults into the running local stack while records stream in; one row per case."""
    say = click.echo
    h = Harness(state_dir, sweep_seconds, say)
    rows: list[Row] = []
    try:
        h.start_daemon()
        h.wait_daemon()
        for n, case in enumerate(cases or CASES, start=1):
            if case == "daemon" and h.external_daemon:
                rows.append(Row(case, notes=["skipped: the daemon is not this command's"]))
                continue
            if (
                case == "warehouse"
                and h.settings.warehouse_url_value()
                and not (h.paths.pg_data / "postmaster.pid").exists()
            ):
                rows.append(Row(case, notes=["skipped: the warehouse is not the embedded one"]))
                continue
            row = run_case(
                h,
                case,
                n,
                records=records,
                rate=rate,
                fault_after=fault_after,
                settle_timeout=settle_timeout,
                say=say,
            )
            rows.append(row)
            say(" | ".join(f"{k}: {v}" for k, v in zip(HEADER, row.cells(), strict=True)))
    finally:
        h.stop_daemon()
    table = markdown(rows)
    say("\n" + table)
    if markdown_out is not None:
        markdown_out.write_text(table + "\n")
    if not all(r.recovered for r in rows if not r.notes or "skipped" not in r.notes[0]):
        raise SystemExit(1)
