"""Observability: alerts on failed runs and checks, backlog and freshness metrics, dashboards.

``definitions()`` (``observability.definitions``) returns this domain's Dagster definitions, merged
into the code location by ``feedlot_pipeline.definitions``.
"""
