"""Timing helpers shared by the benchmark scripts.

This machine is noisy (other processes share its cores), so only ratios measured in
the same run mean anything: `interleave` compiles every contender, then times them in
turns (A, B, C, A, B, C, ...) and reports medians, so that a slow spell hits all of
them alike.
"""

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import jax


def block(x: Any) -> Any:
    return jax.tree_util.tree_map(
        lambda a: a.block_until_ready() if hasattr(a, "block_until_ready") else a, x
    )


def interleave(contenders: dict[str, Callable[[], Any]], rounds: int = 7) -> dict:
    """`{name: {"median", "min", "compile"}}` in seconds: each contender is a thunk;
    the first call of each (compilation included) is timed separately, then `rounds`
    rounds call every contender once in turn."""
    out: dict[str, dict[str, Any]] = {}
    for name, fn in contenders.items():
        t0 = time.perf_counter()
        block(fn())
        out[name] = {"first": time.perf_counter() - t0, "times": []}
    for _ in range(rounds):
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            block(fn())
            out[name]["times"].append(time.perf_counter() - t0)
    for name, r in out.items():
        med = statistics.median(r["times"])
        r.update(median=med, min=min(r["times"]), compile=max(r["first"] - med, 0.0))
        del r["times"], r["first"]
    return out


def ratio(res: dict, a: str, b: str) -> float:
    return res[a]["median"] / res[b]["median"]


def table(headers: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    for r in rows:
        out.append("| " + " | ".join(_fmt(c) for c in r) + " |")
    return "\n".join(out)


def _fmt(c: Any) -> str:
    if isinstance(c, float):
        return f"{c:.3g}" if abs(c) < 1000 else f"{c:.0f}"
    return str(c)


def peak_rss_growth_mb(code: str, timeout: float = 600) -> dict[str, float]:
    """Run `code` in a fresh Python process that defines `setup()` (returns a thunk)
    and report the peak resident memory before the thunk runs and its growth while it
    runs (MB). A fresh process, because peak memory cannot be reset within one."""
    script = code + (
        "\nimport json, resource, sys\n"
        "fn = setup()\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "fn()\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(json.dumps({'before_mb': before / 1024, 'growth_mb': (after - before) / 1024}))\n"
    )
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=timeout)  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def platform() -> str:
    d = jax.devices()[0]
    return f"{d.platform} ({d.device_kind}), {os.cpu_count()} cores"


def own_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
