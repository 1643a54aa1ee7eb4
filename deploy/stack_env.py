"""Print a deployed stack's outputs as the platform's environment variables.

The templates mark every output that feeds an environment variable by starting its description
with the variable's name and a colon ("FEEDLOT_LAKE_BUCKET: data lake bucket"). This turns those
outputs into ``export NAME=value`` lines for a shell, a systemd EnvironmentFile or an ECS task
definition:

    python deploy/stack_env.py feedlot-dev-core feedlot-dev-ingest > feedlot-dev.env

Several stacks are merged (core gives the buckets, topic and sensor queue; ingest the API URL,
large-file queues, Firehose stream); two stacks claiming one variable with different values is
an error rather than a silent override.

It uses boto3 like the rest of the platform, so AWS_ENDPOINT_URL decides whether it reads the
stack from moto or from AWS. Secrets (FEEDLOT_WAREHOUSE_URL) are never outputs: read them from
Secrets Manager where the process starts.
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Iterable, Mapping
from typing import Any

import boto3

ENV_DESCRIPTION = re.compile(r"^(?P<name>[A-Z][A-Z0-9_]*):\s")


def env_from_outputs(outputs: Iterable[Mapping[str, str]]) -> dict[str, str]:
    """``{VARIABLE: value}`` of the outputs whose description names a variable."""
    env: dict[str, str] = {}
    for output in outputs:
        match = ENV_DESCRIPTION.match(output.get("Description", ""))
        if match:
            name = match.group("name")
            if name in env:
                raise ValueError(f"two outputs claim {name}")
            env[name] = output["OutputValue"]
    return env


def stack_env(stack_name: str, cloudformation: Any = None) -> dict[str, str]:
    """The environment variables one deployed stack provides."""
    cfn = cloudformation or boto3.client("cloudformation")
    stack = cfn.describe_stacks(StackName=stack_name)["Stacks"][0]
    return env_from_outputs(stack.get("Outputs", []))


def merge_envs(envs: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """One environment from several stacks' (``{stack: env}``); a conflicting value raises."""
    merged: dict[str, str] = {}
    source: dict[str, str] = {}
    for stack, env in envs.items():
        for key, value in env.items():
            if key in merged and merged[key] != value:
                raise ValueError(f"{key} differs between stacks {source[key]} and {stack}")
            merged[key] = value
            source.setdefault(key, stack)
    return merged


def main(argv: list[str]) -> int:
    if len(argv) < 1:
        print("usage: stack_env.py STACK_NAME [STACK_NAME ...]", file=sys.stderr)
        return 2
    merged = merge_envs({name: stack_env(name) for name in argv})
    for key, value in sorted(merged.items()):
        print(f"export {key}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
