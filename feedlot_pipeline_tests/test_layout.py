"""The house rules of the package, checked on every run of the suite.

- Imports only point down the layers, and nothing imports in a circle (import-linter, with the
  contracts in pyproject.toml).
- Only ``core/settings.py`` reads the environment: everything else takes typed settings.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import feedlot_pipeline

PACKAGE = Path(feedlot_pipeline.__file__).parent
REPO = PACKAGE.parent
SETTINGS = PACKAGE / "core" / "settings.py"


def test_import_contracts_hold() -> None:
    script = "import sys; from importlinter.cli import lint_imports_command; lint_imports_command()"
    result = subprocess.run(
        [sys.executable, "-c", script, "--config", str(REPO / "pyproject.toml"), "--no-cache"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "2 kept, 0 broken" in result.stdout


def _is_environ(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "environ"
        and isinstance(node.value, ast.Name)
        and node.value.id == "os"
    )


def environment_reads(tree: ast.AST) -> list[int]:
    """Lines that read a variable: os.getenv(…), os.environ.get(…), os.environ[…], … in os.environ.

    Copying the whole environment for a child process (``os.environ.copy()``, ``**os.environ``,
    ``os.environ.items()``) and writing to it are not reads of a setting.
    """
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            target = node.func
            getenv = target.attr == "getenv" and isinstance(target.value, ast.Name)
            if getenv or (target.attr == "get" and _is_environ(target.value)):
                found.append(node.lineno)
        elif isinstance(node, ast.Subscript) and _is_environ(node.value):
            if isinstance(node.ctx, ast.Load):
                found.append(node.lineno)
        elif isinstance(node, ast.Compare) and any(_is_environ(c) for c in node.comparators):
            found.append(node.lineno)
    return found


def test_only_the_settings_model_reads_the_environment() -> None:
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == SETTINGS:
            continue
        lines = environment_reads(ast.parse(path.read_text(), str(path)))
        if lines:
            offenders[str(path.relative_to(REPO))] = lines
    assert offenders == {}, f"read the environment outside core/settings.py: {offenders}"


def test_the_scan_finds_every_kind_of_read() -> None:
    sample = (
        "import os\n"
        "a = os.getenv('X')\n"
        "b = os.environ.get('X')\n"
        "c = os.environ['X']\n"
        "d = 'X' in os.environ\n"
        "env = {**os.environ}\n"
        "os.environ['Y'] = '1'\n"
    )
    assert environment_reads(ast.parse(sample)) == [2, 3, 4, 5]
