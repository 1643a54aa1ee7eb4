"""deploy/LOAD_MODEL.md shows what deploy/load_model.py computes (no hand-edited numbers)."""

from __future__ import annotations

import importlib.util
import re
import sys

from feedlot_pipeline_tests.deploy.cfn import REPO, TEMPLATE_DIR, load_template

DOC = REPO / "deploy" / "LOAD_MODEL.md"


def _module():
    spec = importlib.util.spec_from_file_location("load_model", REPO / "deploy" / "load_model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the class is created.
    sys.modules.setdefault("load_model", module)
    spec.loader.exec_module(module)
    return module


def test_headline_table_is_what_the_model_prints() -> None:
    text = DOC.read_text()
    block = re.search(r"<!-- headline:.*?-->\n(.*?)<!-- /headline -->", text, re.S)
    assert block, "headline markers missing"
    assert block.group(1).strip() == _module().headline_table().strip()


def test_every_input_says_whether_it_was_measured_or_assumed() -> None:
    module = _module()
    inputs = [v for v in vars(module).values() if isinstance(v, module.Input)]
    assert len(inputs) > 15
    for value in inputs:
        assert value.source.split(":")[0].split(" ")[0] in {
            "measured",
            "assumed",
            "given",
            "setting",
            "lead",
            "AWS",
        }, value.source
    measured = [v for v in inputs if v.source.startswith("measured")]
    assert len(measured) >= 8


def test_model_matches_the_deployed_settings() -> None:
    module = _module()
    ecs = load_template(TEMPLATE_DIR / "dagster-ecs.yaml")["Parameters"]
    # The run task the model prices is the one dagster-ecs.yaml defines by default.
    assert ecs["RunCpu"]["Default"] == 1024 and ecs["RunMemory"]["Default"] == 4096
    from feedlot_pipeline.core.settings import DEFAULTS

    assert module.SENSOR_TICK_S.value == int(DEFAULTS["FEEDLOT_SENSOR_INTERVAL_SECONDS"])
    assert module.SENSOR_MAX_NOTICES.value == int(DEFAULTS["FEEDLOT_SENSOR_MAX_NOTICES"])
    assert module.FILE_CHUNK_RECORDS.value == int(DEFAULTS["FEEDLOT_FILEDROP_CHUNK_RECORDS"])
    # The model's analytics lane refreshes back to back: so does the deployed one (the code
    # server evaluates the sensors).
    resources = load_template(TEMPLATE_DIR / "dagster-ecs.yaml")["Resources"]
    (code_server,) = resources["CodeServerTaskDefinition"]["Properties"]["ContainerDefinitions"]
    env = {e["Name"]: e.get("Value") for e in code_server["Environment"]}
    assert env["FEEDLOT_ANALYTICS_REFRESH_MAX_DUTY"] == "1"
    m = module.model()
    assert m["common"]["records_day"] == 10_000_000
    # The stream is bounded by the per-batch container start, not by the load rate.
    assert m["stream"]["batch_cycle_s"] < 1.1 * (
        module.FARGATE_START_S.value + module.RUN_OVERHEAD_S.value
    )


def test_model_follows_the_batched_design() -> None:
    # Loads: one batch run per sensor tick (one at a time); analytics: one refresh run for all
    # partitions loaded since the previous one (one at a time). The model's constants are the
    # code's and the settings'.
    module = _module()
    from feedlot_pipeline.analytics.events import HISTORICO_BLOCKING_CHECKS
    from feedlot_pipeline.core.settings import DEFAULTS
    from feedlot_pipeline.ingestion.sensors import MAX_OBJECTS_PER_RUN

    assert module.MAX_OBJECTS_PER_RUN.value == MAX_OBJECTS_PER_RUN
    assert module.ANALYTICS_INTERVAL_S.value == int(
        DEFAULTS["FEEDLOT_ANALYTICS_REFRESH_INTERVAL_SECONDS"]
    )
    assert module.ANALYTICS_SETTLE_S.value == int(
        DEFAULTS["FEEDLOT_ANALYTICS_REFRESH_SETTLE_SECONDS"]
    )
    assert module.ANALYTICS_MAX_PARTITIONS.value == int(
        DEFAULTS["FEEDLOT_ANALYTICS_REFRESH_MAX_PARTITIONS"]
    )
    # Two materializations (raw_consumption, historico_consumo) + the blocking check(s).
    assert module.LOAD_EVENTS_PER_PARTITION.value == 2 + len(HISTORICO_BLOCKING_CHECKS)
    m = module.model()
    for mode in ("files", "stream"):
        lane = m[mode]
        # A tick can notice a whole cycle's objects, so one run per tick is the model.
        assert lane["objects_per_batch"] <= m["common"]["batch_objects_cap"], mode
        assert lane["analytics_partitions_per_run"] <= module.ANALYTICS_MAX_PARTITIONS.value
        # Runs per day are cycles of the lane, not partitions.
        assert lane["runs_day"] * lane["load_cycle_s"] <= 86_400
        assert lane["runs_day"] < lane["notices_day"]
        # Every partition's analytics is at least one run after its load.
        assert lane["p95_event_to_summary_s"] > lane["p95_event_to_row_s"]
