"""Every script in examples/ runs, in a tiny configuration, in a subprocess.

Each script must accept `--quick` (and may also read `SDEGEN_QUICK=1`); it runs in a
temporary working folder with the repository root on `PYTHONPATH`, so the figures it
writes land there. A script that lacks a quick mode fails with a message saying so.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.py") if not p.name.startswith("_"))
TIMEOUT_S = 300


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs_quick(script, tmp_path):
    source = script.read_text()
    assert "--quick" in source or "SDEGEN_QUICK" in source, (
        f"{script.name} has no quick mode: add a `--quick` flag (a tiny configuration "
        "that runs in seconds) so that the tests can run it"
    )
    env = {
        **os.environ,
        "SDEGEN_QUICK": "1",
        "MPLBACKEND": "Agg",
        "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu"),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, str(script), "--quick"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT_S,
    )  # fmt: skip
    assert proc.returncode == 0, (
        f"{script.name} --quick exited with {proc.returncode}:\n"
        f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    )
