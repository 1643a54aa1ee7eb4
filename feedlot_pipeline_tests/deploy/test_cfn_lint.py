"""Every template in deploy/cloudformation passes cfn-lint (errors and warnings both fail).

cfn-lint runs as the same command a person or CI runs (``cfn-lint deploy/cloudformation/*.yaml``),
and a deliberately broken template proves the harness does fail on lint errors.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from feedlot_pipeline_tests.deploy.cfn import REPO, TEMPLATES


def cfn_lint(*templates: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("cfn-lint")
    command = str(exe) if exe.exists() else shutil.which("cfn-lint")
    if command is None:
        pytest.fail("cfn-lint is not installed: pip install -e '.[test]'")
    return subprocess.run(
        [command, "--format", "parseable", "--", *map(str, templates)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_templates_present() -> None:
    assert {p.name for p in TEMPLATES} >= {"core.yaml", "iam.yaml"}


def test_every_template_passes_cfn_lint() -> None:
    # One run for all templates: cfn-lint's start-up dominates its time.
    result = cfn_lint(*TEMPLATES)
    assert result.returncode == 0, f"cfn-lint findings:\n{result.stdout}{result.stderr}"


BROKEN = """\
AWSTemplateFormatVersion: "2010-09-09"
Resources:
  Fn:
    Type: AWS::Lambda::Function
    Properties:
      Runtime: python2.0
      Handler: x.handler
      Role: !GetAtt NoSuchRole.Arn
      Code:
        ZipFile: "def handler(e, c): pass"
"""


def test_lint_harness_fails_on_errors(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN)
    result = cfn_lint(broken)
    assert result.returncode != 0
    # E3030: unknown runtime; E1010: GetAtt of a resource that does not exist.
    assert ":E3030:" in result.stdout and ":E1010:" in result.stdout, result.stdout
