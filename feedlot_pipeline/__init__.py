"""feedlot_pipeline: a Dagster data platform for feedlot feed-consumption records on AWS."""

import warnings

# The one name of the code location: workspace.yaml, `feedlot demo`'s daemon, `feedlot replay`,
# deploy/dagster/workspace.yaml. Runs queued under one name are launched by any daemon.
CODE_LOCATION = "feedlot_pipeline"

# Dagster features used knowingly: MultiPartitionMapping (beta) and partitioned asset checks
# (preview). Their warnings came on every load of the code location, the code server's and each
# run's: four of them, eight lines, per run in `make dev`'s log.
warnings.filterwarnings("ignore", message=r".* is currently in (beta|preview)\b")
