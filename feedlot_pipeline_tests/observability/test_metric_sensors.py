"""backlog_metrics_sensor and farm_freshness_sensor against moto's SQS and CloudWatch and a real
Dagster instance: what they emit is read back from CloudWatch."""

from __future__ import annotations

import json
import time

import dagster as dg
import pytest

from feedlot_pipeline.core.aws import client
from feedlot_pipeline.ingestion.partitions import farm_day_key, farms_partitions
from feedlot_pipeline.observability.sensors import (
    build_backlog_metrics_sensor,
    build_farm_freshness_sensor,
    silent_farms,
)
from feedlot_pipeline.warehouse.assets import HISTORICO_CONSUMO
from feedlot_pipeline_tests.helpers import metric_names, metric_stats


def test_backlog_sensor_emits_each_queue_depth_by_role(aws, metrics_ns: str) -> None:
    settings, prov = aws
    sqs = client("sqs")
    for i in range(3):
        sqs.send_message(QueueUrl=prov.queue_url, MessageBody=f"notice {i}")
    sqs.send_message(QueueUrl=prov.dlq_url, MessageBody="poison")
    sqs.send_message(QueueUrl=prov.large_file_dlq_url, MessageBody="bad large file")
    sqs.receive_message(QueueUrl=prov.queue_url, MaxNumberOfMessages=1)  # one in flight

    with dg.instance_for_test() as instance:
        result = build_backlog_metrics_sensor().evaluate_tick(
            dg.build_sensor_context(instance=instance)
        )
    assert "sensor 2 (+1 in flight)" in result.skip_message

    def depth(role: str) -> float:
        return metric_stats(metrics_ns, "QueueDepth", Queue=role)["Maximum"]

    assert (
        depth("sensor"),
        depth("sensor-dlq"),
        depth("large-files"),
        depth("large-files-dlq"),
    ) == (
        2,
        1,
        0,
        1,
    )
    assert metric_stats(metrics_ns, "QueueInFlight", Queue="sensor")["Maximum"] == 1
    assert {n for n, _ in metric_names(metrics_ns)} == {"QueueDepth", "QueueInFlight"}


def test_backlog_sensor_skips_a_missing_queue_and_reports_the_rest(
    aws, metrics_ns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEEDLOT_LARGE_FILE_DLQ", "queue-that-does-not-exist")
    with dg.instance_for_test() as instance:
        result = build_backlog_metrics_sensor().evaluate_tick(
            dg.build_sensor_context(instance=instance)
        )
    assert "large-files-dlq" not in result.skip_message
    roles = {dict(d)["Queue"] for n, d in metric_names(metrics_ns) if n == "QueueDepth"}
    assert roles == {"sensor", "sensor-dlq", "large-files"}


def _loaded(instance: dg.DagsterInstance, fazenda: str, day: str, loaded: int) -> None:
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            asset_key=HISTORICO_CONSUMO,
            partition=str(farm_day_key(fazenda, day)),
            metadata={"loaded": loaded},
        )
    )


def test_freshness_counts_farms_without_rows_incrementally(metrics_ns: str) -> None:
    sensor = build_farm_freshness_sensor()
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(
            farms_partitions.name, ["fazenda_um", "fazenda_dois", "_unrouted"]
        )
        _loaded(instance, "fazenda_um", "2024-03-18", 25)
        _loaded(instance, "fazenda_dois", "2024-03-18", 0)  # a load without rows is no sign
        _loaded(instance, "_unrouted", "2024-03-18", 0)

        first = sensor.evaluate_tick(dg.build_sensor_context(instance=instance))
        assert first.skip_message.startswith("1 of 3 farm(s) silent for 26 h: fazenda_dois")
        cursor = json.loads(first.cursor)
        assert set(cursor["last"]) == {"fazenda_um"} and cursor["after"] is not None

        _loaded(instance, "fazenda_dois", "2024-03-19", 3)
        second = sensor.evaluate_tick(
            dg.build_sensor_context(instance=instance, cursor=first.cursor)
        )
        assert second.skip_message.startswith("0 of 3 farm(s) silent")
        assert json.loads(second.cursor)["after"] > cursor["after"]  # read on from there

    stats = metric_stats(metrics_ns, "SilentFarms")
    assert (stats["SampleCount"], stats["Maximum"], stats["Minimum"]) == (2, 1, 0)


def test_silence_is_measured_against_the_configured_hours() -> None:
    now = time.time()
    last = {"fazenda_um": now - 25 * 3600, "fazenda_dois": now - 27 * 3600}
    farms = ["fazenda_um", "fazenda_dois", "fazenda_tres", "_unrouted"]
    assert silent_farms(farms, last, now, 26) == ["fazenda_dois", "fazenda_tres"]
    assert silent_farms(farms, last, now, 24) == ["fazenda_dois", "fazenda_tres", "fazenda_um"]
