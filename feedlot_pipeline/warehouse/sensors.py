# Dagster inspects annotations at definition time: no postponed annotations here.
"""client_map_sensor: keep the published client map equal to the warehouse's ``clientes``.

The landing Lambdas and the consumption sensor route and verify records with the map published
in the lake (``core.client_map``), so landing never waits on the warehouse. Whoever changes
``clientes`` — `feedlot clients add`, SQL by hand, a migration — the map follows within a minute.
"""

import dagster as dg

from feedlot_pipeline.core import client_map
from feedlot_pipeline.ingestion.resources import LakeResource
from feedlot_pipeline.warehouse.resources import WarehouseResource

INTERVAL_SECONDS = 60


@dg.sensor(
    name="client_map_sensor",
    minimum_interval_seconds=INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Publishes clientes (cod_cliente → fazenda) to the lake when it changes, for the "
    "landing Lambdas and the consumption sensor.",
)
def client_map_sensor(
    context: dg.SensorEvaluationContext, warehouse: WarehouseResource, lake: LakeResource
) -> dg.SensorResult | dg.SkipReason:
    with warehouse.open() as wh:
        clients = wh.clients()
    current = client_map.digest(clients)
    if context.cursor == current:
        return dg.SkipReason("clientes unchanged since the last publication")
    published = client_map.fetch(lake.bucket)
    if published is None or published.digest != current:
        client_map.publish(lake.bucket, clients)
        context.log.info(f"published the client map: {len(clients)} client(s)")
    return dg.SensorResult(cursor=current)
