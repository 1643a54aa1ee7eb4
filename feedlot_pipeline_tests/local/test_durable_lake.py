"""The local lake survives moto: objects and dead letters across a SIGKILL, ``down``/``up``, and
an ``up`` that refuses a warehouse whose lake is gone (issue 11, point 5).

Against the real process (``python -m feedlot_pipeline.local.moto_server``) started through the
supervisor, as ``feedlot local up`` starts it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text

from feedlot_pipeline.core.aws import client
from feedlot_pipeline.core.settings import Settings
from feedlot_pipeline.local import components, stack, supervisor
from feedlot_pipeline.local.lake_guard import ACCEPT_FLAG
from feedlot_pipeline.local.services import LOOPBACK, ServiceError, port_open
from feedlot_pipeline.local.state import StatePaths, state_paths
from feedlot_pipeline.tools.local import local

AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
PART = 5 * 1024 * 1024  # S3's smallest multipart part


def kill(pid: int) -> None:
    """What the fault command does: SIGKILL, no chance to flush anything; returns at once (the
    port may stay open a moment while moto's threads exit: `up` must cope with that)."""
    os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while supervisor.is_running(pid) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    assert not supervisor.is_running(pid)


def moto_pid(paths: StatePaths) -> int:
    pid = supervisor.recorded_pid(paths, "moto", components.MOTO_MARKER)
    assert pid is not None
    return pid


def durable_queues(s: Settings) -> tuple[str, ...]:
    return (s.sensor_dlq, s.large_file_dlq, s.failures_inbox)


def lake_snapshot(s: Settings) -> dict:
    """Every object of the three buckets (bytes and what S3 says of it) and every message of the
    three dead-letter queues (body, attributes), as a client sees them."""
    s3, sqs = client("s3"), client("sqs")
    found: dict = {}
    for bucket in (s.landing_bucket, s.lake_bucket, s.processed_bucket):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                got = s3.get_object(Bucket=bucket, Key=item["Key"])
                found[(bucket, item["Key"])] = {
                    "body": got["Body"].read(),
                    "metadata": got["Metadata"],
                    "content_type": got["ContentType"],
                    "etag": got["ETag"],
                    "last_modified": got["LastModified"],
                    "listed": (item["ETag"], item["Size"], item["LastModified"]),
                }
        found[(bucket, "encryption")] = s3.get_bucket_encryption(Bucket=bucket)[
            "ServerSideEncryptionConfiguration"
        ]
    for name in durable_queues(s):
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        messages = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=0,  # a peek: visible again at once
            MessageAttributeNames=["All"],
            AttributeNames=["SentTimestamp"],
        ).get("Messages", [])
        found[("queue", name)] = sorted(
            (m["MessageId"], m["Body"], json.dumps(m.get("MessageAttributes"), sort_keys=True))
            + (m["Attributes"]["SentTimestamp"],)
            for m in messages
        )
    return found


@pytest.fixture()
def moto_stack(
    tmp_path: Path, ports: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[StatePaths, int, Settings]]:
    """The stack's moto alone (through the supervisor), resources named for this test."""
    port = ports["FEEDLOT_MOTO_PORT"]
    for key, value in AWS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{LOOPBACK}:{port}")
    tag = uuid.uuid4().hex[:8]
    for var, base in [
        ("FEEDLOT_LANDING_BUCKET", "landing"),
        ("FEEDLOT_LAKE_BUCKET", "lake"),
        ("FEEDLOT_PROCESSED_BUCKET", "processed"),
        ("FEEDLOT_SENSOR_QUEUE", "sensor"),
        ("FEEDLOT_SENSOR_DLQ", "sensor-dlq"),
        ("FEEDLOT_LARGE_FILE_QUEUE", "large"),
        ("FEEDLOT_LARGE_FILE_DLQ", "large-dlq"),
        ("FEEDLOT_FAILURE_TOPIC", "failures"),
        ("FEEDLOT_FAILURES_INBOX", "failures-inbox"),
    ]:
        monkeypatch.setenv(var, f"t{tag}-{base}")
    paths = state_paths(tmp_path / "state").prepare()
    settings = Settings()
    try:
        yield paths, port, settings
    finally:
        supervisor.stop(paths, "moto", components.MOTO_MARKER)


def start(paths: StatePaths, port: int, s: Settings) -> supervisor.ServiceInfo:
    return components.start_moto(paths, port, durable_queues=durable_queues(s))


def test_objects_and_dead_letters_survive_sigkill_and_a_clean_restart(moto_stack) -> None:
    from feedlot_pipeline.ingestion.queue_sensor import QueueMessage, park_message
    from feedlot_pipeline.local.provision import provision

    paths, port, s = moto_stack
    assert start(paths, port, s).state == "started"
    provisioned = provision(s, max_receive_count=1)
    s3, sqs = client("s3"), client("sqs")

    # Raw objects as the landing path writes them: user metadata, content type.
    raw_key = "historico_diario/fazenda_um/2024/03/18/sns-e1.jsonl"
    s3.put_object(
        Bucket=s.lake_bucket,
        Key=raw_key,
        Body=b'{"cod_cliente":"FazendaUm"}\n',
        ContentType="application/x-ndjson",
        Metadata={"correlation-id": "trace-1", "received-at": "2024-03-18T10:00:00+00:00"},
    )
    s3.put_object(Bucket=s.lake_bucket, Key="reference/gone.json", Body=b"{}")
    s3.delete_object(Bucket=s.lake_bucket, Key="reference/gone.json")
    s3.copy_object(
        Bucket=s.processed_bucket,
        Key="copies/raw.jsonl",
        CopySource={"Bucket": s.lake_bucket, "Key": raw_key},
    )
    # A multipart upload (its ETag is not an MD5 of the bytes) and a key that needs quoting.
    upload = s3.create_multipart_upload(Bucket=s.processed_bucket, Key="worker output/big.bin")
    parts = []
    for number, fill in ((1, b"a"), (2, b"b")):
        etag = s3.upload_part(
            Bucket=s.processed_bucket,
            Key="worker output/big.bin",
            UploadId=upload["UploadId"],
            PartNumber=number,
            Body=fill * (PART if number == 1 else 10),
        )["ETag"]
        parts.append({"ETag": etag, "PartNumber": number})
    s3.complete_multipart_upload(
        Bucket=s.processed_bucket,
        Key="worker output/big.bin",
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": parts},
    )
    # Firehose writes into the landing bucket inside moto (no S3 request of its own).
    client("firehose").put_record_batch(
        DeliveryStreamName=s.firehose_stream, Records=[{"Data": b'{"x": 1}\n'}]
    )

    # Dead letters, by each path that fills them: the sensor's parking (DLQ + failure topic →
    # inbox), SQS's own redrive after maxReceiveCount, a direct send.
    sqs.send_message(QueueUrl=provisioned.queue_url, MessageBody='{"notice": "parked"}')
    received = sqs.receive_message(QueueUrl=provisioned.queue_url, AttributeNames=["All"])
    msg = received["Messages"][0]
    park_message(
        sqs,
        provisioned.queue_url,
        s.sensor_dlq,
        provisioned.dlq_url,
        QueueMessage(msg["MessageId"], msg["Body"], msg["ReceiptHandle"], 1),
        "unreadable notice",
        "sensor_parse",
    )
    sqs.send_message(QueueUrl=provisioned.queue_url, MessageBody='{"notice": "redriven"}')
    first = sqs.receive_message(QueueUrl=provisioned.queue_url)["Messages"][0]
    sqs.change_message_visibility(
        QueueUrl=provisioned.queue_url, ReceiptHandle=first["ReceiptHandle"], VisibilityTimeout=0
    )
    assert not sqs.receive_message(QueueUrl=provisioned.queue_url).get("Messages")  # moved
    sqs.send_message(
        QueueUrl=provisioned.large_file_dlq_url,
        MessageBody='{"input_uri": "s3://x/y"}',
        MessageAttributes={
            "reason": {"DataType": "String", "StringValue": "malformed large_file message"},
            "stage": {"DataType": "String", "StringValue": "large_file_sensor"},
        },
    )
    sent = sqs.send_message(QueueUrl=provisioned.large_file_dlq_url, MessageBody="deleted")
    deleted = sqs.receive_message(
        QueueUrl=provisioned.large_file_dlq_url, MaxNumberOfMessages=10, VisibilityTimeout=0
    )
    for m in deleted["Messages"]:
        if m["MessageId"] == sent["MessageId"]:
            sqs.delete_message(
                QueueUrl=provisioned.large_file_dlq_url, ReceiptHandle=m["ReceiptHandle"]
            )

    before = lake_snapshot(s)
    lake_keys = [k for k in before if k[0] == s.lake_bucket and k[1] != "encryption"]
    assert lake_keys == [(s.lake_bucket, raw_key)]
    assert before[(s.lake_bucket, raw_key)]["metadata"] == {
        "correlation-id": "trace-1",
        "received-at": "2024-03-18T10:00:00+00:00",
    }
    assert before[(s.processed_bucket, "worker output/big.bin")]["etag"].endswith('-2"')
    assert any(k[1].startswith("incoming/firehose/") for k in before if k[0] == s.landing_bucket)
    sensor_dlq = before[("queue", s.sensor_dlq)]
    assert sorted(m[1] for m in sensor_dlq) == ['{"notice": "parked"}', '{"notice": "redriven"}']
    parked = next(m for m in sensor_dlq if m[1] == '{"notice": "parked"}')
    attributes = json.loads(parked[2])
    assert attributes["reason"]["StringValue"] == "unreadable notice"
    assert attributes["stage"]["StringValue"] == "sensor_parse"
    assert [m[1] for m in before[("queue", s.large_file_dlq)]] == ['{"input_uri": "s3://x/y"}']
    inbox = before[("queue", s.failures_inbox)]
    assert len(inbox) == 1 and json.loads(inbox[0][1])["reason"] == "unreadable notice"

    # SIGKILL: nothing flushed on the way out. The supervisor starts it again.
    kill(moto_pid(paths))
    deadline = time.monotonic() + 3  # the dying process may hold its port a moment
    while port_open(port) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not port_open(port)
    again = start(paths, port, s)
    assert again.state == "started"
    assert lake_snapshot(s) == before
    restored = [
        json.loads(line)
        for line in paths.log("moto").read_text().splitlines()
        if '"restored"' in line
    ][-1]
    assert restored["objects"] == len([k for k in before if k[0] != "queue"]) - 3
    assert restored["messages"] == 4 and restored["queues"] == 3 and restored["buckets"] == 3

    # A clean stop (what `feedlot local down` does) and a start: the same again; and a reused
    # moto is not restarted.
    assert start(paths, port, s).state == "reused"
    supervisor.stop(paths, "moto", components.MOTO_MARKER)
    assert start(paths, port, s).state == "started"
    assert lake_snapshot(s) == before
    # Provisioning again over the restored queues and buckets is a no-op, not a conflict.
    provision(s, max_receive_count=1)
    assert lake_snapshot(s) == before


def test_no_acknowledged_write_is_lost_when_moto_is_killed_mid_stream(moto_stack) -> None:
    """Writers put objects as fast as moto takes them; SIGKILL in the middle. Every PutObject
    that was answered is there afterwards, byte for byte (one cut short may or may not be)."""
    paths, port, s = moto_stack
    start(paths, port, s)
    client("s3").create_bucket(Bucket=s.lake_bucket)
    import boto3
    from botocore.config import Config

    s3 = boto3.client(
        "s3",
        endpoint_url=f"http://{LOOPBACK}:{port}",
        config=Config(retries={"max_attempts": 0}, max_pool_connections=8, connect_timeout=1),
    )
    acknowledged: dict[str, bytes] = {}
    stop = threading.Event()

    def writer(n: int) -> None:
        i = 0
        while not stop.is_set():
            key = f"historico_diario/f/2024/01/01/w{n}-{i}.jsonl"
            body = f"writer {n} record {i}\n".encode() * (1 + i % 50)
            try:
                s3.put_object(Bucket=s.lake_bucket, Key=key, Body=body)
            except Exception:  # noqa: BLE001 - moto is gone: this write was not acknowledged
                return
            acknowledged[key] = body
            i += 1

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    kill(moto_pid(paths))
    stop.set()
    for thread in threads:
        thread.join(10)
    assert len(acknowledged) > 50
    start(paths, port, s)
    listed = {
        item["Key"]
        for page in client("s3").get_paginator("list_objects_v2").paginate(Bucket=s.lake_bucket)
        for item in page.get("Contents", [])
    }
    assert set(acknowledged) <= listed
    assert len(listed - set(acknowledged)) <= len(threads)  # at most the writes cut short
    for key in list(acknowledged)[::7]:
        body = client("s3").get_object(Bucket=s.lake_bucket, Key=key)["Body"].read()
        assert body == acknowledged[key]


def test_a_second_moto_on_the_same_lake_is_refused(moto_stack, tmp_path: Path) -> None:
    """Two processes appending to one journal would corrupt it: the second one exits, and the
    supervisor's error carries its reason."""
    import subprocess
    import sys

    from feedlot_pipeline.local.services import free_port

    paths, port, s = moto_stack
    start(paths, port, s)
    other = free_port()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            components.MOTO_MARKER,
            "-p",
            str(other),
            "--journal",
            str(paths.lake),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 3
    assert "is in use by another moto process" in proc.stderr
    assert psutil.pid_exists(moto_pid(paths))


# --- the whole stack: `feedlot local up` after a kill, `down`/`up`, and the refusal ---------------


def _put_raw(s: Settings, key: str) -> None:
    client("s3").put_object(
        Bucket=s.lake_bucket,
        Key=key,
        Body=b'{"cod_cliente": "FazendaUm"}\n',
        Metadata={"correlation-id": "trace-2", "received-at": "2024-03-18T00:00:00+00:00"},
    )


def _head(s: Settings, key: str) -> dict:
    got = client("s3").get_object(Bucket=s.lake_bucket, Key=key)
    return {"body": got["Body"].read(), "metadata": got["Metadata"], "etag": got["ETag"]}


def _dlq_bodies(s: Settings) -> list[tuple[str, str, str]]:
    sqs = client("sqs")
    url = sqs.get_queue_url(QueueName=s.sensor_dlq)["QueueUrl"]
    messages = sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0, MessageAttributeNames=["All"]
    ).get("Messages", [])
    return sorted(
        (
            m["Body"],
            m["MessageAttributes"]["reason"]["StringValue"],
            m["MessageAttributes"]["stage"]["StringValue"],
        )
        for m in messages
    )


def _use(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)


def _insert_warehouse_row(url: str) -> None:
    from feedlot_pipeline.warehouse.engine import normalize_url

    engine = create_engine(normalize_url(url))
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO historico_consumo (id_treated_data, id_curral, id_raca, id_lote, "
                "peso_entrada, peso_medio, quantidade_animais, dia_confinamento, consumo_real, "
                "consumo_meta, data, cod_cliente, fazenda, regra_consumo_meta, raw_object_key, "
                "row_ts) VALUES (:id, '1', '2', '3', 250, 380, 40, 30, 8.4, 6.688, "
                "'2024-03-18', 'FazendaUm', 'fazenda_um', 'peso_medio_pct_1_76', :key, now())"
            ),
            {"id": str(uuid.uuid4()), "key": "historico_diario/fazenda_um/2024/03/18/sns-x.jsonl"},
        )
    engine.dispose()


@pytest.fixture()
def stack_warehouse(warehouse_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A migrated warehouse on the test server for the stack (no embedded server to start:
    these tests are about the lake); Dagster's database beside it is dropped afterwards."""
    monkeypatch.setenv("FEEDLOT_WAREHOUSE_URL", warehouse_url)
    yield warehouse_url
    from sqlalchemy.engine import make_url

    parsed = make_url(warehouse_url)
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{parsed.database}_dagster" WITH (FORCE)'))
    admin.dispose()


def test_stack_keeps_the_lake_across_a_moto_kill_and_down_up(
    tmp_path: Path,
    ports: dict[str, int],
    stack_warehouse: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state = tmp_path / "state"
    paths = state_paths(state)
    try:
        first = stack.up(state)
        _use(first.env, monkeypatch)
        s = Settings()
        key = "historico_diario/fazenda_um/2024/03/18/sns-k1.jsonl"
        _put_raw(s, key)
        sqs = client("sqs")
        sqs.send_message(
            QueueUrl=sqs.get_queue_url(QueueName=s.sensor_dlq)["QueueUrl"],
            MessageBody='{"notice": 1}',
            MessageAttributes={
                "reason": {"DataType": "String", "StringValue": "no such object"},
                "stage": {"DataType": "String", "StringValue": "sensor_notice"},
            },
        )
        object_before, dlq_before = _head(s, key), _dlq_bodies(s)
        assert dlq_before == [('{"notice": 1}', "no such object", "sensor_notice")]
        assert object_before["metadata"]["correlation-id"] == "trace-2"

        kill(moto_pid(paths))
        second = stack.up(state)  # what the fault command runs after its SIGKILL
        states = {i.name: i.state for i in second.services}
        assert states["moto"] == "started" and states["lambda_bridge"] == "reused"
        assert _head(s, key) == object_before
        assert _dlq_bodies(s) == dlq_before

        stack.down(state)  # make down; make dev
        third = stack.up(state)
        assert {i.name: i.state for i in third.services}["moto"] == "started"
        assert _head(s, key) == object_before
        assert _dlq_bodies(s) == dlq_before
        assert not third.notes
    finally:
        stack.down(state)


def test_up_refuses_a_warehouse_whose_lake_is_gone(
    tmp_path: Path,
    ports: dict[str, int],
    stack_warehouse: str,
) -> None:
    """A warehouse with rows and a lake without raw objects (here: a stack folder that never had
    a lake, as after an upgrade from the in-memory moto; or a lake folder deleted)."""
    state = tmp_path / "state"
    paths = state_paths(state)
    runner = CliRunner()
    _insert_warehouse_row(stack_warehouse)
    try:
        refused = runner.invoke(local, ["up", "--state-dir", str(state)])
        assert refused.exit_code == 1, refused.output
        assert "refusing to start: the local lake is gone" in refused.output
        assert "holds 1 row(s) in historico_consumo" in refused.output
        assert f"feedlot local up {ACCEPT_FLAG} --state-dir {paths.root}" in refused.output
        assert "empty the configured warehouse" in refused.output  # not ours to wipe
        assert not port_open(ports["FEEDLOT_MOTO_PORT"])  # what it started, it stopped
        assert not (state / "env").exists()

        accepted = stack.up(state, accept_empty_lake=True)
        assert any("going on as accepted" in note for note in accepted.notes)
        assert json.loads(paths.accepted_empty_lake.read_text())["warehouse_rows"] == 1
        again = stack.up(state)  # remembered: `make dev` runs a plain `up` next
        assert {i.name: i.state for i in again.services}["moto"] == "reused"
        assert any("going on as accepted" in note for note in again.notes)

        out = runner.invoke(local, ["down", "--wipe", "--state-dir", str(state)])
        assert out.exit_code == 0, out.output
        assert "lake" in out.output and "wiped" in out.output
        assert not paths.lake.exists()
        # The lake went again (with its acceptance); the configured warehouse was not touched.
        with pytest.raises(ServiceError, match="refusing to start"):
            stack.up(state)
    finally:
        stack.down(state)


def test_the_refusal_names_the_way_out(tmp_path: Path) -> None:
    from feedlot_pipeline.local.lake_guard import LakeState, check, refusal

    lost = LakeState(warehouse_rows=104, raw_objects=False)
    text_ = refusal(tmp_path / "moto", lost, "feedlot-lake", embedded=True)
    assert "holds 104 row(s)" in text_ and "feedlot-lake has no raw object" in text_
    assert f"feedlot local up {ACCEPT_FLAG}\n" in text_
    assert "feedlot local down --wipe && feedlot local up" in text_
    paths = state_paths(tmp_path).prepare()
    for fine in (LakeState(0, False), LakeState(5, True), LakeState(0, True)):
        assert check(paths, fine, "feedlot-lake", accept=False, embedded_warehouse=True) is None
    with pytest.raises(ServiceError, match="feedlot local up --accept-empty-lake"):
        check(paths, lost, "feedlot-lake", accept=False, embedded_warehouse=True)


def test_down_wipe_deletes_the_lake_and_the_embedded_warehouse(tmp_path: Path) -> None:
    paths = state_paths(tmp_path / "state").prepare()
    (paths.lake / "00000001.log").parent.mkdir(parents=True)
    (paths.lake / "00000001.log").write_bytes(b"x")
    paths.pg_data.mkdir(parents=True)
    (paths.pg_data / "PG_VERSION").write_text("18")
    assert "wiped" not in {i.state for i in stack.down(paths.root)}
    assert paths.lake.exists() and paths.pg_data.exists()  # a plain down keeps the data
    wiped = {i.name: i.detail for i in stack.down(paths.root, wipe=True) if i.state == "wiped"}
    assert wiped == {
        "lake": "S3 buckets, objects and dead letters",
        "postgres": "embedded warehouse and Dagster runs",
    }
    assert not paths.lake.exists() and not paths.pg_data.parent.exists()
    assert paths.root.exists()  # logs, env and records stay


def test_a_moto_from_before_the_lake_was_kept_is_replaced(moto_stack) -> None:
    """A stack started by an older version runs ``python -m moto.server``: `up` recognises it
    as its own (recorded marker), stops it and starts the journaled moto on the same port."""
    paths, port, s = moto_stack
    old = supervisor.ensure_running(
        paths,
        supervisor.ServiceSpec(
            "moto",
            "moto.server",
            ("-H", LOOPBACK, "-p", str(port)),
            port,
            "X",
            "moto",
            health=False,
        ),
    )
    info = start(paths, port, s)
    assert info.state == "restarted" and info.pid != old.pid
    assert not supervisor.is_running(old.pid)
    assert components.MOTO_MARKER in " ".join(psutil.Process(info.pid).cmdline())
