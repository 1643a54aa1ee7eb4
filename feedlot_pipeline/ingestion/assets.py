"""The raw zone as an asset: landed by the Lambdas, recorded by the sensor, never computed here."""

from __future__ import annotations

import dagster as dg

from feedlot_pipeline.ingestion.partitions import farm_day_partitions

RAW_CONSUMPTION = dg.AssetKey("raw_consumption")

raw_consumption = dg.AssetSpec(
    key=RAW_CONSUMPTION,
    description=(
        "Consumption records exactly as farms sent them, as JSON Lines under "
        "`historico_diario/<fazenda>/<yyyy>/<mm>/<dd>/` in the lake bucket. Landed by the source "
        "Lambdas; each landing is recorded here by consumption_events_sensor."
    ),
    partitions_def=farm_day_partitions,
    group_name="ingestion",
    kinds={"s3"},
)
