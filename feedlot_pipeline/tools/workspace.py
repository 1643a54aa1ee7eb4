"""The workspace file the tools hand to Dagster processes they start (the demo's daemon).

Written into the stack's state folder rather than read from the repository, so it works from an
installed wheel too; the code location name is the same as in workspace.yaml.
"""

from __future__ import annotations

from pathlib import Path

from feedlot_pipeline import CODE_LOCATION

WORKSPACE = f"""\
load_from:
  - python_module:
      module_name: feedlot_pipeline.definitions
      attribute: defs
      location_name: {CODE_LOCATION}
"""


def write_workspace(state_dir: Path) -> Path:
    """``<state_dir>/workspace.yaml`` naming the platform's code location; its path."""
    path = Path(state_dir) / "workspace.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != WORKSPACE:
        path.write_text(WORKSPACE)
    return path
