"""Fixed-step sampling: sdegen's engine against a hand-written loop and diffrax.

Euler–Maruyama on the reverse VP SDE, `b` samples of dimension `d`, `n` steps:

- `sdegen`: `jax.vmap` of `sg.sample_sde` (noise of step i from `fold_in(key, i)`,
  non-finite watch, statistics);
- `hand-written`: the same update in a `jax.lax.scan`, drawing each step's noise from
  `fold_in(key, i)`: the floor;
- `diffrax`: `diffrax.diffeqsolve` with `ConstantStepSize` and an
  `UnsafeBrownianPath`, vmapped.

The score is the exact score of Gaussian data (cheap, so the loop's own overhead is
what is measured). Also the peak memory growth of a 16 x 8192 x 1000-step solve, in a
fresh process (the old engine drew every step's noise up front: 2.1 GB).

    python benchmarks/bench_sample.py [--dims 2 64 1024] [--batch 1024] [--steps 200]
"""

import argparse

import diffrax
import jax
import jax.numpy as jnp
import jax.random as jr

import sdegen as sg


try:
    from ._common import interleave, peak_rss_growth_mb, ratio, table
except ImportError:  # run as a script
    from _common import interleave, peak_rss_growth_mb, ratio, table


SDE = sg.VPSDE()
EPS = 1e-3


def _alpha_sigma2(t):
    B = 0.1 * t + 0.5 * t**2 * 19.9
    return jnp.exp(-0.5 * B), -jnp.expm1(-B)


def score(t, x):
    """Exact score of N(0, 0.25 I) data under the VP SDE."""
    a, s2 = _alpha_sigma2(t)
    return -x / (a**2 * 0.25 + s2)


def hand_written(d, n):
    du = (SDE.T - EPS) / n

    def one(key):
        k_prior, k_noise = jr.split(key)
        x = jr.normal(k_prior, (d,))

        def body(x, i):
            t = SDE.T - i * du
            beta = 0.1 + t * 19.9
            drift = -0.5 * beta * x - beta * score(t, x)
            z = jr.normal(jr.fold_in(k_noise, i), (d,))
            return x - drift * du + jnp.sqrt(beta * du) * z, None

        x, _ = jax.lax.scan(body, x, jnp.arange(n))
        return x

    return jax.jit(jax.vmap(one))


def with_diffrax(d, n):
    du = (SDE.T - EPS) / n

    def one(key):
        k_prior, k_noise = jr.split(key)
        x = jr.normal(k_prior, (d,))
        bm = diffrax.UnsafeBrownianPath(shape=(d,), key=k_noise)
        terms = sg.reverse_terms(SDE, score, bm, reversed_time=True)
        sol = diffrax.diffeqsolve(terms, diffrax.Euler(), 0.0, SDE.T - EPS, du, x,
                                  stepsize_controller=diffrax.ConstantStepSize(),
                                  saveat=diffrax.SaveAt(t1=True), max_steps=n + 1,
                                  adjoint=diffrax.ForwardMode())  # fmt: skip
        return sol.ys[-1]

    return jax.jit(jax.vmap(one))


def with_sdegen(d, n):
    return jax.jit(jax.vmap(lambda k: sg.sample_sde(k, SDE, score, (d,), num_steps=n)))


MEMORY = """
import jax, jax.random as jr, jax.numpy as jnp
import sdegen as sg
def setup():
    sde = sg.VPSDE()
    score = lambda t, x: -x
    keys = jr.split(jr.key(0), 16)
    fn = jax.jit(jax.vmap(lambda k: sg.sample_sde(k, sde, score, (8192,), num_steps={n})))
    return lambda: fn(keys).block_until_ready()
"""


def run(dims=(2, 64, 1024), batch=1024, steps=200, rounds=7, memory=True):
    rows, records = [], []
    for d in dims:
        keys = jr.split(jr.key(0), batch)
        fns = {"sdegen": with_sdegen(d, steps), "hand-written": hand_written(d, steps),
               "diffrax": with_diffrax(d, steps)}  # fmt: skip
        res = interleave({k: (lambda f=f: f(keys)) for k, f in fns.items()}, rounds)
        r_floor, r_dfx = ratio(res, "sdegen", "hand-written"), ratio(res, "sdegen", "diffrax")
        rows.append([d, batch, steps, 1e3 * res["sdegen"]["median"],
                     1e3 * res["hand-written"]["median"], 1e3 * res["diffrax"]["median"],
                     r_floor, r_dfx])  # fmt: skip
        records.append({"d": d, "batch": batch, "steps": steps, **{
            f"{k}_ms": 1e3 * v["median"] for k, v in res.items()}, "ratio_floor": r_floor,
            "ratio_diffrax": r_dfx})  # fmt: skip
    text = table(["d", "batch", "steps", "sdegen ms", "hand-written ms", "diffrax ms",
                  "sdegen / hand-written", "sdegen / diffrax"], rows)  # fmt: skip
    out = {"em": records}
    if memory:
        mem = {n: peak_rss_growth_mb(MEMORY.format(n=n)) for n in (10, 1000)}
        text += "\n\n" + table(
            ["16 x 8192 EM steps", "peak RSS growth (MB)"],
            [[n, m["growth_mb"]] for n, m in mem.items()],
        )  # fmt: skip
        text += ("\n\n(The growth is compilation plus O(batch x dim) state; it does not "
                 "grow with the number of steps.)")  # fmt: skip
        out["memory"] = {str(n): m for n, m in mem.items()}
    return text, out


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--dims", type=int, nargs="+", default=[2, 64, 1024])
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--no-memory", action="store_true")
    a = p.parse_args(argv)
    text, _ = run(a.dims, a.batch, a.steps, a.rounds, not a.no_memory)
    print(text)


if __name__ == "__main__":
    main()

