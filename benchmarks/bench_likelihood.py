"""Exact likelihoods through the probability-flow ODE: sdegen against diffrax used
directly, per sample and batched.

- exact trace, d = 2: `jax.vmap(sg.log_likelihood)` against `jax.vmap` of a
  hand-written augmented ODE in `diffrax.diffeqsolve` (Tsit5, 1e-5);
- Hutchinson (one Rademacher probe), d = 64: the batch path of
  `sg.log_likelihood_batch(per_sample_solves=False)` — the drift of the whole batch in
  one call and one JVP per probe over the batch — against the same thing written by
  hand in one `diffeqsolve`, and against the per-sample (vmapped) mode.

    python benchmarks/bench_likelihood.py [--batch 256]
"""

import argparse

import diffrax
import jax
import jax.numpy as jnp
import jax.random as jr
import optimistix as optx

import sdegen as sg


try:
    from ._common import interleave, ratio, table
    from .bench_adaptive import MLPScore, mixture_score
except ImportError:  # run as a script
    from _common import interleave, ratio, table
    from bench_adaptive import MLPScore, mixture_score


SDE = sg.VPSDE()
EPS, TOL = 1e-5, 1e-5


def _controller(norm=optx.rms_norm):
    return diffrax.PIDController(rtol=TOL, atol=TOL, norm=norm)


def hand_written_exact(score):
    drift = sg.ScoreDrift(SDE, score, 0.5)

    def field(t, y, args):
        x, _ = y
        jac = jax.jacfwd(lambda x_: drift(t, x_, None))(x)
        return drift(t, x, None), jnp.trace(jac)

    def one(x):
        sol = diffrax.diffeqsolve(diffrax.ODETerm(field), diffrax.Tsit5(), EPS, SDE.T,
                                  None, (x, jnp.zeros((), x.dtype)),
                                  stepsize_controller=_controller(), max_steps=16**4)  # fmt: skip
        z, delta = sol.ys[0][-1], sol.ys[1][-1]
        return SDE.prior_logp(z) + delta

    return jax.jit(jax.vmap(one))


def hand_written_batch(score):
    drift = sg.ScoreDrift(SDE, score, 0.5)

    def field(t, y, probes):
        xs, _ = y
        batched = lambda x_: jax.vmap(lambda x1: drift(t, x1, None))(x_)
        fx, jv = jax.jvp(batched, (xs,), (probes,))
        return fx, jnp.sum(probes * jv, axis=-1)

    def run(xs, probes):
        norm = lambda y: jnp.max(jax.vmap(optx.rms_norm)(y))
        sol = diffrax.diffeqsolve(diffrax.ODETerm(field), diffrax.Tsit5(), EPS, SDE.T,
                                  None, (xs, jnp.zeros(xs.shape[:1], xs.dtype)),
                                  args=probes, stepsize_controller=_controller(norm),
                                  max_steps=16**4)  # fmt: skip
        z, delta = sol.ys[0][-1], sol.ys[1][-1]
        return jax.vmap(SDE.prior_logp)(z) + delta

    return jax.jit(run)


def run(batch=256, rounds=5):
    # exact trace, d = 2
    score2 = mixture_score()
    x2 = sg.data.eight_gaussians().sample(jr.key(0), batch)
    ours = jax.jit(jax.vmap(lambda x: sg.log_likelihood(SDE, score2, x, rtol=TOL,
                                                        atol=TOL, eps=EPS)[0]))  # fmt: skip
    base = hand_written_exact(score2)
    res_e = interleave({"sdegen vmapped": lambda: ours(x2),
                        "diffrax vmapped": lambda: base(x2)}, rounds)  # fmt: skip
    err = float(jnp.max(jnp.abs(ours(x2) - base(x2))))
    # Hutchinson, d = 64
    d = 64
    score64 = MLPScore(d, jr.key(1))
    x64 = 0.5 * jr.normal(jr.key(2), (batch, d))
    key = jr.key(3)
    probes = jax.vmap(lambda i: jr.rademacher(jr.fold_in(key, i), (1, d), x64.dtype))(
        jnp.arange(batch))[:, 0]  # fmt: skip
    kw = dict(trace="hutchinson", rtol=TOL, atol=TOL, eps=EPS, batch_size=None)
    batch_path = lambda: sg.log_likelihood_batch(SDE, score64, x64, key,
                                                 per_sample_solves=False, **kw)[0]  # fmt: skip
    per_sample = lambda: sg.log_likelihood_batch(SDE, score64, x64, key, **kw)[0]
    base64 = hand_written_batch(score64)
    res_h = interleave({"sdegen batch path": batch_path,
                        "hand-written batch solve": lambda: base64(x64, probes),
                        "sdegen per-sample (vmapped)": per_sample}, rounds)  # fmt: skip
    err64 = float(jnp.max(jnp.abs(batch_path() - base64(x64, probes))))
    rows = [["exact trace, d=2, " + k, 1e3 * v["median"]] for k, v in res_e.items()]
    rows += [["Hutchinson, d=64, " + k, 1e3 * v["median"]] for k, v in res_h.items()]
    text = table([f"log-likelihood of {batch} points", "ms"], rows)
    r1 = ratio(res_e, "sdegen vmapped", "diffrax vmapped")
    r2 = ratio(res_h, "sdegen batch path", "hand-written batch solve")
    text += "\n\n" + table(["ratio", "value", "max |difference| (nats)"], [
        ["sdegen vmapped / diffrax vmapped (exact, d=2)", r1, err],
        ["sdegen batch path / hand-written batch solve (Hutchinson, d=64)", r2, err64],
    ])  # fmt: skip
    return text, {"exact_ratio": r1, "hutchinson_ratio": r2,
                  "ms": {**{k: 1e3 * v["median"] for k, v in res_e.items()},
                         **{k: 1e3 * v["median"] for k, v in res_h.items()}}}  # fmt: skip


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args(argv)
    print(run(a.batch, a.rounds)[0])


if __name__ == "__main__":
    main()
