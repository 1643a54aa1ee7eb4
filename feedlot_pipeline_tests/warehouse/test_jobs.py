"""ingest_batch_job: one run loads every noticed partition and reports each one on its own."""

from __future__ import annotations

import dagster as dg
from sqlalchemy import create_engine, text

from feedlot_pipeline.core import client_map
from feedlot_pipeline.ingestion.partitions import farms_partitions
from feedlot_pipeline.ingestion.resources import LakeResource, SensorQueueResource
from feedlot_pipeline.warehouse.checks import HISTORICO_CONSUMO
from feedlot_pipeline.warehouse.jobs import ingest_batch_job
from feedlot_pipeline.warehouse.resources import WarehouseResource
from feedlot_pipeline_tests.helpers import CLIENTS, land, metric_stats, record, tick


def run_batch(instance, settings, warehouse_url, run_config) -> dg.ExecuteInProcessResult:
    return ingest_batch_job.execute_in_process(
        run_config=run_config,
        instance=instance,
        resources={
            "lake": LakeResource(bucket=settings.lake_bucket),
            "warehouse": WarehouseResource(url=warehouse_url),
            "sensor_queue": SensorQueueResource(
                queue=settings.sensor_queue, dlq=settings.sensor_dlq
            ),
        },
    )


def events(result, kind: str) -> list:
    return [e for e in result.all_events if e.event_type_value == kind]


def test_one_run_reports_every_partition_and_a_rerun_writes_nothing(
    aws, warehouse_url, instance, metrics_ns
) -> None:
    settings, _ = aws
    client_map.publish(settings.lake_bucket, CLIENTS)
    land(
        settings, "a", [record(lote="1"), record(lote="2"), {**record(lote="9"), "peso_medio": -1}]
    )
    land(settings, "b", [record("FazendaDois", lote="3")])
    land(settings, "c", [record(day="2023-01-02", lote="4")])
    sensed = tick(instance, settings)
    for request in sensed.dynamic_partitions_requests:
        instance.add_dynamic_partitions(farms_partitions.name, list(request.partition_keys))
    (request,) = sensed.run_requests

    result = run_batch(instance, settings, warehouse_url, request.run_config)
    assert result.success
    mats = [
        e.event_specific_data.materialization
        for e in events(result, "ASSET_MATERIALIZATION")
        if e.event_specific_data.materialization.asset_key == HISTORICO_CONSUMO
    ]
    by_partition = {m.partition: {k: v.value for k, v in m.metadata.items()} for m in mats}
    assert sorted(by_partition) == [
        "2023-01-01|fazenda_dois",
        "2023-01-01|fazenda_um",
        "2023-01-02|fazenda_um",
    ]
    um = by_partition["2023-01-01|fazenda_um"]
    assert (um["landed"], um["inserted"], um["rejected"]) == (3, 2, 1)
    assert um["rejected_by_reason"] == {"non_positive": 1}
    checks = [e.event_specific_data for e in events(result, "ASSET_CHECK_EVALUATION")]
    assert len(checks) == 3 and all(c.passed for c in checks)
    assert {c.partition for c in checks} == set(by_partition)
    raw = [
        e.event_specific_data.materialization
        for e in events(result, "ASSET_MATERIALIZATION")
        if e.event_specific_data.materialization.asset_key.path == ["raw_consumption"]
    ]
    assert len(raw) == 3

    # The same batch again (a retried run, a redelivered notice): the ledger skips every object.
    again = run_batch(instance, settings, warehouse_url, request.run_config)
    assert again.success
    assert events(again, "ASSET_MATERIALIZATION") == []
    engine = create_engine(warehouse_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM historico_consumo")).scalar() == 4
        assert conn.execute(text("SELECT count(*) FROM historico_consumo_cargas")).scalar() == 3
        runs = conn.execute(text("SELECT DISTINCT run_id FROM historico_consumo_cargas")).all()
    engine.dispose()
    assert [r[0] for r in runs] == [result.run_id]

    # Each run sent its metrics (the rerun's zeros too: zeros are data).
    job = {"Job": "ingest_batch_job"}
    loaded = metric_stats(metrics_ns, "RowsLoaded", **job)
    assert loaded is not None and (loaded["Sum"], loaded["SampleCount"]) == (4, 2)
    assert metric_stats(metrics_ns, "RowsRejected", **job)["Sum"] == 1
    assert metric_stats(metrics_ns, "PartitionsLoaded", **job)["Sum"] == 3
    latency = metric_stats(metrics_ns, "EventToRowLatency", **job)
    assert latency is not None and latency["SampleCount"] == 4  # one per row loaded
    assert metric_stats(metrics_ns, "FarmRowsLoaded", Fazenda="fazenda_um")["Sum"] == 3


def test_the_sweep_loads_what_no_notice_brought(aws, warehouse_url, instance, monkeypatch) -> None:
    """Objects whose notices were lost (a queue wiped, a run that gave up) are found and loaded."""
    from datetime import datetime, timezone

    from feedlot_pipeline.ingestion.landing import land_records
    from feedlot_pipeline.warehouse.definitions import definitions

    settings, _ = aws
    monkeypatch.setenv("FEEDLOT_SWEEP_MIN_AGE_SECONDS", "0")
    today = datetime.now(timezone.utc).date().isoformat()
    client_map.publish(settings.lake_bucket, CLIENTS)
    instance.add_dynamic_partitions(farms_partitions.name, ["fazenda_um", "fazenda_dois"])
    for event, farm in (("s1", "FazendaUm"), ("s2", "FazendaDois"), ("s3", "FazendaUm")):
        land_records(
            [record(farm, day=today, lote=event[-1])],
            source="sns",
            event_id=event,
            clients=CLIENTS,
            settings=settings,
        )
    resources = {
        "lake": LakeResource(bucket=settings.lake_bucket),
        "warehouse": WarehouseResource(url=warehouse_url),
        "sensor_queue": SensorQueueResource(queue=settings.sensor_queue, dlq=settings.sensor_dlq),
    }
    defs = dg.Definitions.merge(definitions(), dg.Definitions(resources=resources))
    sweep = defs.resolve_sensor_def("lake_sweep_sensor")

    def evaluate():
        context = dg.build_sensor_context(instance=instance, resources=resources, definitions=defs)
        return sweep.evaluate_tick(context)

    (request,) = evaluate().run_requests
    objects = request.run_config["ops"]["load_noticed_objects"]["config"]["objects"]
    assert sum(len(keys) for keys in objects.values()) == 3
    assert request.tags["feedlot/trigger"] == "lake_sweep_sensor"
    assert run_batch(instance, settings, warehouse_url, request.run_config).success
    after = evaluate()
    assert after.run_requests == [] and "all loaded" in str(after.skip_message)


def test_the_sweep_spreads_a_pass_over_ticks_within_its_budget(
    aws, warehouse_url, instance, monkeypatch
) -> None:
    """With more farms than a tick's budget lists, the pass goes on where the last tick stopped,
    finds what lies beyond the first tick, and a new pass waits the sweep interval."""
    from datetime import datetime, timedelta, timezone

    from feedlot_pipeline.ingestion.landing import land_records
    from feedlot_pipeline.warehouse.definitions import definitions
    from feedlot_pipeline.warehouse.sensors import SweepCursor, sweep_farms

    settings, _ = aws
    now = datetime.now(timezone.utc)
    today = now.date()
    clients = {f"C{i}": f"fazenda_{i}" for i in range(5)}
    client_map.publish(settings.lake_bucket, clients)
    instance.add_dynamic_partitions(farms_partitions.name, sorted(clients.values()))
    # fazenda_3 has objects two days apart (one listing covers both) and one beyond the days swept
    for event, code, day in (
        ("e1", "C3", today),
        ("e2", "C3", today - timedelta(days=2)),
        ("e3", "C3", today - timedelta(days=5)),
    ):
        land_records(
            [record(code, day=day.isoformat(), lote=event)],
            source="sns",
            event_id=event,
            clients=clients,
            settings=settings,
        )
    lake = LakeResource(bucket=settings.lake_bucket)
    days = [today + timedelta(days=d) for d in range(-2, 2)]
    ticks = iter(range(1000))

    def clock() -> float:  # every farm listed costs one second
        return float(next(ticks))

    with WarehouseResource(url=warehouse_url).open() as wh:
        passes, after = [], None
        while True:
            swept = sweep_farms(
                lake,
                wh,
                sorted(clients.values()),
                days,
                min_age_seconds=0,
                now=now,
                after=after,
                budget_seconds=2,
                clock=clock,
            )
            passes.append(swept)
            after = swept.after
            if after is None:
                break
    assert [p.farms for p in passes] == [
        ["fazenda_0", "fazenda_1"],
        ["fazenda_2", "fazenda_3"],
        ["fazenda_4"],
    ]
    assert [p.after for p in passes] == ["fazenda_1", "fazenda_3", None]
    (found,) = [p.found for p in passes if p.found]
    assert sorted(found) == [
        f"{(today - timedelta(days=2)).isoformat()}|fazenda_3",
        f"{today.isoformat()}|fazenda_3",
    ]

    # The sensor keeps the pass in its cursor, tick after tick.
    monkeypatch.setenv("FEEDLOT_SWEEP_MIN_AGE_SECONDS", "0")
    monkeypatch.setenv("FEEDLOT_SWEEP_BUDGET_SECONDS", "0.000001")  # one farm per tick
    resources = {
        "lake": lake,
        "warehouse": WarehouseResource(url=warehouse_url),
        "sensor_queue": SensorQueueResource(queue=settings.sensor_queue, dlq=settings.sensor_dlq),
    }
    defs = dg.Definitions.merge(definitions(), dg.Definitions(resources=resources))
    sweep = defs.resolve_sensor_def("lake_sweep_sensor")
    cursor, results = None, []
    for _ in range(6):
        context = dg.build_sensor_context(
            instance=instance, resources=resources, definitions=defs, cursor=cursor
        )
        results.append(sweep.evaluate_tick(context))
        cursor = results[-1].cursor
    assert [bool(r.run_requests) for r in results] == [False, False, False, True, False, False]
    (request,) = results[3].run_requests
    objects = request.run_config["ops"]["load_noticed_objects"]["config"]["objects"]
    assert sum(len(keys) for keys in objects.values()) == 2
    assert "pass complete" in str(results[4].skip_message)
    assert "next starts" in str(results[5].skip_message)
    assert SweepCursor.parse(cursor).after is None

    # The next pass (its interval over) asks again for what is still unloaded, under a new run
    # key: a run of those objects that failed is not skipped by Dagster as already requested.
    cursor = SweepCursor(None, SweepCursor.parse(cursor).pass_started - 3600).to_json()
    again = []
    for _ in range(5):
        context = dg.build_sensor_context(
            instance=instance, resources=resources, definitions=defs, cursor=cursor
        )
        again.append(sweep.evaluate_tick(context))
        cursor = again[-1].cursor
    (second,) = [r for result in again for r in result.run_requests]
    assert second.run_config == request.run_config
    assert second.run_key != request.run_key


def test_a_noticed_object_that_is_gone_is_parked_by_the_run_and_redrives(
    aws, warehouse_url, instance
) -> None:
    """The sensor does not look for objects; the run that reads them parks a gone one's notice
    in the DLQ with its reason (and on the failure topic), as a notice that loads once redriven."""
    import json

    from feedlot_pipeline.core.aws import client
    from feedlot_pipeline.core.contracts import LandingNotice

    settings, prov = aws
    client_map.publish(settings.lake_bucket, CLIENTS)
    land(settings, "kept", [record(lote="1")])
    land(settings, "lost", [record(lote="2")])
    sensed = tick(instance, settings)
    for request in sensed.dynamic_partitions_requests:
        instance.add_dynamic_partitions(farms_partitions.name, list(request.partition_keys))
    (request,) = sensed.run_requests
    (keys,) = request.run_config["ops"]["load_noticed_objects"]["config"]["objects"].values()
    (gone,) = [k for k in keys if "lost" in k]
    s3 = client("s3")
    saved = s3.get_object(Bucket=settings.lake_bucket, Key=gone)
    body, metadata = saved["Body"].read(), saved["Metadata"]
    s3.delete_object(Bucket=settings.lake_bucket, Key=gone)

    result = run_batch(instance, settings, warehouse_url, request.run_config)
    assert result.success
    (mat,) = [
        e.event_specific_data.materialization
        for e in events(result, "ASSET_MATERIALIZATION")
        if e.event_specific_data.materialization.asset_key == HISTORICO_CONSUMO
    ]
    assert mat.metadata["landed"].value == 1  # the partition reports what it could read
    (dead,) = client("sqs").receive_message(QueueUrl=prov.dlq_url, MessageAttributeNames=["All"])[
        "Messages"
    ]
    reason = dead["MessageAttributes"]["reason"]["StringValue"]
    assert "does not exist in the lake" in reason and result.run_id in reason
    assert dead["MessageAttributes"]["stage"]["StringValue"] == "ingest_batch_job"
    notice = LandingNotice.parse(dead["Body"])
    assert (notice.key, notice.fazenda, notice.dia) == (gone, "fazenda_um", "2023-01-01")

    # Restored and redriven: the sensor takes the parked notice and the next run loads it.
    s3.put_object(Bucket=settings.lake_bucket, Key=gone, Body=body, Metadata=metadata)
    sqs = client("sqs")
    sqs.send_message(QueueUrl=prov.queue_url, MessageBody=dead["Body"])
    sqs.delete_message(QueueUrl=prov.dlq_url, ReceiptHandle=dead["ReceiptHandle"])
    (again,) = tick(instance, settings, sensed.cursor).run_requests
    assert run_batch(instance, settings, warehouse_url, again.run_config).success
    engine = create_engine(warehouse_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM historico_consumo")).scalar() == 2
    engine.dispose()
    assert json.loads(dead["Body"])["source"] == "batch-run"
