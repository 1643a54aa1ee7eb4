"""``feedlot dashboards``: regenerate the dashboards from ``observability/dashboards.py``.

Writes ``deploy/grafana/feedlot-overview.json`` (Grafana, CloudWatch datasource) and the
generated ``DashboardBody`` block of ``deploy/cloudformation/monitoring.yaml`` (the CloudWatch
dashboard). ``--check`` writes nothing and exits 1 when either differs from what the code
generates (a test runs the same comparison).
"""

from __future__ import annotations

import click


@click.command()
@click.option(
    "--check",
    is_flag=True,
    help="Write nothing; exit 1 when a committed dashboard differs from the generated one.",
)
def dashboards(check: bool) -> None:
    """Regenerate the Grafana and CloudWatch dashboards (metric names from core.metrics)."""
    from feedlot_pipeline.observability.dashboards import GRAFANA_PATH, REPO, TEMPLATE_PATH, write

    changed = write(check=check)
    for path in (GRAFANA_PATH, TEMPLATE_PATH):
        state = ("differs" if check else "written") if path in changed else "up to date"
        click.echo(f"{path.relative_to(REPO)}: {state}")
    if check and changed:
        raise click.ClickException("dashboards are stale: run `feedlot dashboards`")
