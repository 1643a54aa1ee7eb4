"""The local SSM agent runs what is sent to its instance, as the instance's real agent would."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time

import pytest
from botocore.exceptions import ClientError

from feedlot_pipeline.core.aws import client
from feedlot_pipeline.local.ssm_agent import WORKER_DATA_ROLE, register_worker_instance
from feedlot_pipeline_tests.helpers import WorkerStack, alive, start_agent, stop_agent, wait_for


def _send(stack: WorkerStack, lines: list[str], timeout: int = 60, by_tag: bool = True) -> str:
    target = (
        {"Targets": [{"Key": f"tag:{stack.tag_key}", "Values": [stack.tag_value]}]}
        if by_tag
        else {"InstanceIds": [stack.instance_id]}
    )
    return client("ssm").send_command(
        DocumentName="AWS-RunShellScript",
        Parameters={"commands": lines, "executionTimeout": [str(timeout)]},
        **target,
    )["Command"]["CommandId"]


def _invocation(stack: WorkerStack, command_id: str) -> dict:
    return client("ssm").get_command_invocation(CommandId=command_id, InstanceId=stack.instance_id)


def _ended(stack: WorkerStack, command_id: str) -> dict:
    return wait_for(
        lambda: (
            (inv := _invocation(stack, command_id))["Status"]
            in ("Success", "Failed", "Cancelled", "TimedOut")
            and inv
        ),
        what=f"command {command_id} to end",
    )


def test_worker_instance_is_registered_with_a_backup_tagged_volume(ssm_worker: WorkerStack) -> None:
    ec2 = client("ec2")
    (reservation,) = ec2.describe_instances(InstanceIds=[ssm_worker.instance_id])["Reservations"]
    tags = {t["Key"]: t["Value"] for t in reservation["Instances"][0]["Tags"]}
    assert tags["Name"] == "feedlot-worker" and tags["Role"] == ssm_worker.tag_value
    (volume,) = ec2.describe_volumes(VolumeIds=[ssm_worker.volume_id])["Volumes"]
    vtags = {t["Key"]: t["Value"] for t in volume["Tags"]}
    assert vtags["Backup"] == "true" and vtags["feedlot:role"] == WORKER_DATA_ROLE
    assert volume["Attachments"][0]["InstanceId"] == ssm_worker.instance_id
    # Idempotent: the same instance and volume again.
    again = register_worker_instance("Role", ssm_worker.tag_value, "Backup", "true")
    assert (again.instance_id, again.volume_id, again.created) == (
        ssm_worker.instance_id,
        ssm_worker.volume_id,
        False,
    )


def test_runs_a_tag_targeted_command_in_the_ebs_folder(ssm_worker: WorkerStack) -> None:
    command_id = _send(
        ssm_worker, ['echo "wd=$FEEDLOT_WORKER_WORKDIR pwd=$(pwd)"', "echo oops >&2"]
    )
    inv = _ended(ssm_worker, command_id)
    assert inv["Status"] == "Success" and inv["ResponseCode"] == 0
    workdir = str(ssm_worker.workdir.resolve())
    assert f"wd={workdir} pwd={workdir}" in inv["StandardOutputContent"]
    assert inv["StandardErrorContent"].strip() == "oops"
    listed = client("ssm").list_command_invocations(CommandId=command_id)["CommandInvocations"]
    assert [(i["InstanceId"], i["Status"]) for i in listed] == [(ssm_worker.instance_id, "Success")]


def test_failure_reports_exit_code_and_stderr(ssm_worker: WorkerStack) -> None:
    command_id = _send(ssm_worker, ["echo broken >&2", "exit 3"], by_tag=False)
    inv = _ended(ssm_worker, command_id)
    assert (inv["Status"], inv["ResponseCode"]) == ("Failed", 3)
    assert "broken" in inv["StandardErrorContent"]


def _started_pid(stack: WorkerStack, command_id: str, name: str) -> int:
    pid_file = stack.workdir / name
    wait_for(pid_file.exists, what="the command to start")
    assert _invocation(stack, command_id)["Status"] in ("Pending", "InProgress")
    return int(pid_file.read_text())


def test_execution_timeout_kills_the_process_group(ssm_worker: WorkerStack) -> None:
    name = f"timeout-{time.time_ns()}.pid"
    # The child sleep ignores SIGTERM: only the group SIGKILL after the grace stops it.
    lines = [f"(trap '' TERM; sleep 60) & echo $! > {name}", "wait"]
    command_id = _send(ssm_worker, lines, timeout=1)
    pid = _started_pid(ssm_worker, command_id, name)
    inv = _ended(ssm_worker, command_id)
    assert inv["Status"] == "TimedOut"
    wait_for(lambda: not alive(pid), timeout=10, what="the timed-out child to be killed")


def test_cancel_command_kills_the_process_group(ssm_worker: WorkerStack) -> None:
    name = f"cancel-{time.time_ns()}.pid"
    command_id = _send(ssm_worker, [f"sleep 60 & echo $! > {name}", "wait"])
    pid = _started_pid(ssm_worker, command_id, name)
    client("ssm").cancel_command(CommandId=command_id)
    inv = _ended(ssm_worker, command_id)
    assert inv["Status"] == "Cancelled"
    wait_for(lambda: not alive(pid), timeout=10, what="the cancelled child to be killed")


def test_unknown_command_and_other_calls(ssm_worker: WorkerStack) -> None:
    with pytest.raises(ClientError) as err:
        client("ssm").cancel_command(CommandId="00000000-0000-0000-0000-000000000000")
    assert err.value.response["Error"]["Code"] == "InvalidCommandId"
    # Everything else reaches moto through the agent unchanged.
    client("ssm").put_parameter(Name=f"/feedlot/t{time.time_ns()}", Value="x", Type="String")
    assert ssm_worker.health()["instance_id"] == ssm_worker.instance_id


def test_restart_remembers_what_ran(worker_stack: WorkerStack, tmp_path, monkeypatch) -> None:
    """A second agent on the same state never runs a command twice."""
    from feedlot_pipeline.local.services import free_port

    instance = register_worker_instance("Role", f"restart-{time.time_ns()}", "Backup", "true")
    state = tmp_path / "state"
    port = free_port()
    proc = start_agent(instance.instance_id, state, port, tmp_path / "agent.log")
    monkeypatch.setenv("AWS_ENDPOINT_URL_SSM", f"http://127.0.0.1:{port}")
    try:
        ssm = client("ssm")
        command_id = ssm.send_command(
            InstanceIds=[instance.instance_id],
            DocumentName="AWS-RunShellScript",
            Parameters={"commands": ["echo ran >> ran.txt"]},
        )["Command"]["CommandId"]
        wait_for(
            lambda: (
                ssm.get_command_invocation(CommandId=command_id, InstanceId=instance.instance_id)[
                    "Status"
                ]
                == "Success"
            ),
            what="first run",
        )
    finally:
        stop_agent(proc)
    proc = start_agent(instance.instance_id, state, port, tmp_path / "agent.log")
    try:
        time.sleep(1.0)  # several polls
        assert (state / "ebs" / "ran.txt").read_text() == "ran\n"
        state_file = state / "ssm_agent" / instance.instance_id / "state.json"
        saved = json.loads(state_file.read_text())
        assert [c["command_id"] for c in saved["commands"]] == [command_id]
        # Outputs and scripts may hold records or URLs: the owner's only.
        output = state_file.parent / "commands" / command_id / "stdout"
        for path in (state_file, output):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        for folder in (state / "ssm_agent", state_file.parent, output.parent, state / "ebs"):
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    finally:
        stop_agent(proc)


def test_stopping_the_agent_stops_its_commands(
    worker_stack: WorkerStack, tmp_path, monkeypatch
) -> None:
    from feedlot_pipeline.local.services import free_port

    instance = register_worker_instance("Role", f"stop-{time.time_ns()}", "Backup", "true")
    port = free_port()
    proc = start_agent(instance.instance_id, tmp_path, port, tmp_path / "agent.log")
    monkeypatch.setenv("AWS_ENDPOINT_URL_SSM", f"http://127.0.0.1:{port}")
    try:
        client("ssm").send_command(
            InstanceIds=[instance.instance_id],
            DocumentName="AWS-RunShellScript",
            Parameters={"commands": ["sleep 60 & echo $! > child.pid", "wait"]},
        )
        pid_file = tmp_path / "ebs" / "child.pid"
        wait_for(pid_file.exists, what="the command to start")
        pid = int(pid_file.read_text())
        assert alive(pid)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)
    assert not alive(pid)


def test_the_agent_imports_neither_the_stack_nor_the_worker_nor_backups() -> None:
    """The stack passes the agent what it needs (instance id); no cycle, no upward import."""
    probe = (
        "import sys, feedlot_pipeline.local.ssm_agent; "
        "print(sorted(m for m in sys.modules if m.startswith(("
        "'feedlot_pipeline.worker', 'feedlot_pipeline.backups', 'feedlot_pipeline.local.stack', "
        "'feedlot_pipeline.local.components', 'feedlot_pipeline.definitions'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"
