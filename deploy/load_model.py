"""The arithmetic behind deploy/LOAD_MODEL.md: 1,000 farms x 10,000 records/day.

Every figure in LOAD_MODEL.md's tables is computed here from the inputs below, each marked as
measured on the project's 2-core machine (with the command that measured it) or assumed (with
its reason). Change an input, run ``python deploy/load_model.py``, and paste the tables; a test
(feedlot_pipeline_tests/deploy/test_load_model.py) checks the document still shows what this
prints.
"""

from __future__ import annotations

from dataclasses import dataclass

DAY = 86_400
MONTH_DAYS = 30.4
HOURS_MONTH = 730


@dataclass(frozen=True)
class Input:
    value: float
    source: str  # "measured: ..." or "assumed: ..."


# --- inputs ------------------------------------------------------------------------------------
FARMS = Input(1_000, "given (issue 15)")
RECORDS_PER_FARM_DAY = Input(10_000, "given (issue 15)")
RECORD_BYTES = Input(263, "measured: python deploy/load_model.py --measure (262.6 B/JSON line)")
ROW_BYTES = Input(356, "measured: same run, pg_total_relation_size/rows 355-356 (heap 267)")
INDEX_BYTES = Input(89, "measured: same run, pg_indexes_size / rows")
LOAD_ROWS_S = Input(50_000, "measured: feedlot bench --records 1000000, 46-76k rows/s (lower end)")
LOAD_RSS_MB = Input(269, "measured: feedlot bench peak RSS 216-269 MB at 1M records")
RUN_OVERHEAD_S = Input(4, "measured: local per-partition Dagster run ~4 s wall (in-process)")
TICK_TO_SUCCESS_S = Input(8, "measured: local sensor tick -> run success ~8 s")
API_RECORDS_S_1 = Input(
    1_348, "measured: feedlot api-bench --records 5000 --clients 1,4 (1 client)"
)
API_RECORDS_S_4 = Input(3_005, "measured: same run, 4 clients (100 records/request, 2 cores)")
FARGATE_START_S = Input(60, "assumed: Fargate task to RUNNING with a ~0.5 GB image, 45-90 s")
FILE_WINDOW_H = Input(1, "assumed: daily files all arrive within one hour after day close")
STREAM_EVENT_EVERY_S = Input(60, "assumed: each farm publishes one event per minute")
STREAM_PEAK = Input(5, "assumed: feeding rounds concentrate events 5x the day's average")
FILE_CHUNK_RECORDS = Input(5_000, "setting: FEEDLOT_FILEDROP_CHUNK_RECORDS (raw objects per file)")
BATCH_MAX_RECORDS = Input(200_000, "lead (issue 10): <= 200,000 records per batch run")
SENSOR_TICK_S = Input(3, "setting: FEEDLOT_SENSOR_INTERVAL_SECONDS")
SENSOR_MAX_NOTICES = Input(5000, "setting: FEEDLOT_SENSOR_MAX_NOTICES per tick")
EVENTS_PER_PARTITION = Input(5, "assumed: issue 10 logs 1 materialization + 4 check results")
DAGSTER_EVENT_BYTES = Input(1_500, "assumed: one event_logs row with metadata, ~1.5 KB")
LAMBDA_MS = Input(100, "assumed: SNS handler per event, from the local API p50 of 76 ms")
IOPS_PER_ROW_COLD = Input(2, "assumed: random PK leaf read + page write when the index is cold")
GP3_BASE_IOPS = Input(3_000, "AWS: gp3 baseline below 400 GiB (RDS)")

# --- prices (us-east-1, on demand, list prices; assumed current - check before budgeting) -----
P = {
    "fargate_vcpu_h": 0.04048,
    "fargate_gb_h": 0.004445,
    "rds_m7g_large_maz_h": 0.336,
    "rds_gp3_maz_gb_month": 0.23,
    "ec2_m7i_large_h": 0.1008,
    "ebs_gp3_gb_month": 0.08,
    "endpoint_az_h": 0.01,
    "alb_h": 0.0225,
    "alb_lcu_h": 0.008,
    "lambda_req_m": 0.20,
    "lambda_gb_s": 0.0000166667,
    "sns_publish_m": 0.50,
    "sqs_req_m": 0.40,
    "s3_put_k": 0.005,
    "s3_get_k": 0.0004,
    "s3_gb_month": 0.023,
    "secret_month": 0.40,
    "secret_calls_10k": 0.05,
    "logs_gb": 0.50,
}


def fargate_h(vcpu: float, gb: float) -> float:
    return vcpu * P["fargate_vcpu_h"] + gb * P["fargate_gb_h"]


def model() -> dict[str, dict[str, float]]:
    farms, per_farm = FARMS.value, RECORDS_PER_FARM_DAY.value
    records_day = farms * per_farm
    avg_rs = records_day / DAY

    # Daily files: one file per farm per day, all within FILE_WINDOW_H.
    files_peak_rs = records_day / (FILE_WINDOW_H.value * 3600)
    files_raw_objects = farms * -(-per_farm // FILE_CHUNK_RECORDS.value)
    files_runs = max(records_day / BATCH_MAX_RECORDS.value, 1)
    files_run_s = (
        FARGATE_START_S.value + RUN_OVERHEAD_S.value + BATCH_MAX_RECORDS.value / (LOAD_ROWS_S.value)
    )
    files_task_h_day = files_runs * files_run_s / 3600

    # Stream: each farm one event per STREAM_EVENT_EVERY_S; batches back to back.
    events_day = farms * DAY / STREAM_EVENT_EVERY_S.value
    events_avg_s = events_day / DAY
    events_peak_s = events_avg_s * STREAM_PEAK.value
    # A batch loads what arrived during the previous batch: cycle = start + overhead + load of
    # avg_rs x cycle records, solved for cycle.
    cycle_s = (FARGATE_START_S.value + RUN_OVERHEAD_S.value) / (1 - avg_rs / LOAD_ROWS_S.value)
    stream_runs = DAY / cycle_s
    # Partitions per batch: every farm that sent during the cycle (farm x today).
    partitions_per_batch = min(farms, farms * cycle_s / STREAM_EVENT_EVERY_S.value)
    dagster_events_day = stream_runs * partitions_per_batch * EVENTS_PER_PARTITION.value
    p95_latency_s = 2 * cycle_s  # wait out the running batch, then one full batch
    sensor_cap = SENSOR_MAX_NOTICES.value / SENSOR_TICK_S.value

    rows_gb_month = records_day * ROW_BYTES.value * MONTH_DAYS / 1e9
    index_gb_day = records_day * INDEX_BYTES.value / 1e9
    raw_gb_day = records_day * RECORD_BYTES.value / 1e9

    common = {
        "records_day": records_day,
        "avg_records_s": avg_rs,
        "warehouse_gb_month": rows_gb_month,
        "pk_index_gb_day": index_gb_day,
        "raw_zone_gb_day": raw_gb_day,
        "rds_iops_avg_cold": avg_rs * IOPS_PER_ROW_COLD.value,
        "sensor_ticks_day": DAY / SENSOR_TICK_S.value,
        "sensor_cap_notices_s": sensor_cap,
    }
    files = {
        "peak_records_s": files_peak_rs,
        "peak_events_s": farms / (FILE_WINDOW_H.value * 3600),
        "raw_objects_day": files_raw_objects,
        "runs_day": files_runs,
        "run_task_h_day": files_task_h_day,
        "lambda_invocations_day": farms,
        "notices_day": files_raw_objects,
        "rds_iops_peak_cold": files_peak_rs * IOPS_PER_ROW_COLD.value,
        "p95_event_to_row_s": FILE_WINDOW_H.value * 3600 / files_runs + files_run_s,
        "partitions_per_batch": BATCH_MAX_RECORDS.value / per_farm,
        "dagster_events_day": files_runs
        * (BATCH_MAX_RECORDS.value / per_farm)
        * EVENTS_PER_PARTITION.value,
    }
    files["dagster_event_gb_month"] = (
        files["dagster_events_day"] * DAGSTER_EVENT_BYTES.value * MONTH_DAYS / 1e9
    )
    stream = {
        "peak_records_s": avg_rs * STREAM_PEAK.value,
        "peak_events_s": events_peak_s,
        "raw_objects_day": events_day,
        "runs_day": stream_runs,
        "run_task_h_day": stream_runs * cycle_s / 3600,
        "lambda_invocations_day": events_day,
        "notices_day": events_day,
        "rds_iops_peak_cold": avg_rs * STREAM_PEAK.value * IOPS_PER_ROW_COLD.value,
        "p95_event_to_row_s": p95_latency_s,
        "batch_cycle_s": cycle_s,
        "partitions_per_batch": partitions_per_batch,
        "dagster_events_day": dagster_events_day,
        "dagster_event_gb_month": dagster_events_day * DAGSTER_EVENT_BYTES.value * MONTH_DAYS / 1e9,
    }
    return {"common": common, "files": files, "stream": stream}


def monthly_costs(m: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    fixed = {
        "VPC interface endpoints (12 x 2 AZ)": 12 * 2 * P["endpoint_az_h"] * HOURS_MONTH,
        "ALB (internal, ~1 LCU)": (P["alb_h"] + P["alb_lcu_h"]) * HOURS_MONTH,
        "ECS services (code server, daemon, webserver)": (2 * fargate_h(0.5, 2) + fargate_h(1, 2))
        * HOURS_MONTH,
        "RDS db.m7g.large Multi-AZ": P["rds_m7g_large_maz_h"] * HOURS_MONTH,
        "RDS gp3 storage (first month, 100 GB + growth)": (100 + m["common"]["warehouse_gb_month"])
        * P["rds_gp3_maz_gb_month"],
        "EC2 worker m7i.large + 120 GB gp3": P["ec2_m7i_large_h"] * HOURS_MONTH
        + 120 * P["ebs_gp3_gb_month"],
        "Secrets Manager (3 secrets)": 3 * P["secret_month"],
        "CloudWatch Logs (~30 GB)": 30 * P["logs_gb"],
        "S3 raw zone (first month)": m["common"]["raw_zone_gb_day"] * MONTH_DAYS * P["s3_gb_month"],
    }
    per_mode = {}
    for mode in ("files", "stream"):
        x = m[mode]
        requests_month = x["lambda_invocations_day"] * MONTH_DAYS
        lam_gb = 1.0 if mode == "files" else 0.256
        lam_s = 2.0 if mode == "files" else LAMBDA_MS.value / 1000
        per_mode[mode] = {
            "Fargate run tasks (1 vCPU / 4 GB)": x["run_task_h_day"] * MONTH_DAYS * fargate_h(1, 4),
            "Lambda (requests + GB-s)": requests_month * P["lambda_req_m"] / 1e6
            + requests_month * lam_gb * lam_s * P["lambda_gb_s"],
            "SNS publishes": (requests_month * P["sns_publish_m"] / 1e6) if mode == "stream" else 0,
            "SQS (send, receive, delete)": x["notices_day"]
            * MONTH_DAYS
            * 1.3
            * P["sqs_req_m"]
            / 1e6
            + m["common"]["sensor_ticks_day"] * MONTH_DAYS * P["sqs_req_m"] / 1e6,
            "S3 PUT raw objects": x["raw_objects_day"] * MONTH_DAYS * P["s3_put_k"] / 1e3,
            "S3 GET raw objects": x["raw_objects_day"] * MONTH_DAYS * P["s3_get_k"] / 1e3,
        }
    return {"fixed": fixed, **per_mode}


def _n(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:,.1f}"


def headline_table() -> str:
    """The headline table of LOAD_MODEL.md (markdown), from the model above."""
    m = model()
    costs = monthly_costs(m)
    base = sum(costs["fixed"].values())
    c, f, s = m["common"], m["files"], m["stream"]
    rows = [
        ("records/day", _n(c["records_day"]), _n(c["records_day"])),
        (
            "records/s, average / peak",
            f"{_n(c['avg_records_s'])} / {_n(f['peak_records_s'])}",
            f"{_n(c['avg_records_s'])} / {_n(s['peak_records_s'])}",
        ),
        ("events/s at peak (files or messages)", _n(f["peak_events_s"]), _n(s["peak_events_s"])),
        ("raw objects/day", _n(f["raw_objects_day"]), _n(s["raw_objects_day"])),
        ("sensor notices/day", _n(f["notices_day"]), _n(s["notices_day"])),
        ("Dagster runs/day (batched)", _n(f["runs_day"]), _n(s["runs_day"])),
        ("sensor ticks/day (3 s)", _n(c["sensor_ticks_day"]), _n(c["sensor_ticks_day"])),
        ("run task-hours/day (1 vCPU/4 GB)", _n(f["run_task_h_day"]), _n(s["run_task_h_day"])),
        (
            "Lambda invocations/day",
            _n(f["lambda_invocations_day"]),
            _n(s["lambda_invocations_day"]),
        ),
        ("warehouse growth GB/month", _n(c["warehouse_gb_month"]), _n(c["warehouse_gb_month"])),
        (
            "Dagster event-log growth GB/month",
            _n(f["dagster_event_gb_month"]),
            _n(s["dagster_event_gb_month"]),
        ),
        (
            "RDS IOPS at peak, index not cached",
            _n(f["rds_iops_peak_cold"]),
            _n(s["rds_iops_peak_cold"]),
        ),
        (
            "p95 event -> row (s), EcsRunLauncher",
            _n(f["p95_event_to_row_s"]),
            _n(s["p95_event_to_row_s"]),
        ),
        (
            "monthly cost, USD",
            f"{base + sum(costs['files'].values()):,.0f}",
            f"{base + sum(costs['stream'].values()):,.0f}",
        ),
    ]
    lines = ["| | daily files | stream |", "|---|---:|---:|"]
    lines += [f"| {a} | {b} | {c_} |" for a, b, c_ in rows]
    return "\n".join(lines)


def measure(records: int = 200_000) -> None:
    """Bytes per raw record and per warehouse row, loading ``records`` generated records into
    an embedded PostgreSQL with the real load path (what RECORD_BYTES/ROW_BYTES came from)."""
    import tempfile
    import time
    from contextlib import ExitStack
    from pathlib import Path

    from sqlalchemy import create_engine, text

    from feedlot_pipeline.tools.bench.load import (
        generate_file,
        scratch_database,
        server_or_embedded,
    )
    from feedlot_pipeline.warehouse.loader import load_file
    from feedlot_pipeline.warehouse.schema import upgrade
    from feedlot_pipeline.warehouse.store import Warehouse

    # The directory (embedded server's data) outlives the stack (which drops the database).
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        work = Path(tmp)
        path = work / "records.jsonl"
        generate_file(path, records, 7, 0.0)
        raw_bytes = path.stat().st_size
        url = scratch_database(stack, server_or_embedded(stack, None, work))
        upgrade(url)
        warehouse = Warehouse(url)
        warehouse.clients()
        started = time.perf_counter()
        load_file(warehouse, path, object_key="load-model/records.jsonl", chunk_rows=25_000)
        seconds = time.perf_counter() - started
        warehouse.dispose()
        engine = create_engine(url)
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT count(*) FROM historico_consumo")).scalar()
            total, heap, index = conn.execute(
                text(
                    "SELECT pg_total_relation_size('historico_consumo'), "
                    "pg_relation_size('historico_consumo'), pg_indexes_size('historico_consumo')"
                )
            ).one()
        engine.dispose()
    print(f"records {records:,}, raw bytes/record {raw_bytes / records:.1f}")
    print(f"load {seconds:.1f} s ({records / seconds:,.0f} rows/s)")
    print(
        f"bytes/row total {total / rows:.0f} (heap {heap / rows:.0f}, indexes {index / rows:.0f})"
    )


def main() -> None:
    import sys

    if "--measure" in sys.argv:
        measure()
        return
    m = model()
    for section, values in m.items():
        print(f"[{section}]")
        for key, value in values.items():
            print(f"  {key:28s} {value:>16,.1f}")
    costs = monthly_costs(m)
    for section, items in costs.items():
        total = sum(items.values())
        print(f"[cost {section}] total ${total:,.0f}/month")
        for name, value in items.items():
            print(f"  {name:52s} ${value:>9,.2f}")
    base = sum(costs["fixed"].values())
    print(f"[total] files ${base + sum(costs['files'].values()):,.0f}/month, ", end="")
    print(f"stream ${base + sum(costs['stream'].values()):,.0f}/month")
    print()
    print(headline_table())


if __name__ == "__main__":
    main()
