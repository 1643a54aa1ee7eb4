"""The analytics layer: daily summaries, describe CSVs, the curated Parquet lake and its Glue
catalog, farm reports, and their checks and schedules (downstream of historico_consumo)."""
