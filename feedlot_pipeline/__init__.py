"""feedlot_pipeline: a Dagster data platform for feedlot feed-consumption records on AWS."""

# The one name of the code location: workspace.yaml, `feedlot demo`'s daemon, `feedlot replay`,
# deploy/dagster/workspace.yaml. Runs queued under one name are launched by any daemon.
CODE_LOCATION = "feedlot_pipeline"
