"""The package builds without setuptools' warnings and carries what runs from an installed wheel:
the Alembic migrations (folders without __init__.py) and the sample data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).parents[1]


def test_build_lists_every_package_and_ships_the_migrations(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "setup.py", "-q", "build", "--build-base", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "Package would be ignored" not in out.stderr, out.stderr
    assert "as data is deprecated" not in out.stderr, out.stderr
    built = tmp_path / "lib" / "feedlot_pipeline"
    migrations = built / "warehouse" / "migrations"
    assert {"alembic.ini", "env.py", "script.py.mako"} <= {p.name for p in migrations.iterdir()}
    shipped = {p.name for p in (migrations / "versions").glob("*.py")}
    in_repo = {
        p.name for p in (REPO / "feedlot_pipeline/warehouse/migrations/versions").glob("*.py")
    }
    assert shipped == in_repo
    assert list((built / "sample").glob("*.jsonl"))
