"""Adaptive sampling: sdegen against diffrax used directly, in both modes.

Probability-flow ODE, Tsit5, rtol = atol = 1e-5, `b` samples of dimension `d`, an MLP
score (random weights, so the ODE is non-trivial):

- per-sample: `jax.vmap(sg.sample_ode)` against `jax.vmap` of a hand-written
  `diffrax.diffeqsolve` (every sample its own steps);
- batched: `sg.sample_ode_batch` (one solve, shared steps, error norm = the largest
  per-sample RMS) against one `diffrax.diffeqsolve` of the stacked batch with the same
  norm, and with diffrax's default norm (the RMS over the whole batch: fewer steps,
  because one sample's error is averaged with the others').

Also the adaptive reverse SDE (Heun with a VirtualBrownianTree) against the same solve
without Brownian noise (the floor), as the dimension grows.

    python benchmarks/bench_adaptive.py [--batch 1024] [--dim 2]
"""

import argparse

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import optimistix as optx

import sdegen as sg


try:
    from ._common import interleave, ratio, table
except ImportError:  # run as a script
    from _common import interleave, ratio, table


SDE = sg.VPSDE()
EPS = 1e-3
TOL = 1e-5


class MixtureScore(eqx.Module):
    """The exact score of the 8-Gaussians mixture diffused by the VP SDE, written
    without input checks (the probability-flow ODE is stiff near t = eps, as a trained
    model's is: a few hundred adaptive steps)."""

    means: jax.Array

    def __call__(self, t, x):
        B = 0.1 * t + 0.5 * t**2 * 19.9
        a, var = jnp.exp(-0.5 * B), jnp.exp(-B) * 0.09 - jnp.expm1(-B)
        d = x[None, :] - a * self.means
        logw = -0.5 * jnp.sum(d**2, -1) / var
        return -(jax.nn.softmax(logw) @ d) / var


class MLPScore(eqx.Module):
    """An MLP score on [x, t] (2 hidden layers of width 128), for higher dimensions."""

    mlp: eqx.nn.MLP

    def __init__(self, d, key):
        self.mlp = eqx.nn.MLP(d + 1, d, 128, 2, activation=jax.nn.silu, key=key)

    def __call__(self, t, x):
        return self.mlp(jnp.concatenate([x, jnp.reshape(t, (1,)).astype(x.dtype)])) - x


def mixture_score():
    return MixtureScore(sg.data.eight_gaussians().means)


def _diffrax_ode(score, x, norm=optx.rms_norm):
    term = sg.probability_flow_term(SDE, score)
    sol = diffrax.diffeqsolve(term, diffrax.Tsit5(), SDE.T, EPS, None, x,
                              stepsize_controller=diffrax.PIDController(
                                  rtol=TOL, atol=TOL, norm=norm),
                              saveat=diffrax.SaveAt(t1=True), max_steps=16**4)  # fmt: skip
    return sol.ys[-1], sol.stats["num_steps"]


def _per_sample_norm(y):
    return jnp.max(jax.vmap(optx.rms_norm)(y))


def run_ode(batch=1024, d=2, rounds=5):
    score = mixture_score() if d == 2 else MLPScore(d, jr.key(1))
    keys = jr.split(jr.key(0), batch)
    x0 = jax.vmap(lambda k: SDE.prior_sample(jr.split(k)[0], (d,)))(keys)
    batched = sg.BatchedScore(score)
    fns = {
        "sdegen vmapped": jax.jit(jax.vmap(lambda k: sg.sample_ode(
            k, SDE, score, (d,), "tsit5", rtol=TOL, atol=TOL, return_stats=True))),
        "diffrax vmapped": jax.jit(jax.vmap(lambda x: _diffrax_ode(score, x))),
        "sdegen batched": jax.jit(lambda k: sg.sample_ode_batch(
            k, SDE, score, (d,), "tsit5", rtol=TOL, atol=TOL, return_stats=True)),
        "diffrax batch, per-sample norm": jax.jit(
            lambda x: _diffrax_ode(batched, x, _per_sample_norm)),
        "diffrax batch, RMS over batch": jax.jit(lambda x: _diffrax_ode(batched, x)),
    }  # fmt: skip
    arg = {"sdegen vmapped": keys, "sdegen batched": keys}
    thunks = {k: (lambda f=f, a=arg.get(k, x0): f(a)) for k, f in fns.items()}
    res = interleave(thunks, rounds)
    steps = {}
    for k, f in thunks.items():
        out = f()[1]
        steps[k] = int(jnp.max(out.num_steps if hasattr(out, "num_steps") else out))
    rows = [[k, 1e3 * v["median"], steps[k]] for k, v in res.items()]
    text = table(["probability-flow ODE, tsit5 1e-5", "ms", "steps (max)"], rows)
    text += "\n\n" + table(["ratio", "value"], [
        ["sdegen vmapped / diffrax vmapped", ratio(res, "sdegen vmapped", "diffrax vmapped")],
        ["sdegen batched / diffrax batch (same norm)",
         ratio(res, "sdegen batched", "diffrax batch, per-sample norm")],
    ])  # fmt: skip
    return text, {k: {"ms": 1e3 * v["median"], "steps": steps[k]} for k, v in res.items()}


def run_sde(dims=(2, 64), batch=256, rounds=5):
    """Adaptive reverse SDE (Heun, rtol = atol = 1e-3, dt0 = T/100): sdegen (a
    VirtualBrownianTree with tolerance dt0/8) against (a) the same solve written with
    diffrax directly (same tree, same controller) and (b) the cost floor of the noise:
    fixed-step Heun on an UnsafeBrownianPath (fresh normals per step, no tree) with as
    many steps as the adaptive solve accepted on average. diffrax refuses an
    UnsafeBrownianPath under adaptive stepping, hence the fixed-step floor."""
    rows, out = [], {}
    for d in dims:
        score = mixture_score() if d == 2 else MLPScore(d, jr.key(1))
        keys = jr.split(jr.key(0), batch)
        span = SDE.T - EPS
        dt0 = span / 100

        def sdegen(k):
            return sg.sample_sde(k, SDE, score, (d,), "heun", rtol=1e-3, atol=1e-3,
                                 num_steps=100, return_stats=True)  # fmt: skip

        def direct(k):
            k_prior, k_noise = jr.split(k)
            bm = diffrax.VirtualBrownianTree(0.0, span, tol=dt0 / 8, shape=(d,),
                                             key=k_noise)  # fmt: skip
            terms = sg.reverse_terms(SDE, score, bm, reversed_time=True)
            sol = diffrax.diffeqsolve(terms, diffrax.Heun(), 0.0, span, dt0,
                                      SDE.prior_sample(k_prior, (d,)),
                                      stepsize_controller=diffrax.PIDController(
                                          rtol=1e-3, atol=1e-3),
                                      saveat=diffrax.SaveAt(t1=True),
                                      adjoint=diffrax.ForwardMode())  # fmt: skip
            return sol.ys[-1], sol.stats["num_steps"]

        fns = {"sdegen": jax.jit(jax.vmap(sdegen)), "diffrax": jax.jit(jax.vmap(direct))}
        s_steps = float(jnp.mean(fns["sdegen"](keys)[1].num_steps))
        n_floor = max(1, round(s_steps))

        def floor(k):
            k_prior, k_noise = jr.split(k)
            bm = diffrax.UnsafeBrownianPath((d,), k_noise)
            terms = sg.reverse_terms(SDE, score, bm, reversed_time=True)
            sol = diffrax.diffeqsolve(terms, diffrax.Heun(), 0.0, span, span / n_floor,
                                      SDE.prior_sample(k_prior, (d,)),
                                      saveat=diffrax.SaveAt(t1=True),
                                      adjoint=diffrax.ForwardMode())  # fmt: skip
            return sol.ys[-1], sol.stats["num_steps"]

        fns["floor"] = jax.jit(jax.vmap(floor))
        res = interleave({k: (lambda f=f: f(keys)) for k, f in fns.items()}, rounds)
        d_steps = float(jnp.mean(fns["diffrax"](keys)[1]))
        per_step = (res["sdegen"]["median"] / s_steps) / (res["floor"]["median"] / n_floor)
        r_dfx = ratio(res, "sdegen", "diffrax")
        rows.append([d, 1e3 * res["sdegen"]["median"], s_steps,
                     1e3 * res["diffrax"]["median"], d_steps, r_dfx,
                     1e3 * res["floor"]["median"], n_floor, per_step])  # fmt: skip
        out[d] = {"per_step_vs_floor": per_step, "vs_diffrax": r_dfx,
                  "sdegen_steps": s_steps, "diffrax_steps": d_steps}  # fmt: skip
    text = table(["d", "sdegen ms", "mean steps", "diffrax (same tree) ms", "mean steps",
                  "sdegen / diffrax", "floor ms (fixed steps, no tree)", "steps",
                  "time per step: sdegen / floor"], rows)  # fmt: skip
    return text, out


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--dim", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args(argv)
    print(run_ode(a.batch, a.dim, a.rounds)[0])
    print()
    print(run_sde(rounds=a.rounds)[0])


if __name__ == "__main__":
    main()
