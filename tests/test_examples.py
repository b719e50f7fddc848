"""Every script in examples/ runs, in a tiny configuration, as `python script --quick`
would run it: as `__main__`, with its folder on `sys.path`, in a temporary working
folder (so the figures it writes land there), in float32 (JAX's default, which the
scripts use). A script that lacks a quick mode fails with a message saying so.

The scripts run in the test process rather than in a subprocess: a fresh interpreter
spends several seconds importing JAX and sdegen before the script starts, and the
test process has already done that (with sdegen's shape checks on)."""

import runpy
import sys
from pathlib import Path

import jax
import pytest


ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.py") if not p.name.startswith("_"))


@pytest.mark.long
@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs_quick(script, tmp_path, monkeypatch):
    source = script.read_text()
    assert "--quick" in source or "SDEGEN_QUICK" in source, (
        f"{script.name} has no quick mode: add a `--quick` flag (a tiny configuration "
        "that runs in seconds) so that the tests can run it"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SDEGEN_QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setattr(sys, "argv", [str(script), "--quick"])
    monkeypatch.syspath_prepend(str(script.parent))
    try:
        with jax.enable_x64(False):
            runpy.run_path(str(script), run_name="__main__")
    except SystemExit as e:  # the scripts exit with a message when a check fails
        assert e.code in (None, 0), f"{script.name} --quick exited with {e.code!r}"
    assert any(tmp_path.rglob("*.png")), f"{script.name} --quick wrote no figure"
