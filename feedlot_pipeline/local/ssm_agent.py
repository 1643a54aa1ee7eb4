"""Local stand-in for the worker instance's SSM agent (moto records Run Command, never runs it).

One process per worker instance, in three parts:

- ``ssm_executor.py``: polls moto for the instance's commands and runs them (bash, own process
  group, the EBS stand-in as work dir, timeouts, cancels, state kept across restarts);
- ``ssm_endpoint.py``: the stack's SSM endpoint (``AWS_ENDPOINT_URL_SSM``), answering the calls
  moto cannot from what the executor ran and forwarding the rest to moto;
- ``ssm_instance.py``: the worker instance and its data volume in moto, registered by
  ``feedlot local up`` (``components.start_ssm_agent``), which passes this process the instance
  id; the agent reads no worker or backup settings itself.

Run: ``python -m feedlot_pipeline.local.ssm_agent --instance-id i-… --port 9030 --state-dir
.feedlot`` (``feedlot local up`` does). ``GET /health`` reports counts as JSON.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from pathlib import Path

from feedlot_pipeline.core.settings import Settings
from feedlot_pipeline.local.daemon import wait_for_signal
from feedlot_pipeline.local.services import LOOPBACK, JsonLogFormatter
from feedlot_pipeline.local.ssm_endpoint import SSMEndpoint
from feedlot_pipeline.local.ssm_executor import (  # noqa: F401 - re-exported
    DEFAULT_EXECUTION_TIMEOUT,
    SUPPORTED_DOCUMENTS,
    CommandRecord,
    SSMAgent,
)
from feedlot_pipeline.local.ssm_instance import (  # noqa: F401 - re-exported
    ROLE_TAG,
    WORKER_DATA_ROLE,
    WORKER_NAME,
    WorkerInstance,
    register_worker_instance,
)

AGENT_MARKER = "feedlot_pipeline.local.ssm_agent"

log = logging.getLogger("feedlot.ssm_agent")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Local stand-in for the worker's SSM agent.")
    parser.add_argument("--instance-id", required=True)
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--workdir", type=Path, help="EBS mount stand-in (default <state>/ebs)")
    parser.add_argument("--host", default=LOOPBACK)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--poll-seconds", type=float, default=1.0)
    parser.add_argument("--upstream", help="the moto server (default AWS_ENDPOINT_URL)")
    args = parser.parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter("ssm_agent"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])

    upstream = args.upstream or Settings().aws_endpoint_url
    if not upstream:
        parser.error("AWS_ENDPOINT_URL (the moto server) must be set")
    # This process talks to moto itself; the stack's SSM endpoint is this very process.
    os.environ.pop("AWS_ENDPOINT_URL_SSM", None)
    state_dir = args.state_dir.expanduser().resolve()
    workdir = (args.workdir or state_dir / "ebs").expanduser().resolve()
    agent = SSMAgent(args.instance_id, state_dir, workdir, args.poll_seconds)
    endpoint = SSMEndpoint(agent, upstream, args.host, args.port, log_stream=sys.stderr)
    try:
        endpoint.start()
    except OSError as err:
        print(
            f"ssm agent: cannot listen on {args.host}:{args.port}: {err}; "
            "set FEEDLOT_SSM_AGENT_PORT",
            file=sys.stderr,
        )
        return 2
    poller = threading.Thread(target=agent.run, name="ssm-agent-poll", daemon=True)
    poller.start()
    log.info(
        "SSM agent for %s on %s (workdir %s, upstream %s)",
        args.instance_id,
        endpoint.url,
        workdir,
        upstream,
    )
    wait_for_signal()
    agent.stop()
    poller.join(5)
    endpoint.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
