"""The EC2 worker: jobs run on the instance, and their dispatch from Dagster through SSM."""
