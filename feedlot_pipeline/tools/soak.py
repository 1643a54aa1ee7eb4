"""``feedlot soak``: N farms streaming R records/s through the real path for M minutes.

A benchmark, not a test: run it against a live ``make dev`` (stack + Dagster daemon). It

1. registers N farms in ``clientes`` (``Soak0001`` → ``fazenda_soak_0001``…) and publishes the
   client map;
2. publishes R records a second, each its own SNS message (today's date, round-robin over the
   farms): SNS → the landing Lambda → the raw zone → the sensor → batch runs → the warehouse;
3. every second reads the load ledger (``historico_consumo_cargas``): a record's object key is
   known from its SNS message id, so its latency is ``loaded_at`` of that object minus the time
   it was published (the rows are committed just before);
4. prints per minute: published, loaded, event → row p50/p95/max, sensor queue depth, runs
   launched and queued, CPU seconds per 1,000 records; and at the end the totals: landed =
   loaded + rejected, late records (loaded after the load phase) and lost ones (never loaded).
   CPU is the platform's own processes (the stack's and Dagster's), not the whole machine's.

It never stops at the first late record: the report says how many were late and by how much.
"""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timezone

import click
import psutil

from feedlot_pipeline.core.aws import client, queue_url, topic_arn
from feedlot_pipeline.core.lake import raw_object_key
from feedlot_pipeline.core.settings import LocalSettings, Settings
from feedlot_pipeline.tools.latency import percentile

SNS_BATCH = 10


def farm_names(n: int) -> list[tuple[str, str]]:
    """(cod_cliente, fazenda) of the soak's farms."""
    return [(f"Soak{i:04d}", f"fazenda_soak_{i:04d}") for i in range(1, n + 1)]


def soak_record(cod: str, lote: str, day: str) -> dict:
    return {
        "id_curral": "20000000000002",
        "id_raca": "28551700000020",
        "id_lote": lote,
        "peso_entrada": 250.0,
        "peso_medio": 380.5,
        "data": f"{day} 00:00:00 UTC",
        "quantidade_animais": "40",
        "dia_confinamento": "30",
        "consumo_real": 8.4,
        "cod_cliente": cod,
    }


@dataclass
class Minute:
    published: int = 0
    loaded: int = 0
    latencies: list[float] = field(default_factory=list)
    runs_launched: int = 0
    queue_depth: int = 0
    runs_queued: int = 0
    cpu_seconds: float = 0.0


@dataclass
class Tracker:
    """Published records by their raw object key; loaded ones with their latency."""

    sent: dict[str, float] = field(default_factory=dict)  # key -> publish time (epoch)
    loaded: dict[str, float] = field(default_factory=dict)  # key -> latency (s)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _register(farms: list[tuple[str, str]], settings: Settings) -> None:
    from feedlot_pipeline.core import client_map
    from feedlot_pipeline.warehouse.store import Warehouse

    with Warehouse.from_env() as wh:
        existing = wh.clients()
        for cod, fazenda in farms:
            if existing.get(cod) != fazenda:
                wh.add_client(cod, fazenda, replace=True)
        client_map.publish(settings.lake_bucket, wh.clients())


def _publisher(
    farms: list[tuple[str, str]],
    rate: float,
    seconds: float,
    tracker: Tracker,
    settings: Settings,
    stop: threading.Event,
) -> None:
    """R records/s in PublishBatch calls of 10, paced per tenth of a second."""
    sns = client("sns")
    arn = topic_arn(settings.records_topic)
    day = datetime.now(timezone.utc).date().isoformat()
    tag = uuid.uuid4().int % 10**6
    sent = 0
    started = time.monotonic()
    pool = ThreadPoolExecutor(4, thread_name_prefix="soak-publish")

    def publish(entries: list[tuple[str, dict]]) -> None:
        at = time.time()
        response = sns.publish_batch(
            TopicArn=arn,
            PublishBatchRequestEntries=[
                {"Id": str(i), "Message": json.dumps([rec])} for i, (_, rec) in enumerate(entries)
            ],
        )
        with tracker.lock:
            for ok in response.get("Successful", []):
                fazenda = entries[int(ok["Id"])][0]
                key = raw_object_key(fazenda, date.fromisoformat(day), "sns", ok["MessageId"])
                tracker.sent[key] = at

    while not stop.is_set():
        elapsed = time.monotonic() - started
        if elapsed >= seconds:
            break
        due = int(elapsed * rate) - sent
        batch: list[tuple[str, dict]] = []
        for _ in range(max(0, due)):
            cod, fazenda = farms[sent % len(farms)]
            batch.append((fazenda, soak_record(cod, f"{tag:06d}{sent:09d}", day)))
            sent += 1
            if len(batch) == SNS_BATCH:
                pool.submit(publish, batch)
                batch = []
        if batch:
            pool.submit(publish, batch)
        time.sleep(0.1)
    pool.shutdown(wait=True)


def _poll_ledger(wh, tracker: Tracker) -> int:  # noqa: ANN001
    """Record the latency of every soak object the ledger has; how many are new."""
    import sqlalchemy as sa

    from feedlot_pipeline.warehouse.schema import historico_consumo_cargas as ledger

    with tracker.lock:
        waiting = [k for k in tracker.sent if k not in tracker.loaded]
    if not waiting:
        return 0
    found = 0
    with wh.engine.connect() as conn:
        for start in range(0, len(waiting), 2000):
            rows = conn.execute(
                sa.select(ledger.c.raw_object_key, ledger.c.loaded_at).where(
                    ledger.c.raw_object_key.in_(waiting[start : start + 2000])
                )
            )
            for key, loaded_at in rows:
                if loaded_at.tzinfo is None:
                    loaded_at = loaded_at.replace(tzinfo=timezone.utc)
                with tracker.lock:
                    tracker.loaded[key] = loaded_at.timestamp() - tracker.sent[key]
                found += 1
    return found


def _queue_depth(url: str) -> int:
    attrs = client("sqs").get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"])


def _runs(instance, since: datetime) -> tuple[int, int]:  # noqa: ANN001
    """(batch runs created since, runs queued now)."""
    import dagster as dg

    created = instance.get_run_records(
        dg.RunsFilter(job_name="ingest_batch_job", created_after=since)
    )
    queued = instance.get_run_records(
        dg.RunsFilter(statuses=[dg.DagsterRunStatus.QUEUED]), limit=1000
    )
    return len(created), len(queued)


# Which part of the platform a process is, by its command line (first match wins).
PARTS = (
    ("moto", "moto_server"),
    ("lambda bridge", "lambda_bridge"),
    ("lambda bridge", "lambda_runtime"),
    ("api gateway", "api_gateway"),
    ("ssm agent", "ssm_agent"),
    ("runs", "execute_run"),
    ("runs", "execute_step"),
    ("runs", "multiprocessing.spawn"),  # the code server starts a run's process this way
    ("sensors (code server)", "api grpc"),
    ("sensors (code server)", "code-server"),
    ("daemon", "dagster._daemon"),
    ("daemon", "dagster-daemon"),
    ("webserver", "dagster_webserver"),
    ("postgres", "postgres"),
)


def part_of(cmdline: str) -> str:
    return next((part for part, marker in PARTS if marker in cmdline), "other")


@dataclass
class CpuMeter:
    """CPU seconds of the platform's processes, by part, sampled every poll.

    The platform's processes are the stack's (moto, the bridge, the gateway, the agent, the
    embedded PostgreSQL: their command line or environment names the state dir) and Dagster's
    (started with the stack's env file). A run's process lives seconds: its last sample counts
    (up to one poll interval of its CPU is missed). Other work on the machine is not counted.
    """

    state_dir: str
    # (pid, start time) -> (part, cpu s): a pid the system gives to a new process is another key
    seen: dict[tuple[int, float], tuple[str, float]] = field(default_factory=dict)
    ignored: set[tuple[int, float]] = field(default_factory=set)

    def sample(self) -> None:
        for proc in psutil.process_iter(["cmdline", "create_time"]):
            key = (proc.pid, proc.info["create_time"])
            if key in self.ignored:
                continue
            try:
                cmdline = " ".join(proc.info["cmdline"] or [])
                part = self.seen.get(key, (None, 0.0))[0]
                if part is None:
                    ours = self.state_dir in cmdline
                    if not ours:
                        ours = proc.environ().get("FEEDLOT_STATE_DIR") == self.state_dir
                    if not ours:
                        self.ignored.add(key)
                        continue
                    part = part_of(cmdline)
                t = proc.cpu_times()
                self.seen[key] = (part, t.user + t.system)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue

    def total(self) -> float:
        return sum(cpu for _, cpu in self.seen.values())

    def by_part(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for part, cpu in self.seen.values():
            out[part] = out.get(part, 0.0) + cpu
        return out


def _lines(minutes: list[Minute]) -> Iterator[str]:
    yield (
        f"{'min':>3} {'published':>9} {'loaded':>7} {'p50 s':>6} {'p95 s':>6} {'max s':>6} "
        f"{'queue':>6} {'runs':>5} {'queued':>6} {'CPU s/1k':>9}"
    )
    for i, m in enumerate(minutes, 1):
        lat = m.latencies
        p50 = f"{percentile(lat, 50):6.1f}" if lat else "     –"
        p95 = f"{percentile(lat, 95):6.1f}" if lat else "     –"
        mx = f"{max(lat):6.1f}" if lat else "     –"
        cpu = f"{1000 * m.cpu_seconds / m.published:9.2f}" if m.published else "        –"
        yield (
            f"{i:>3} {m.published:>9} {m.loaded:>7} {p50} {p95} {mx} {m.queue_depth:>6} "
            f"{m.runs_launched:>5} {m.runs_queued:>6} {cpu}"
        )


@click.command()
@click.option("--farms", default=10, show_default=True, help="Farms streaming at once.")
@click.option("--rate", default=10.0, show_default=True, help="Records a second, all farms.")
@click.option("--minutes", default=2.0, show_default=True, help="How long to publish.")
@click.option(
    "--drain", default=120.0, show_default=True, help="Seconds to wait for late records after."
)
@click.option("--state-dir", default=None, help="Local stack folder whose env file to read.")
def soak(farms: int, rate: float, minutes: float, drain: float, state_dir: str | None) -> None:
    """Stream RATE records/s over FARMS farms for MINUTES through SNS → … → the warehouse and
    report, per minute, throughput, event → row latency, queue depth, runs and CPU."""
    import dagster as dg

    from feedlot_pipeline.tools.replay import load_stack_env
    from feedlot_pipeline.warehouse.store import Warehouse

    load_stack_env(state_dir)
    settings = Settings()
    names = farm_names(farms)
    click.echo(f"registering {farms} farm(s) and publishing the client map …")
    _register(names, settings)
    tracker = Tracker()
    stop = threading.Event()
    since = datetime.now(timezone.utc)
    seconds = minutes * 60
    publisher = threading.Thread(
        target=_publisher,
        args=(names, rate, seconds, tracker, settings, stop),
        name="soak-publisher",
        daemon=True,
    )
    click.echo(f"publishing {rate:g} records/s over {farms} farm(s) for {minutes:g} min …")
    started = time.monotonic()
    publisher.start()
    minute_list: list[Minute] = []
    sensor_queue = queue_url(settings.sensor_queue)
    wh = Warehouse.from_env()
    instance = dg.DagsterInstance.get()
    runs_seen = 0
    published_seen = 0
    state = str(LocalSettings().state_dir.resolve())
    meter = CpuMeter(state)
    meter.sample()
    cpu_start = meter.by_part()
    cpu_mark = meter.total()
    loaded_before: set[str] = set()
    signal.signal(signal.SIGTERM, _interrupt)  # a stopped soak still reports what it measured
    try:
        deadline = started + seconds + drain
        while time.monotonic() < deadline:
            minute_end = min(time.monotonic() + 60, deadline)
            while time.monotonic() < minute_end:
                _poll_ledger(wh, tracker)
                meter.sample()
                time.sleep(1)
            with tracker.lock:
                published = len(tracker.sent)
                newly = {k: v for k, v in tracker.loaded.items() if k not in loaded_before}
            loaded_before.update(newly)
            created, queued = _runs(instance, since)
            cpu = meter.total()
            m = Minute(
                published=published - published_seen,
                loaded=len(newly),
                latencies=list(newly.values()),
                runs_launched=created - runs_seen,
                queue_depth=_queue_depth(sensor_queue),
                runs_queued=queued,
                cpu_seconds=cpu - cpu_mark,
            )
            minute_list.append(m)
            runs_seen, published_seen, cpu_mark = created, published, cpu
            lines = list(_lines(minute_list))
            click.echo("\n".join(lines) if len(minute_list) == 1 else lines[-1])
            if not publisher.is_alive() and len(tracker.loaded) >= len(tracker.sent):
                break
    except KeyboardInterrupt:
        click.echo("interrupted: the report covers what was measured so far")
    finally:
        stop.set()
        publisher.join(10)
        wh.dispose()
        instance.dispose()
    _report(tracker, minute_list)
    _cpu_report(meter, cpu_start, len(tracker.sent))


def _report(tracker: Tracker, minutes: list[Minute]) -> None:
    latencies = list(tracker.loaded.values())
    lost = len(tracker.sent) - len(tracker.loaded)
    click.echo("\n" + "\n".join(_lines(minutes)))
    if latencies:
        click.echo(
            f"\nevent → row over {len(latencies)} records: p50 {percentile(latencies, 50):.1f} s, "
            f"p95 {percentile(latencies, 95):.1f} s, max {max(latencies):.1f} s"
        )
    late = sum(1 for v in latencies if v > 30)
    click.echo(
        f"published {len(tracker.sent)}, loaded {len(tracker.loaded)}, "
        f"later than 30 s {late}, never loaded (lost or still late) {lost}"
    )
    _totals(list(tracker.sent))


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _cpu_report(meter: CpuMeter, start: dict[str, float], published: int) -> None:
    """Where the CPU went: seconds and seconds per 1,000 published records, by part."""
    used = {part: cpu - start.get(part, 0.0) for part, cpu in meter.by_part().items()}
    total = sum(used.values())
    if not published or total <= 0:
        return
    click.echo(f"\nCPU by part over the soak ({published} records published):")
    for part, cpu in sorted(used.items(), key=lambda kv: -kv[1]):
        click.echo(
            f"  {part:<22} {cpu:8.1f} s {1000 * cpu / published:7.2f} s/1k "
            f"{100 * cpu / total:5.1f} %"
        )
    click.echo(f"  {'total':<22} {total:8.1f} s {1000 * total / published:7.2f} s/1k")


def _totals(keys: list[str]) -> None:
    """landed = loaded + rejected over the soak's objects, from the ledger."""
    import sqlalchemy as sa

    from feedlot_pipeline.warehouse.schema import historico_consumo_cargas as ledger
    from feedlot_pipeline.warehouse.store import Warehouse

    sums = dict.fromkeys(("lines", "loaded", "rejected"), 0)
    with Warehouse.from_env() as wh, wh.engine.connect() as conn:
        for start in range(0, len(keys), 2000):
            row = conn.execute(
                sa.select(
                    sa.func.coalesce(sa.func.sum(ledger.c.lines), 0),
                    sa.func.coalesce(
                        sa.func.sum(
                            ledger.c.inserted
                            + ledger.c.updated
                            + ledger.c.unchanged
                            + ledger.c.superseded
                        ),
                        0,
                    ),
                    sa.func.coalesce(sa.func.sum(ledger.c.rejected), 0),
                ).where(ledger.c.raw_object_key.in_(keys[start : start + 2000]))
            ).one()
            for name, value in zip(("lines", "loaded", "rejected"), row, strict=True):
                sums[name] += int(value)
    verdict = "holds" if sums["lines"] == sums["loaded"] + sums["rejected"] else "DOES NOT HOLD"
    click.echo(
        f"landed {sums['lines']} = loaded {sums['loaded']} + rejected {sums['rejected']}: {verdict}"
    )
