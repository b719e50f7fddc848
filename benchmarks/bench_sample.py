"""Reverse-SDE Euler–Maruyama sampling: sdegen vs a hand-written jit + lax.scan loop.

Same SDE (VP), same score, same number of steps, same per-sample keys; the baseline
draws all of a sample's noise up front (the fastest hand-written form) and performs the
Euler–Maruyama update in u = T - t by hand. Reports median wall time over several runs
(compile time separately) and the ratio sdegen / baseline (target <= 1.2).

    python benchmarks/bench_sample.py [--batches 1024 8192] [--steps 1000] [--repeats 5]
"""

import argparse

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr

import sdegen as sg


try:
    from ._common import table, timeit
except ImportError:  # run as a script
    from _common import table, timeit


class MLPScore(eqx.Module):
    """An MLP score (3 hidden layers of width 256) on [x, t]."""

    mlp: eqx.nn.MLP

    def __init__(self, key):
        self.mlp = eqx.nn.MLP(3, 2, 256, 3, activation=jax.nn.silu, key=key)

    def __call__(self, t, x):
        return self.mlp(jnp.concatenate([x, jnp.reshape(t, (1,)).astype(x.dtype)]))


def baseline_sampler(sde, score, num_steps, eps):
    T = sde.T
    du = (T - eps) / num_steps

    def one(key):
        k_prior, k_noise = jr.split(key)
        x = sde.prior_sample(k_prior, (2,))
        z = jr.normal(k_noise, (num_steps, 2), x.dtype)

        def body(x, inp):
            i, zi = inp
            t = T - i * du
            g = sde.diffusion(t)
            drift = sde.drift(t, x) - g**2 * score(t, x)
            return x - drift * du + g * jnp.sqrt(du) * zi, None

        x, _ = jax.lax.scan(body, x, (jnp.arange(num_steps, dtype=x.dtype), z))
        return x

    return jax.jit(jax.vmap(one))


def sdegen_sampler(sde, score, num_steps, eps):
    return jax.jit(
        jax.vmap(
            lambda k: sg.sample_sde(k, sde, score, (2,), "euler_maruyama", num_steps, eps)
        )
    )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--batches", type=int, nargs="+", default=[1024, 8192])
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    sde = sg.VPSDE()
    gmm = sg.data.eight_gaussians(dtype=jnp.float32)
    scores = {
        "exact 8-Gaussian": gmm.score(sde),
        "MLP 3x256": MLPScore(jr.key(0)),
    }
    rows = []
    for sname, score in scores.items():
        for b in args.batches:
            keys = jr.split(jr.key(1), b)
            res = {}
            for label, make in (("loop", baseline_sampler), ("sdegen", sdegen_sampler)):
                res[label] = timeit(make(sde, score, args.steps, 1e-3), keys,
                                    repeats=args.repeats)  # fmt: skip
            ratio = res["sdegen"]["median"] / res["loop"]["median"]
            rows.append([
                sname, b, args.steps,
                f"{res['loop']['median']:.3f}", f"{res['sdegen']['median']:.3f}",
                f"{ratio:.2f}",
                f"{res['loop']['compile']:.2f} / {res['sdegen']['compile']:.2f}",
            ])  # fmt: skip
            print(rows[-1], flush=True)
    print()
    print("Reverse-SDE Euler–Maruyama sampling, VP SDE, float32, device:",
          jax.devices()[0].platform)  # fmt: skip
    print(table(
        ["score", "batch", "steps", "lax.scan loop (s)", "sdegen (s)", "ratio",
         "compile loop / sdegen (s)"],
        rows,
    ))  # fmt: skip
    return rows


if __name__ == "__main__":
    main()
