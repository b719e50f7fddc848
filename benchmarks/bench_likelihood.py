"""Exact likelihood through the probability-flow ODE: sdegen against baselines.

Problems (VP SDE, eps = 1e-5, 1024 points by default):

- `8gauss`: the exact score of the 8-Gaussian mixture, points drawn from it; the
  reference is the analytic density of p_eps, and a float64 solve.
- `mlp`: an MLP score (3 hidden layers of width 256, ReLU; randomly initialised, which
  is fine for timing: the flow is an arbitrary smooth vector field), the reference a
  float64 Dopri8 solve at rtol = atol = 1e-10.

Methods, all at rtol = atol = 1e-5 in float32 unless stated:

- (a) the official score_sde approach: scipy `solve_ivp(RK45)` on the host, calling a
  jitted JAX function (drift + divergence of the whole batch) at every step;
- (b) torchdiffeq `odeint(dopri5)` on the CPU (torch autograd for the divergence);
- (c) one hand-configured `diffrax.diffeqsolve` (Tsit5, PID) of the augmented ODE
  over the whole batch;
- sdegen `log_likelihood_batch`: one adaptive solve per point (vmapped) and, with
  `per_sample_solves=False`, one shared solve.

Hutchinson rows use one Rademacher probe (or one "orthogonal" probe) fixed over the
solve; "spread" is the mean over points of the standard deviation of the estimate
across 4 probe draws; "err" for Hutchinson is the mean |estimate - reference| (it
includes that spread). Times exclude compilation (each JAX function is run once
before timing). Run `python benchmarks/bench_likelihood.py --help` for sizes.
"""

import argparse
import math
import time

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

import sdegen as sg


EPS = 1e-5


def _timed(fn, repeat=2):
    best = math.inf
    out = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        jax.block_until_ready(out)
        best = min(best, time.perf_counter() - t0)
    return best, out


class MLPScore(eqx.Module):
    mlp: eqx.nn.MLP

    def __call__(self, t, x):
        return self.mlp(jnp.concatenate([x, jnp.reshape(t, (1,)).astype(x.dtype)]))


def _augmented_batch_fn(sde, score, trace, probes=None):
    """drift and divergence of the whole batch, (B, d) -> ((B, d), (B,))."""
    def drift(t, x):
        t = jnp.asarray(t, x.dtype)
        out = sde.drift(t, x) - 0.5 * sde.diffusion(t) ** 2 * score(t, x)
        return out.astype(x.dtype)

    def one(t, x, v):
        if trace == "exact":
            fx, jac = jax.vmap(
                lambda e: jax.jvp(lambda y: drift(t, y), (x,), (e,)),
                out_axes=(None, 0),
            )(jnp.eye(x.shape[0], dtype=x.dtype))
            return fx, jnp.trace(jac)
        fx, jv = jax.jvp(lambda y: drift(t, y), (x,), (v,))
        return fx, jnp.sum(v * jv)

    def batch(t, xs, vs):
        return jax.vmap(one, in_axes=(None, 0, 0 if trace != "exact" else None))(
            t, xs, vs
        )

    return batch


# ---------------------------------------------------------------- (a) scipy


def run_scipy(sde, score, xs, trace, probes, rtol, atol):
    from scipy.integrate import solve_ivp

    fn = jax.jit(_augmented_batch_fn(sde, score, trace))
    b, d = xs.shape
    vs = probes if probes is not None else jnp.zeros(())
    dtype = xs.dtype

    def ode(t, y):
        x = jnp.asarray(y[: b * d].reshape(b, d), dtype)
        fx, div = fn(jnp.asarray(t, dtype), x, vs)
        return np.concatenate([np.asarray(fx).ravel(), np.asarray(div)]).astype(
            np.float64
        )

    y0 = np.concatenate([np.asarray(xs).ravel(), np.zeros(b)])
    ode(EPS, y0)  # compile

    def go():
        sol = solve_ivp(ode, (EPS, sde.T), y0, rtol=rtol, atol=atol, method="RK45")
        z = sol.y[: b * d, -1].reshape(b, d)
        delta = sol.y[b * d :, -1]
        logp = np.asarray(jax.vmap(sde.prior_logp)(jnp.asarray(z))) + delta
        return logp, sol.nfev

    t, (logp, nfe) = _timed(go, repeat=1)
    return t, logp, nfe


# ---------------------------------------------------------------- (b) torchdiffeq


def _torch_problem(kind, mixture_or_model, sde):
    import torch

    bmin, bmax = sde.beta_min, sde.beta_max
    beta = lambda t: bmin + t * (bmax - bmin)
    intb = lambda t: bmin * t + 0.5 * t**2 * (bmax - bmin)
    if kind == "8gauss":
        m = mixture_or_model
        means = torch.tensor(np.asarray(m.means), dtype=torch.float32)
        covs = torch.tensor(np.asarray(m.covs), dtype=torch.float32)
        logw = torch.log(torch.tensor(np.asarray(m.weights), dtype=torch.float32))
        eye = torch.eye(means.shape[1])

        def score(t, x):
            a2 = torch.exp(-intb(t))
            s2 = 1 - a2
            c = a2 * covs + s2 * eye  # (K, d, d)
            prec = torch.linalg.inv(c)
            diff = x[:, None, :] - torch.sqrt(a2) * means[None]  # (B, K, d)
            pd = torch.einsum("kij,bkj->bki", prec, diff)
            logdet = torch.logdet(c)
            logpdf = -0.5 * (diff * pd).sum(-1) - 0.5 * logdet + logw
            r = torch.softmax(logpdf, dim=1)
            return -(r[..., None] * pd).sum(1)

    else:
        mlp = mixture_or_model.mlp
        layers = []
        for i, lin in enumerate(mlp.layers):
            tl = torch.nn.Linear(lin.in_features, lin.out_features)
            with torch.no_grad():
                tl.weight.copy_(torch.tensor(np.asarray(lin.weight)))
                tl.bias.copy_(torch.tensor(np.asarray(lin.bias)))
            layers.append(tl)
            if i < len(mlp.layers) - 1:
                layers.append(torch.nn.ReLU())
        net = torch.nn.Sequential(*layers)

        def score(t, x):
            tt = torch.full((x.shape[0], 1), float(t), dtype=x.dtype)
            return net(torch.cat([x, tt], dim=1))

    def drift(t, x):
        return -0.5 * beta(t) * x - 0.5 * beta(t) * score(t, x)

    return drift


def run_torch(kind, obj, sde, xs, trace, probes, rtol, atol):
    try:
        import torch
        from torchdiffeq import odeint
    except ImportError:
        return None
    drift = _torch_problem(kind, obj, sde)
    x0 = torch.tensor(np.asarray(xs), dtype=torch.float32)
    v = None if probes is None else torch.tensor(np.asarray(probes), dtype=torch.float32)
    count = [0]

    def func(t, state):
        count[0] += 1
        x, _ = state
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            f = drift(t, x)
            if trace == "exact":
                div = 0.0
                for i in range(x.shape[1]):
                    g = torch.autograd.grad(f[:, i].sum(), x, retain_graph=True)[0]
                    div = div + g[:, i]
            else:
                g = torch.autograd.grad((f * v).sum(), x)[0]
                div = (g * v).sum(1)
        return f.detach(), div.detach()

    ts = torch.tensor([EPS, sde.T], dtype=torch.float32)

    def go():
        count[0] = 0
        with torch.no_grad():
            zs, deltas = odeint(func, (x0, torch.zeros(x0.shape[0])), ts,
                                rtol=rtol, atol=atol, method="dopri5")  # fmt: skip
        z = zs[-1].numpy()
        logp = np.asarray(jax.vmap(sde.prior_logp)(jnp.asarray(z))) + deltas[-1].numpy()
        return logp, count[0]

    t, (logp, nfe) = _timed(go, repeat=1)
    return t, logp, nfe


# ---------------------------------------------------------------- (c) diffrax


def make_diffrax_batch(sde, score, trace, rtol, atol):
    fn = _augmented_batch_fn(sde, score, trace)

    @jax.jit
    def solve(xs, vs):
        term = diffrax.ODETerm(lambda t, y, args: fn(t, y[0], args))
        sol = diffrax.diffeqsolve(
            term, diffrax.Tsit5(), jnp.asarray(EPS, xs.dtype),
            jnp.asarray(sde.T, xs.dtype), None,
            (xs, jnp.zeros(xs.shape[0], xs.dtype)), args=vs,
            stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
            max_steps=4096,
        )  # fmt: skip
        z, delta = sol.ys[0][-1], sol.ys[1][-1]
        return jax.vmap(sde.prior_logp)(z) + delta, 6 * sol.stats["num_steps"] + 1

    return solve


# ---------------------------------------------------------------- driver


def _row(rows, problem, method, trace, t, nfe, err_ref, err_an=None, spread=None):
    rows.append((problem, method, trace, t, nfe, err_ref, err_an, spread))
    print("  " + _line(rows[-1]), flush=True)  # progress, as each row is measured


def _line(row):
    p, m, tr, t, nfe, e_ref, e_an, spread = row
    return (f"| {p} | {m} | {tr} | {_fmt(t, '.3f')} | {_fmt(nfe, 'd')} | "
            f"{_fmt(e_ref, '.2e')} | {_fmt(e_an, '.2e')} | {_fmt(spread, '.3f')} |")  # fmt: skip


def bench_problem(kind, n, rtol, atol, key, rows, with_hutch=True, chunk=None):
    sde = sg.VPSDE()
    if kind == "8gauss":
        obj = sg.data.eight_gaussians(dtype=jnp.float32)
        xs = obj.sample(key, n)
        score = obj.score(sde)
        obj64 = sg.data.eight_gaussians(dtype=jnp.float64)
        score64 = obj64.score(sde)
        analytic = np.asarray(
            jax.vmap(obj64.marginal(sde, EPS).log_prob)(xs.astype(jnp.float64))
        )
    else:
        mlp = eqx.nn.MLP(3, 2, width_size=256, depth=3, key=key)
        obj = MLPScore(mlp)
        xs = sg.data.eight_gaussians(dtype=jnp.float32).sample(jr.fold_in(key, 1), n)
        score = obj
        score64 = jax.tree_util.tree_map(
            lambda a: a.astype(jnp.float64) if eqx.is_inexact_array(a) else a, obj
        )
        analytic = None
    # float64 reference: Dopri8 at 1e-10 (exact trace)
    ref, _ = sg.log_likelihood_batch(
        sde, score64, xs.astype(jnp.float64), solver="dopri8", rtol=1e-10, atol=1e-10,
        batch_size=chunk, per_sample_solves=False,
    )  # fmt: skip
    ref = np.asarray(ref)

    def errs(lp):
        lp = np.asarray(lp, np.float64)
        e_ref = float(np.mean(np.abs(lp - ref)))
        e_an = None if analytic is None else float(np.mean(np.abs(lp - analytic)))
        return e_ref, e_an

    traces = ["exact"] + (["hutchinson"] if with_hutch else [])
    for trace in traces:
        probe_keys = jr.split(jr.fold_in(key, 7), 4)
        probes = None
        if trace == "hutchinson":
            probes = jr.rademacher(probe_keys[0], xs.shape, dtype=xs.dtype)
        # (a) scipy
        t, lp, nfe = run_scipy(sde, score, xs, trace, probes, rtol, atol)
        _row(rows, kind, "(a) scipy RK45 + jitted JAX", trace, t, nfe, *errs(lp))
        # (b) torchdiffeq
        out = run_torch(kind, obj, sde, xs, trace, probes, rtol, atol)
        if out is None:
            _row(rows, kind, "(b) torchdiffeq dopri5: not installed", trace,
                 None, None, None)  # fmt: skip
        else:
            t, lp, nfe = out
            _row(rows, kind, "(b) torchdiffeq dopri5 (CPU)", trace, t, nfe, *errs(lp))
        # (c) one hand-written diffrax solve over the batch
        solve = make_diffrax_batch(sde, score, trace, rtol, atol)
        vs = probes if probes is not None else jnp.zeros(())
        solve(xs, vs)
        t, (lp, nfe) = _timed(lambda: solve(xs, vs))
        _row(rows, kind, "(c) diffrax, one batched solve", trace, t, int(nfe), *errs(lp))
        # sdegen
        for per_sample, name in ((False, "sdegen, shared solve"),
                                 (True, "sdegen, per-point solves")):  # fmt: skip
            kw = dict(rtol=rtol, atol=atol, trace=trace, per_sample_solves=per_sample,
                      batch_size=chunk)  # fmt: skip
            probes_list = [None]
            if trace == "hutchinson":
                probes_list = list(probe_keys)
            call = lambda k: sg.log_likelihood_batch(sde, score, xs, key=k, **kw)
            call(probes_list[0])
            t, (lp, st) = _timed(lambda: call(probes_list[0]))
            spread = None
            if trace == "hutchinson":
                draws = np.stack([np.asarray(call(k)[0]) for k in probes_list])
                spread = float(np.mean(np.std(draws, axis=0)))
            nfe = int(jnp.max(st.nfe))
            _row(rows, kind, name, trace, t, nfe, *errs(lp), spread)
        if trace == "hutchinson":
            kw = dict(rtol=rtol, atol=atol, trace=trace, probe="orthogonal",
                      per_sample_solves=False, batch_size=chunk)  # fmt: skip
            call = lambda k: sg.log_likelihood_batch(sde, score, xs, key=k, **kw)
            call(probe_keys[0])
            t, (lp, st) = _timed(lambda: call(probe_keys[0]))
            draws = np.stack([np.asarray(call(k)[0]) for k in probe_keys])
            spread = float(np.mean(np.std(draws, axis=0)))
            _row(rows, kind, "sdegen, shared solve, orthogonal probe", trace, t,
                 int(jnp.max(st.nfe)), *errs(lp), spread)  # fmt: skip
    return rows


def _fmt(v, f):
    return "—" if v is None else format(v, f)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1024, help="points per problem")
    parser.add_argument("--tol", type=float, default=1e-5, help="rtol = atol")
    parser.add_argument("--problems", default="8gauss,mlp")
    parser.add_argument("--no-hutchinson", action="store_true")
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", True)  # for the float64 reference solves
    rows = []
    key = jr.key(0)
    for i, kind in enumerate(args.problems.split(",")):
        bench_problem(kind, args.n, args.tol, args.tol, jr.fold_in(key, i), rows,
                      with_hutch=not args.no_hutchinson)  # fmt: skip
    print(f"\nLikelihood benchmark: {args.n} points, rtol = atol = {args.tol:g}, "
          f"float32, device {jax.devices()[0].platform}\n")  # fmt: skip
    print("| problem | method | trace | time (s) | NFE | err vs f64 ref (nats) "
          "| err vs analytic | Hutchinson spread |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(_line(row))
    return rows


if __name__ == "__main__":
    main()
