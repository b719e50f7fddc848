"""First call: what a user waits for before the first samples, and `import sdegen`.

Each measurement runs in a FRESH Python process (JAX's caches start empty), one
contender at a time and interleaved (sdegen, hand-written, sdegen, ...), so a slow spell
of a shared machine hits both alike. Per contender:

- `first call`: wall time of `fn(keys)` for `fn = jax.jit(jax.vmap(one_sample))`
  (trace + compile + the first run), 256 samples of dimension 64, 20 steps, an MLP
  score (width 128, depth 3) — after the imports, which are timed separately;
- for sdegen, `jax.jit(jax.vmap(lambda k: sg.sample_ode(k, sde, score, (64,), solver,
  num_steps=20)))` (`"euler"`, `"dpmpp_2m"`) and `sg.sample_sde(..., "euler_maruyama",
  num_steps=20)`; for the floor, the same update written by hand in a
  `jax.lax.scan` on the same grid with the same MLP.

`import`: the wall time of `import sdegen` in a process that has already imported
`jax`, `equinox` and `diffrax` (its own cost, not theirs).

    python benchmarks/bench_first_call.py [--repeats 5]
"""

import argparse
import json
import statistics
import subprocess
import sys


SOLVERS = ("euler", "dpmpp_2m", "euler_maruyama")

CHILD = r"""
import sys, time
import jax, jax.numpy as jnp, jax.random as jr
import equinox, diffrax
t0 = time.perf_counter()
import sdegen as sg
t_import = time.perf_counter() - t0
which, solver = sys.argv[1], sys.argv[2]
D, B, N, EPS = 64, 256, 20, 1e-3
sde = sg.VPSDE()
mlp = sg.nn.MLP(D, 128, 3, key=jr.key(1))
score = lambda t, x: mlp(t, x)
keys = jr.split(jr.key(0), B)
jax.block_until_ready((mlp, keys))


def beta(t):
    return 0.1 + t * 19.9


def lam(t):  # log(alpha / sigma) of the VP SDE
    b = 0.1 * t + 0.5 * 19.9 * t**2
    return -0.5 * b - 0.5 * jnp.log(-jnp.expm1(-b))


def hand_written(solver):
    ts = jnp.linspace(sde.T, EPS, N + 1)

    def one(key):
        k_prior, k_noise = jr.split(key)
        x = jr.normal(k_prior, (D,))

        def alpha_sigma(t):
            b = 0.1 * t + 0.5 * 19.9 * t**2
            return jnp.exp(-0.5 * b), jnp.sqrt(-jnp.expm1(-b))

        def body(carry, inp):
            x, d_old, h_old = carry
            i, t0, t1 = inp
            dt, b = t1 - t0, beta(t0)
            if solver == "euler":
                return (x + (-0.5 * b * x - 0.5 * b * score(t0, x)) * dt, d_old, h_old), None
            if solver == "euler_maruyama":
                z = jr.normal(jr.fold_in(k_noise, i), (D,))
                x = x + (-0.5 * b * x - b * score(t0, x)) * dt + jnp.sqrt(-b * dt) * z
                return (x, d_old, h_old), None
            a0, s0 = alpha_sigma(t0)  # DPM-Solver++(2M)
            a1, s1 = alpha_sigma(t1)
            d = (x + s0**2 * score(t0, x)) / a0
            h = lam(t1) - lam(t0)
            r = h_old / h
            d2 = jnp.where(i > 0, (1 + 0.5 / r) * d - (0.5 / r) * d_old, d)
            return ((s1 / s0) * x - a1 * jnp.expm1(-h) * d2, d, h), None

        init = (x, jnp.zeros_like(x), jnp.ones(()))
        (x, _, _), _ = jax.lax.scan(body, init, (jnp.arange(N), ts[:-1], ts[1:]))
        return x

    return jax.jit(jax.vmap(one))


def with_sdegen(solver):
    if solver == "euler_maruyama":
        one = lambda k: sg.sample_sde(k, sde, score, (D,), solver, num_steps=N)
    else:
        one = lambda k: sg.sample_ode(k, sde, score, (D,), solver, num_steps=N)
    return jax.jit(jax.vmap(one))


fn = hand_written(solver) if which == "hand-written" else with_sdegen(solver)
if len(sys.argv) > 3:  # the phases of the first call, one by one
    t = [time.perf_counter()]
    traced = fn.trace(keys); t.append(time.perf_counter())
    lowered = traced.lower(); t.append(time.perf_counter())
    compiled = lowered.compile(); t.append(time.perf_counter())
    compiled(keys).block_until_ready(); t.append(time.perf_counter())
    import json
    print(json.dumps({"phases": [b - a for a, b in zip(t, t[1:])],
                      "eqns": len(traced.jaxpr.eqns)}))
    sys.exit(0)
t0, c0 = time.perf_counter(), time.process_time()
out = fn(keys).block_until_ready()
first, cpu = time.perf_counter() - t0, time.process_time() - c0
t0 = time.perf_counter()
fn(keys).block_until_ready()
again = time.perf_counter() - t0
import json
print(json.dumps({"import": t_import, "first": first, "cpu": cpu, "again": again,
                  "out": [float(v) for v in out[:4, 0]]}))
"""


def _child(which: str, solver: str, *extra: str, env: dict | None = None) -> dict:
    import os

    proc = subprocess.run([sys.executable, "-c", CHILD, which, solver, *extra],
                          capture_output=True, text=True, timeout=600,
                          env=None if env is None else {**os.environ, **env})  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _stats(xs: list[float]) -> dict:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}


def run(repeats: int = 5, solvers=SOLVERS):
    """Interleaved fresh processes; returns `(markdown, data)`."""
    try:
        from ._common import table
    except ImportError:
        from _common import table
    raw: dict = {s: {w: {"first": [], "cpu": []} for w in ("sdegen", "hand-written")}
                 for s in solvers}  # fmt: skip
    imports: list[float] = []
    for _ in range(repeats):
        for s in solvers:
            for who in ("sdegen", "hand-written"):
                r = _child(who, s)
                raw[s][who]["first"].append(r["first"])
                raw[s][who]["cpu"].append(r["cpu"])
                imports.append(r["import"])
    rows, data = [], {"first_call": {}, "repeats": repeats}
    for s in solvers:
        sd, hw = raw[s]["sdegen"], raw[s]["hand-written"]
        a, b = _stats(sd["first"]), _stats(hw["first"])
        wall = _stats([x / y for x, y in zip(sd["first"], hw["first"])])
        cpu = _stats([x / y for x, y in zip(sd["cpu"], hw["cpu"])])
        rows.append([f"`{s}`", f"{a['median']:.2f} ({a['min']:.2f}–{a['max']:.2f})",
                     f"{b['median']:.2f} ({b['min']:.2f}–{b['max']:.2f})",
                     f"{a['median'] / b['median']:.2f}",
                     f"{wall['min']:.2f}–{wall['max']:.2f}",
                     f"{cpu['median']:.2f} ({cpu['min']:.2f}–{cpu['max']:.2f})"])  # fmt: skip
        data["first_call"][s] = {"raw": raw[s], "ratio_of_medians": a["median"] / b["median"],
                                 "wall_ratio": wall, "cpu_ratio": cpu}  # fmt: skip
    text = table(["20 steps, 256 x 64, MLP score", "sdegen first call s (range)",
                  "hand-written s (range)", "ratio of medians",
                  "wall ratio, pair by pair (range)",
                  "CPU-time ratio, pair by pair: median (range)"], rows)  # fmt: skip
    text += (f"\n\n{repeats} fresh processes per cell, interleaved (sdegen, hand-written, "
             "...); the first call is trace + compile + first run, after the imports. "
             "The CPU-time ratio (the process's CPU time over the call, compiler threads "
             "included) is steadier than the wall-clock one on a shared machine.")  # fmt: skip
    return text, data


def import_delta(repeats: int = 7) -> tuple[str, dict]:
    """`import sdegen` after `import jax, equinox, diffrax`, fresh processes."""
    code = ("import time, jax, equinox, diffrax; t = time.perf_counter(); import sdegen; "
            "import sys; print(time.perf_counter() - t, "
            "int(any(m in sys.modules for m in ('tensorboardX', 'matplotlib', "
            "'datasets', 'optax'))))")  # fmt: skip
    times, heavy = [], []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                             text=True, check=True).stdout.split()  # fmt: skip
        times.append(float(out[0]))
        heavy.append(int(out[1]))
    s = _stats(times)
    text = (f"`import sdegen` after `import jax, equinox, diffrax`: median "
            f"{s['median']:.3f} s (range {s['min']:.3f}–{s['max']:.3f} s, {repeats} fresh "
            f"processes); tensorboardX, matplotlib, datasets or optax imported: "
            f"{'yes' if any(heavy) else 'no'}.")  # fmt: skip
    return text, {"import_s": s, "heavy_imported": bool(any(heavy))}


def phases(repeats: int = 3, solvers=("euler", "dpmpp_2m")) -> tuple[str, dict]:
    """Where the first call goes: `fn.trace`, `.lower()`, `.compile()` and the first
    run timed one by one (fresh processes, interleaved; medians), and the number of
    top-level equations of the traced program."""
    try:
        from ._common import table
    except ImportError:
        from _common import table
    who_env = {"sdegen": None, "sdegen, EQX_ON_ERROR=off": {"EQX_ON_ERROR": "off"},
               "hand-written": None}  # fmt: skip
    raw: dict = {}
    for _ in range(repeats):
        for s in solvers:
            for who, env in who_env.items():
                r = _child(who.split(",")[0], s, "phases", env=env)
                raw.setdefault((s, who), []).append(r)
    rows = []
    for (s, who), rs in raw.items():
        med = [statistics.median(r["phases"][k] for r in rs) for k in range(4)]
        rows.append([f"`{s}`", who, *(f"{v:.3f}" for v in med), rs[0]["eqns"]])
    text = table(["solver", "who", "trace s", "lower s", "compile s", "first run s",
                  "top-level equations"], rows)  # fmt: skip
    text += (f"\n\nPhases of the first call, one by one in fresh processes (median of "
             f"{repeats}, interleaved). `EQX_ON_ERROR=off` switches off equinox's "
             "runtime checks and sdegen's one runtime check of the solve (a host "
             "callback on the failure code, which the hand-written loop does not "
             "have): the difference is what that check costs on a first call.")  # fmt: skip
    return text, {"phases": {f"{s}/{w}": rs for (s, w), rs in raw.items()}}


def run_all(repeats: int = 5):
    text, data = run(repeats)
    ptext, pdata = phases(3)
    itext, idata = import_delta(max(repeats, 5))
    return (text + "\n\n" + ptext + "\n\n" + itext,
            {**data, **pdata, "import": idata})  # fmt: skip


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--solvers", nargs="+", default=list(SOLVERS))
    a = p.parse_args(argv)
    text, _ = run(a.repeats, tuple(a.solvers))
    print(text)
    print(import_delta(max(a.repeats, 5))[0])


if __name__ == "__main__":
    main()
