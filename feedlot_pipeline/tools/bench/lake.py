"""``feedlot lake-bench``: what keeping the local lake costs moto, and how long a restart takes.

Starts its own moto processes on free ports, each in a scratch folder: the tests' moto (moto's
server with ``moto_speedups``, nothing kept), the local stack's (``moto_server``: every change
journaled before the answer, fsynced within a second) and the same with ``--fsync`` (fsynced
before every answer). For each, ``--objects`` PutObject then as many GetObject (raw-zone keys,
``--size`` bytes, ``correlation-id``/``received-at`` metadata) with each number of concurrent
clients in ``--clients``; prints requests/s and the moto process's CPU time per request (which a
busy machine disturbs far less than requests/s).

Then ``--replay`` objects: a journal is written the way the server writes it (moto's own
put_object in this process, captured by the same hooks), a ``moto_server`` is started on it and
timed until it listens, and its log line says how long reading and replaying took.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click

from feedlot_pipeline.local.services import LOOPBACK, free_port, wait_for_port

MODES = {  # name → module and arguments after the port
    "moto (nothing kept)": ["feedlot_pipeline.local.moto_speedups"],
    "journal (default)": ["feedlot_pipeline.local.moto_server", "--journal", "{dir}"],
    "journal + fsync": ["feedlot_pipeline.local.moto_server", "--journal", "{dir}", "--fsync"],
}
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def _start(args: list[str], port: int, folder: Path) -> subprocess.Popen:
    module, *rest = args
    cmd = [sys.executable, "-m", module, "-H", LOOPBACK, "-p", str(port)]
    cmd += [a.replace("{dir}", str(folder / "journal")) for a in rest]
    with open(folder / "moto.log", "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    wait_for_port(port, 600, proc, module)
    return proc


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _body(size: int) -> bytes:
    line = b'{"id_curral":"25994051003275","id_lote":"1","consumo_real":9.07,"cod_cliente":"X"}\n'
    return (line * (size // len(line) + 1))[:size]


def _cpu(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def _throughput(
    pid: int, port: int, objects: int, clients: int, size: int
) -> tuple[float, float, float, float]:
    """(PutObject/s, GetObject/s, moto's CPU µs per PutObject, per GetObject)."""
    import boto3
    from botocore.config import Config

    s3 = boto3.client(
        "s3",
        endpoint_url=f"http://{LOOPBACK}:{port}",
        region_name="us-east-1",
        config=Config(max_pool_connections=max(10, clients)),
        **CREDENTIALS,
    )
    bucket = f"bench-{clients}"
    s3.create_bucket(Bucket=bucket)
    body = _body(size)

    def key(i: int) -> str:
        return f"historico_diario/fazenda_um/2024/03/{i % 28 + 1:02d}/sns-{i}.jsonl"

    def put(i: int) -> None:
        s3.put_object(
            Bucket=bucket,
            Key=key(i),
            Body=body,
            Metadata={"correlation-id": f"c-{i}", "received-at": "2024-03-18T00:00:00+00:00"},
        )

    def get(i: int) -> None:
        s3.get_object(Bucket=bucket, Key=key(i))["Body"].read()

    rates, cpu = [], []
    for call in (put, get):
        started, cpu_before = time.perf_counter(), _cpu(pid)
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(call, range(objects)))
        rates.append(objects / (time.perf_counter() - started))
        cpu.append((_cpu(pid) - cpu_before) / objects * 1e6)
    return rates[0], rates[1], cpu[0], cpu[1]


def write_journal(folder: Path, objects: int, size: int) -> None:
    """A journal of ``objects`` raw objects, written through moto and the server's own hooks
    (which patch moto's classes in this process: run it in a process of its own)."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    from feedlot_pipeline.local.journal import Journal
    from feedlot_pipeline.local.moto_journal import DurableState

    folder.mkdir(parents=True, exist_ok=True)
    journal = Journal(folder)
    journal.open_segment(journal.scan(), {"bench": True})
    state = DurableState(journal, [])
    state.install()
    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    body = _body(size)
    state.begin()
    backend.create_bucket("bench-replay", "us-east-1")
    state.end()
    for i in range(objects):
        state.begin()
        key = backend.put_object(
            "bench-replay", f"historico_diario/fazenda_um/2024/03/18/sns-{i}.jsonl", body
        )
        key.set_metadata({"x-amz-meta-correlation-id": f"c-{i}", "Content-Type": "text/plain"})
        state.end()
    journal.close()


@click.command(name="lake-bench")
@click.option("--objects", default=2000, show_default=True, help="PutObject (then GetObject).")
@click.option("--clients", default="1,8", show_default=True, help="Concurrent clients, each.")
@click.option("--size", default=1000, show_default=True, help="Bytes per object.")
@click.option("--replay", default=50000, show_default=True, help="Objects to replay (0: skip).")
def lake_bench(objects: int, clients: str, size: int, replay: int) -> None:
    """PutObject/GetObject per second with and without the local lake's journal; replay time."""
    work = Path(tempfile.mkdtemp(prefix="feedlot-lake-bench-"))
    try:
        click.echo(
            f"{objects} objects of {size} B per run: requests/s, and moto's own CPU per request "
            "(steadier than requests/s on a busy machine)"
        )
        click.echo(
            f"{'moto':<22}{'clients':>8}{'PutObject/s':>13}{'GetObject/s':>13}"
            f"{'CPU µs/Put':>12}{'CPU µs/Get':>12}"
        )
        for count in [int(c) for c in clients.split(",") if c.strip()]:
            for name, args in MODES.items():
                folder = work / f"{count}-{name.split()[0]}-{len(args)}"
                folder.mkdir()
                port = free_port()
                proc = _start(args, port, folder)
                try:
                    puts, gets, cpu_put, cpu_get = _throughput(proc.pid, port, objects, count, size)
                finally:
                    _stop(proc)
                click.echo(
                    f"{name:<22}{count:>8}{puts:>13.0f}{gets:>13.0f}{cpu_put:>12.0f}{cpu_get:>12.0f}"
                )
        if replay:
            folder = work / "replay"
            folder.mkdir()
            click.echo(f"\nwriting a journal of {replay} objects …")
            # In a process of its own: the hooks patch moto's classes for good.
            code = "import sys; from feedlot_pipeline.tools.bench.lake import write_journal; "
            code += (
                "write_journal(__import__('pathlib').Path(sys.argv[1]), *map(int, sys.argv[2:]))"
            )
            subprocess.run(
                [sys.executable, "-c", code, str(folder / "journal"), str(replay), str(size)],
                check=True,
            )
            port = free_port()
            started = time.perf_counter()
            proc = _start(MODES["journal (default)"], port, folder)
            listening = time.perf_counter() - started
            _stop(proc)
            restored = next(
                json.loads(line)
                for line in (folder / "moto.log").read_text().splitlines()
                if '"restored"' in line
            )
            click.echo(
                f"restart with {restored['objects']} objects "
                f"({restored['journal_bytes'] / 1e6:.0f} MB journal): listening after "
                f"{listening:.1f} s (read + replay {restored['total_seconds']:.1f} s, of which "
                f"replay {restored['seconds']:.1f} s)"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
