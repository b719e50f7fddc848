import os

import jax
import jax.random as jr
import pytest


jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
# Most tests compile many small programs and run each briefly: XLA's optimisation
# passes cost more than they save there (the suite takes ~30% less CPU without them).
# Long-running programs compile with them inside `tests.helpers.xla_optimizations()`.
jax.config.update("jax_disable_most_optimizations", True)
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")  # and in subprocesses
# XLA's CPU fusion emitters (MLIR) take about twice as long to compile as the classic
# ones, with no difference in the results or the speed of these small programs; the
# suite is compile-bound. Set before the first computation starts XLA, and inherited
# by subprocesses.
#
# Four CPU devices, for the data-parallel checks of tests/test_distributed.py (the
# count is fixed when JAX starts); every other test runs on the default device, as
# before (no slower: measured on test_pc.py + test_discrete.py).
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_cpu_use_fusion_emitters" not in _flags:
    _flags += " --xla_cpu_use_fusion_emitters=false"
if "xla_force_host_platform_device_count" not in _flags:
    _flags += " --xla_force_host_platform_device_count=4"
os.environ["XLA_FLAGS"] = _flags.strip()


def pytest_collection_modifyitems(config, items):
    """Tests marked `long` run first (in their order). pytest-xdist's `worksteal`
    gives each worker a contiguous share of this order and then moves tests from the
    end of one worker's queue to the other: with the long tests at the start, the
    two workers end on short tests and finish together."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


@pytest.fixture
def getkey():
    """A fresh, deterministic PRNG key on every call (as in diffrax's conftest)."""
    state = {"key": jr.key(5678)}

    def _getkey():
        state["key"], sub = jr.split(state["key"])
        return sub

    return _getkey


if os.environ.get("PYTEST_XDIST_WORKER"):
    # A pytest-xdist worker has reported every result by the time it exits; tearing
    # down its interpreter (thousands of compiled programs) then takes seconds, and
    # xdist waits for it (up to 10 s) before the session ends. Skip that teardown.
    import atexit
    import sys

    def _exit_now():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    atexit.register(_exit_now)
