import os

import jax
import jax.random as jr
import pytest


jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
# Most tests compile many small programs and run each briefly: XLA's optimisation
# passes cost more than they save there (the suite takes ~30% less CPU without them).
# Tests that run long computations are marked `optimized` and compile with them.
jax.config.update("jax_disable_most_optimizations", True)
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")  # and in subprocesses
# XLA's CPU fusion emitters (MLIR) take about twice as long to compile as the classic
# ones, with no difference in the results or the speed of these small programs; the
# suite is compile-bound. Set before the first computation starts XLA, and inherited
# by subprocesses.
if "xla_cpu_use_fusion_emitters" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = " ".join(
        [os.environ.get("XLA_FLAGS", ""), "--xla_cpu_use_fusion_emitters=false"]
    ).strip()


@pytest.fixture(autouse=True)
def _xla_optimizations(request):
    if request.node.get_closest_marker("optimized") is None:
        yield
        return
    jax.config.update("jax_disable_most_optimizations", False)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", True)


@pytest.fixture
def getkey():
    """A fresh, deterministic PRNG key on every call (as in diffrax's conftest)."""
    state = {"key": jr.key(5678)}

    def _getkey():
        state["key"], sub = jr.split(state["key"])
        return sub

    return _getkey

