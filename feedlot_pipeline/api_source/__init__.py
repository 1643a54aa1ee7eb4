"""Public-API source: a configured JSON HTTP API pulled on a schedule into the lake's raw zone."""
