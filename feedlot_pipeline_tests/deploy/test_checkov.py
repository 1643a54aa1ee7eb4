"""checkov over deploy/cloudformation: no failed check, and every suppression justified.

checkov pins boto3 1.35 and cannot share the project's environment (boto3 1.44), so it runs
from a tool environment of its own: ``FEEDLOT_CHECKOV`` if set, else ``<venv>/tools/checkov``,
created on first use from PyPI with the pinned version below (~30 s; .venv is not committed).
Suppressions live next to the resource they concern, as ``Metadata: checkov: skip: - id, comment``;
the test requires each to carry its reason and keeps the list of suppressed checks explicit, so
a new suppression is a reviewed change of this file too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from feedlot_pipeline_tests.deploy.cfn import REPO, TEMPLATE_DIR

CHECKOV_VERSION = "3.3.30"

# check id -> why it is suppressed where it is (the resources' own comments say it in full).
EXPECTED_SUPPRESSIONS = {
    "CKV_AWS_18": "S3 access logs: a log bucket per stack; CloudTrail data events instead",
    "CKV_AWS_21": "versioning on the landing drop zone and the rebuildable processed bucket",
    "CKV_AWS_27": "SQS: SSE-SQS is on; checkov only recognises KMS",
    "CKV_AWS_158": "log groups: service-key encryption, no secrets logged",
    "CKV_AWS_116": "Lambda DLQ: on-failure destinations / synchronous invocations",
    "CKV_AWS_115": "Lambda reserved concurrency: fails on default-limit accounts",
    "CKV_AWS_173": "Lambda env encryption: no secret in the environment",
    "CKV_AWS_73": "API Gateway X-Ray: traced by correlation id",
    "CKV_AWS_76": "API Gateway access logs: account-level role",
    "CKV_AWS_120": "API Gateway caching: POST ingestion",
    "CKV_AWS_149": "secrets: AWS managed key",
    "CKV_AWS_136": "ECR: AES-256",
    "CKV_AWS_91": "internal ALB access logs",
    "CKV_AWS_2": "HTTP listener only without a certificate",
    "CKV_AWS_103": "TLS policy: applies to the HTTPS listener",
}


def checkov_command() -> str:
    configured = os.environ.get("FEEDLOT_CHECKOV")
    if configured:
        return configured
    tool = Path(sys.prefix) / "tools" / "checkov"
    exe = tool / "bin" / "checkov"
    if not exe.exists():
        venv.create(tool, with_pip=True, clear=True)
        installed = subprocess.run(
            [
                str(tool / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "-q",
                f"checkov=={CHECKOV_VERSION}",
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if installed.returncode != 0:
            pytest.fail(f"could not install checkov {CHECKOV_VERSION}:\n{installed.stderr[-3000:]}")
    return str(exe)


def run_checkov(target: Path) -> dict:
    flag = "-d" if target.is_dir() else "-f"
    result = subprocess.run(
        [
            checkov_command(),
            flag,
            str(target),
            "--framework",
            "cloudformation",
            "--skip-download",  # no calls to the vendor's platform
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env={**os.environ, "LOG_LEVEL": "ERROR"},
    )
    assert result.stdout.strip(), result.stderr[-3000:]
    report = json.loads(result.stdout)
    # One framework: a single report (a list when checkov ran several).
    if isinstance(report, list):
        (report,) = [r for r in report if r.get("check_type") == "cloudformation"]
    return report


@pytest.fixture(scope="module")
def report() -> dict:
    return run_checkov(TEMPLATE_DIR)


@pytest.mark.slow
def test_checkov_finds_nothing_unjustified(report: dict) -> None:
    summary = report["summary"]
    failed = [
        f"{f['check_id']} {f['resource']} ({f['file_path']})"
        for f in report["results"]["failed_checks"]
    ]
    assert failed == [], failed
    assert summary["parsing_errors"] == 0
    assert summary["passed"] > 250  # the templates were actually scanned


@pytest.mark.slow
def test_every_suppression_is_known_and_carries_its_reason(report: dict) -> None:
    skipped = report["results"]["skipped_checks"]
    assert skipped
    for check in skipped:
        where = f"{check['check_id']} on {check['resource']} ({check['file_path']})"
        assert check["check_id"] in EXPECTED_SUPPRESSIONS, f"new suppression {where}"
        comment = check.get("check_result", {}).get("suppress_comment") or ""
        assert len(comment.split()) >= 8, f"no reason: {where}"


BAD = """\
AWSTemplateFormatVersion: "2010-09-09"
Resources:
  Db:
    Type: AWS::RDS::DBInstance
    Properties:
      Engine: postgres
      DBInstanceClass: db.t4g.micro
      AllocatedStorage: 20
      MasterUsername: admin
      ManageMasterUserPassword: true
      PubliclyAccessible: true
      StorageEncrypted: false
"""


@pytest.mark.slow
def test_checkov_harness_fails_a_bad_template(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    failed = {f["check_id"] for f in run_checkov(bad)["results"]["failed_checks"]}
    # CKV_AWS_16: not encrypted; CKV_AWS_17: publicly accessible.
    assert {"CKV_AWS_16", "CKV_AWS_17"} <= failed, failed
