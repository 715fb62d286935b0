"""data.dvc, the raw-data record the layout asks for: a fresh clone is up to date with it.

It pointed at a cached data/ folder no remote held, so every clone's `dvc status` listed it
as 'not in cache' and `dvc checkout` / `dvc exp apply` printed 'ERROR: Checkout failed'."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_a_fresh_clone_is_up_to_date_with_data_dvc(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    dvc = [sys.executable, "-m", "dvc"]
    status = subprocess.run(
        [*dvc, "status", "data.dvc", "--json"], cwd=clone, env=env, text=True,
        capture_output=True, check=True,
    )  # fmt: skip
    assert json.loads(status.stdout) == {}
    checkout = subprocess.run(
        [*dvc, "checkout", "data.dvc"], cwd=clone, env=env, text=True, capture_output=True
    )
    assert checkout.returncode == 0 and "ERROR" not in checkout.stderr
