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
RUN_OVERHEAD_S = Input(
    4, "measured: local in-process Dagster run ~4 s wall besides the load (soak: replace)"
)
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
SENSOR_TICK_S = Input(3, "setting: FEEDLOT_SENSOR_INTERVAL_SECONDS")
SENSOR_MAX_NOTICES = Input(5000, "setting: FEEDLOT_SENSOR_MAX_NOTICES per tick")
MAX_OBJECTS_PER_RUN = Input(20_000, "setting: ingestion/sensors.py MAX_OBJECTS_PER_RUN")
LOAD_EVENTS_PER_PARTITION = Input(
    3,
    "given: a load batch logs raw_consumption + historico_consumo materializations and one "
    "loaded_as_landed check result per partition (ingestion, warehouse/events.py)",
)
ANALYTICS_INTERVAL_S = Input(10, "setting: FEEDLOT_ANALYTICS_REFRESH_INTERVAL_SECONDS")
ANALYTICS_SETTLE_S = Input(10, "setting: FEEDLOT_ANALYTICS_REFRESH_SETTLE_SECONDS")
ANALYTICS_MAX_PARTITIONS = Input(2_000, "setting: FEEDLOT_ANALYTICS_REFRESH_MAX_PARTITIONS")
ANALYTICS_EVENTS_PER_PARTITION = Input(
    8,
    "given: analytics_refresh_job logs 4 materializations (consumo_diario, describe, 2 curated) "
    "+ 4 check results per partition (analytics/partition.py)",
)
ANALYTICS_PUTS_PER_PARTITION = Input(
    3, "given: describe CSV + curated historico_consumo and consumo_diario Parquet per partition"
)
ANALYTICS_S_PER_PARTITION = Input(
    0.1,
    "assumed: one INSERT ... SELECT + 3 S3 PUTs per partition over 2 DB / 4 S3 workers "
    "(soak: replace with the analytics run's 'refreshed N partition(s) in X s')",
)
RUN_FIXED_EVENTS = Input(
    30, "assumed: event_logs rows of any run besides its partitions' (status, step, engine, logs)"
)
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


def cycle(arrival_per_s: float, work_s_per_unit: float) -> float:
    """Seconds of one batch of a lane that runs one at a time, back to back: a container start and
    the run overhead, plus the work of what arrived during the previous batch (solved for the
    steady state: c = fixed + rate x c x work). Never shorter than a sensor tick."""
    fixed = FARGATE_START_S.value + RUN_OVERHEAD_S.value
    busy = arrival_per_s * work_s_per_unit
    if busy >= 1:
        raise ValueError("the lane cannot keep up: work per second of arrivals >= 1 s")
    return max(fixed / (1 - busy), SENSOR_TICK_S.value)


def refresh_cycle(partitions_s: float, farms: float) -> float:
    """Seconds of one analytics run, back to back: its work is the partitions loaded since the
    previous run, each once however many batches loaded it - at most every farm's today."""
    fixed = FARGATE_START_S.value + RUN_OVERHEAD_S.value
    per_partition = ANALYTICS_S_PER_PARTITION.value
    if partitions_s * per_partition < 1:
        steady = fixed / (1 - partitions_s * per_partition)
        if partitions_s * steady <= farms:
            return max(steady, ANALYTICS_INTERVAL_S.value)
    return max(fixed + farms * per_partition, ANALYTICS_INTERVAL_S.value)


def lanes(
    window_s: float, records_s: float, objects_s: float, partitions_s: float, farms: float
) -> dict[str, float]:
    """Load batches (stream lane) and analytics refreshes (analytics lane) over ``window_s`` of
    arrivals: one load run per sensor tick that finds notices and no batch in flight, one
    analytics run per sensor tick that finds loaded partitions and no refresh in flight."""
    load_cycle = cycle(records_s, 1 / LOAD_ROWS_S.value)
    load_runs = window_s / load_cycle
    load_partitions = min(farms, partitions_s * load_cycle)
    # The analytics lane refreshes every partition loaded since its last run; a partition loaded
    # in several batches meanwhile is refreshed once.
    analytics_cycle = refresh_cycle(partitions_s, farms)
    analytics_runs = window_s / analytics_cycle
    analytics_partitions = min(
        farms, partitions_s * analytics_cycle, ANALYTICS_MAX_PARTITIONS.value
    )
    events = load_runs * (
        load_partitions * LOAD_EVENTS_PER_PARTITION.value + RUN_FIXED_EVENTS.value
    ) + analytics_runs * (
        analytics_partitions * ANALYTICS_EVENTS_PER_PARTITION.value + RUN_FIXED_EVENTS.value
    )
    return {
        "load_cycle_s": load_cycle,
        "runs_day": load_runs,
        "objects_per_batch": objects_s * load_cycle,
        "partitions_per_batch": load_partitions,
        "run_task_h_day": load_runs * load_cycle / 3600,
        "analytics_cycle_s": analytics_cycle,
        "analytics_runs_day": analytics_runs,
        "analytics_partitions_per_run": analytics_partitions,
        "analytics_task_h_day": analytics_runs * analytics_cycle / 3600,
        "analytics_puts_day": analytics_runs
        * analytics_partitions
        * ANALYTICS_PUTS_PER_PARTITION.value,
        "analytics_notices_day": analytics_runs * analytics_partitions,
        "dagster_events_day": events,
        "dagster_event_gb_month": events * DAGSTER_EVENT_BYTES.value * MONTH_DAYS / 1e9,
    }


def summary_latency(lane: dict[str, float]) -> float:
    """p95 event -> consumo_diario: wait out the running load batch and its own; the loaded
    partition settles, then waits out the running refresh and its own."""
    return 2 * lane["load_cycle_s"] + ANALYTICS_SETTLE_S.value + 2 * lane["analytics_cycle_s"]


def model() -> dict[str, dict[str, float]]:
    farms, per_farm = FARMS.value, RECORDS_PER_FARM_DAY.value
    records_day = farms * per_farm
    avg_rs = records_day / DAY

    # Daily files: one file per farm per day, all within FILE_WINDOW_H.
    window_s = FILE_WINDOW_H.value * 3600
    files_peak_rs = records_day / window_s
    files_raw_objects = farms * -(-per_farm // FILE_CHUNK_RECORDS.value)
    files_lanes = lanes(
        window_s, files_peak_rs, files_raw_objects / window_s, farms / window_s, farms
    )

    # Stream: each farm one event per STREAM_EVENT_EVERY_S, every event a raw object.
    events_day = farms * DAY / STREAM_EVENT_EVERY_S.value
    events_avg_s = events_day / DAY
    events_peak_s = events_avg_s * STREAM_PEAK.value
    # Every farm that sent during a cycle is a partition (farm x today).
    stream_lanes = lanes(DAY, avg_rs, events_avg_s, farms / STREAM_EVENT_EVERY_S.value, farms)
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
        "batch_objects_cap": min(SENSOR_MAX_NOTICES.value, MAX_OBJECTS_PER_RUN.value),
    }
    files = {
        "peak_records_s": files_peak_rs,
        "peak_events_s": farms / window_s,
        "raw_objects_day": files_raw_objects,
        "lambda_invocations_day": farms,
        "notices_day": files_raw_objects,
        "rds_iops_peak_cold": files_peak_rs * IOPS_PER_ROW_COLD.value,
        "p95_event_to_row_s": files_lanes["load_cycle_s"] * 2,
        "p95_event_to_summary_s": summary_latency(files_lanes),
        **files_lanes,
    }
    stream = {
        "peak_records_s": avg_rs * STREAM_PEAK.value,
        "peak_events_s": events_peak_s,
        "raw_objects_day": events_day,
        "lambda_invocations_day": events_day,
        "notices_day": events_day,
        "rds_iops_peak_cold": avg_rs * STREAM_PEAK.value * IOPS_PER_ROW_COLD.value,
        # Wait out the running batch, then one full batch; the summary one refresh later.
        "p95_event_to_row_s": 2 * stream_lanes["load_cycle_s"],
        "p95_event_to_summary_s": summary_latency(stream_lanes),
        "batch_cycle_s": stream_lanes["load_cycle_s"],
        **stream_lanes,
    }
    return {"common": common, "files": files, "stream": stream}


def monthly_costs(m: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    fixed = {
        "VPC interface endpoints (13 x 2 AZ)": 13 * 2 * P["endpoint_az_h"] * HOURS_MONTH,
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
            "Fargate load runs (1 vCPU / 4 GB)": x["run_task_h_day"] * MONTH_DAYS * fargate_h(1, 4),
            "Fargate analytics runs (1 vCPU / 4 GB)": x["analytics_task_h_day"]
            * MONTH_DAYS
            * fargate_h(1, 4),
            "Lambda (requests + GB-s)": requests_month * P["lambda_req_m"] / 1e6
            + requests_month * lam_gb * lam_s * P["lambda_gb_s"],
            "SNS publishes (events; processed-events notices)": (
                (requests_month if mode == "stream" else 0)
                + x["analytics_notices_day"] * MONTH_DAYS
            )
            * P["sns_publish_m"]
            / 1e6,
            "SQS (send, receive, delete)": x["notices_day"]
            * MONTH_DAYS
            * 1.3
            * P["sqs_req_m"]
            / 1e6
            + m["common"]["sensor_ticks_day"] * MONTH_DAYS * P["sqs_req_m"] / 1e6,
            "S3 PUT raw objects": x["raw_objects_day"] * MONTH_DAYS * P["s3_put_k"] / 1e3,
            "S3 GET raw objects": x["raw_objects_day"] * MONTH_DAYS * P["s3_get_k"] / 1e3,
            "S3 PUT analytics outputs (describe, curated)": x["analytics_puts_day"]
            * MONTH_DAYS
            * P["s3_put_k"]
            / 1e3,
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
        ("sensor ticks/day (3 s)", _n(c["sensor_ticks_day"]), _n(c["sensor_ticks_day"])),
        ("load runs/day (a batch per tick, one at a time)", _n(f["runs_day"]), _n(s["runs_day"])),
        (
            "partitions / raw objects per load run",
            f"{_n(f['partitions_per_batch'])} / {_n(f['objects_per_batch'])}",
            f"{_n(s['partitions_per_batch'])} / {_n(s['objects_per_batch'])}",
        ),
        ("analytics runs/day", _n(f["analytics_runs_day"]), _n(s["analytics_runs_day"])),
        (
            "run task-hours/day, loads + analytics (1 vCPU/4 GB)",
            _n(f["run_task_h_day"] + f["analytics_task_h_day"]),
            _n(s["run_task_h_day"] + s["analytics_task_h_day"]),
        ),
        (
            "Lambda invocations/day",
            _n(f["lambda_invocations_day"]),
            _n(s["lambda_invocations_day"]),
        ),
        ("warehouse growth GB/month", _n(c["warehouse_gb_month"]), _n(c["warehouse_gb_month"])),
        (
            "Dagster event-log rows/day (loads + analytics)",
            _n(f["dagster_events_day"]),
            _n(s["dagster_events_day"]),
        ),
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
            "p95 event -> row / -> summary (s)",
            f"{_n(f['p95_event_to_row_s'])} / {_n(f['p95_event_to_summary_s'])}",
            f"{_n(s['p95_event_to_row_s'])} / {_n(s['p95_event_to_summary_s'])}",
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
