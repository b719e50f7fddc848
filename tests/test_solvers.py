"""sdegen's own solvers against exact answers.

- Convergence order: for Gaussian data N(mu, s^2 I) the probability-flow ODE keeps the
  standardised value z = (x - alpha mu)/sqrt(alpha^2 s^2 + sigma^2) constant, so its
  flow map is closed form; each solver's final-state error must fall at its order as
  the number of steps doubles (fitted slope within 0.3 of the order).
- DPM-Solver++(2M) against a float64 NumPy implementation of Lu et al. 2022's
  Algorithm 2 (written here from the paper), on an exact mixture score, on an explicit
  grid and on the log-SNR grid: 1e-3 (the check of the issue; in float64 the two agree
  to ~1e-12).
- Identities: DDIM = DPM-Solver++(1); DDIM with eta = 1 = ancestral sampling with the
  posterior variance; EDM without churn = Heun in sigma/alpha.
"""

import math

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import sdegen as sg

from .helpers import mixture_3d


MU, S = 0.7, 0.5  # Gaussian data N(MU, S^2) in every coordinate


def gaussian_score(sde):
    def score(t, x):
        a, sig = sde.alpha(t), sde.sigma(t)
        return -(x - a * MU) / (a**2 * S**2 + sig**2)

    return score


def exact_flow(sde, x_T, eps):
    """The probability-flow ODE's flow map from T down to eps for Gaussian data."""
    v = lambda t: sde.alpha(t) ** 2 * S**2 + sde.sigma(t) ** 2
    z = (x_T - sde.alpha(sde.T) * MU) / jnp.sqrt(v(sde.T))
    return sde.alpha(eps) * MU + jnp.sqrt(v(eps)) * z


ORDERS = {"ddim": 1, "dpmpp_2m": 2, "dpm_solver_2": 2, "dpm_solver_3": 3, "edm": 2,
          "heun": 2, "euler": 1}  # fmt: skip
SDE_CASES = {
    "vp": (sg.VPSDE(), 1e-3),
    "ve": (sg.VESDE(sigma_min=0.01, sigma_max=20.0), 1e-3),
    "edm": (sg.EDMSDE(T=20.0), 2e-2),
}


@pytest.mark.parametrize("sde_name", sorted(SDE_CASES))
@pytest.mark.parametrize("name", sorted(ORDERS))
def test_convergence_order(name, sde_name):
    sde, eps = SDE_CASES[sde_name]
    score = gaussian_score(sde)
    x_T = sde.prior_std * jnp.array([-1.3, 0.4, 2.1])
    exact = exact_flow(sde, x_T, eps)
    grid = "uniform" if name in ("euler", "heun") else "logsnr"
    steps = np.array([16, 32, 64])
    if name in ("euler", "heun"):
        steps = 4 * steps  # uniform steps in t are slow to reach the asymptotic regime
    errs = []
    for n in steps:
        x = sg.sample_ode(jr.key(0), sde, score, (3,), name, num_steps=int(n), eps=eps,
                          grid=grid, x_init=x_T)  # fmt: skip
        errs.append(float(jnp.max(jnp.abs(x - exact))))
    slope = -np.polyfit(np.log(steps), np.log(errs), 1)[0]
    assert abs(slope - ORDERS[name]) < 0.3, (name, sde_name, errs, slope)


# ---------------------------------------------------------------- DPM-Solver++(2M)


def _np_mixture_score(mix, alpha, sigma, x):
    """The exact score of the diffused mixture, in float64 NumPy."""
    means = alpha * np.asarray(mix.means)
    covs = alpha**2 * np.asarray(mix.covs) + sigma**2 * np.eye(x.size)[None]
    logw, grads = [], []
    for m, c, w in zip(means, covs, np.asarray(mix.weights)):
        prec = np.linalg.inv(c)
        d = x - m
        logw.append(np.log(w) - 0.5 * d @ prec @ d - 0.5 * np.linalg.slogdet(c)[1])
        grads.append(-prec @ d)
    logw = np.array(logw)
    r = np.exp(logw - logw.max())
    r /= r.sum()
    return np.sum(r[:, None] * np.array(grads), 0)


def _np_vp(t, bmin=0.1, bmax=20.0):
    B = bmin * t + 0.5 * t**2 * (bmax - bmin)
    return math.exp(-0.5 * B), math.sqrt(-math.expm1(-B))


def _np_dpmpp_2m(x, ts, mix):
    """Lu et al. 2022, DPM-Solver++, Algorithm 2 (2M), in float64 NumPy."""
    lam = lambda t: math.log(_np_vp(t)[0] / _np_vp(t)[1])

    def data_pred(t, x):
        a, s = _np_vp(t)
        return (x + s**2 * _np_mixture_score(mix, a, s, x)) / a

    d_prev = None
    for i in range(len(ts) - 1):
        s, t = ts[i], ts[i + 1]
        d = data_pred(s, x)
        h = lam(t) - lam(s)
        if d_prev is None:
            dh = d
        else:
            r = (lam(s) - lam(ts[i - 1])) / h
            dh = (1 + 1 / (2 * r)) * d - 1 / (2 * r) * d_prev
        a_t, s_t = _np_vp(t)
        x = s_t / _np_vp(s)[1] * x - a_t * math.expm1(-h) * dh
        d_prev = d
    return x


def test_dpmpp_2m_matches_float64_reference():
    mix = mixture_3d()
    sde = sg.VPSDE()
    score = mix.score(sde)
    x_T = np.array([0.3, -1.1, 0.8])
    ts = np.array([1.0, 0.8, 0.55, 0.4, 0.21, 0.1, 0.03, 0.01, 1e-3])
    ours = sg.sample_ode(jr.key(0), sde, score, (3,), "dpmpp_2m", ts=ts, x_init=x_T)
    ref = _np_dpmpp_2m(x_T, ts, mix)
    np.testing.assert_allclose(np.asarray(ours), ref, atol=1e-9)
    # the log-SNR grid: uniform in lambda, ends exact
    grid = np.asarray(sg.time_grid(sde, 12, "logsnr", eps=1e-3))
    lam = np.array([math.log(_np_vp(t)[0] / _np_vp(t)[1]) for t in grid])
    np.testing.assert_allclose(np.diff(lam), np.diff(lam)[0], rtol=1e-9)
    assert grid[0] == 1.0 and grid[-1] == 1e-3
    ours = sg.sample_ode(jr.key(0), sde, score, (3,), "dpmpp_2m", num_steps=12,
                         grid="logsnr", eps=1e-3, x_init=x_T)  # fmt: skip
    np.testing.assert_allclose(np.asarray(ours), _np_dpmpp_2m(x_T, grid, mix), atol=1e-9)


# ---------------------------------------------------------------- identities


def test_ddim_is_first_order_dpm_solver_pp():
    """One DDIM step equals (sigma_t/sigma_s) x + alpha_t (1 - e^{-h}) D (DPM-Solver++(1))."""
    sde = sg.SubVPSDE()
    score = mixture_3d().score(sde)
    x = jnp.array([0.2, -0.4, 1.0])
    s, t = 0.7, 0.45
    drift = sg.ScoreDrift(sde, score, 0.5)
    term = sg.probability_flow_term(sde, score)
    y1, *_ = sg.DDIM().step(term, s, t, x, None, None, False)
    a_s, s_s, a_t, s_t = sde.alpha(s), sde.sigma(s), sde.alpha(t), sde.sigma(t)
    h = jnp.log(a_t / s_t) - jnp.log(a_s / s_s)
    expected = s_t / s_s * x + a_t * (1 - jnp.exp(-h)) * drift.denoise(s, x)
    np.testing.assert_allclose(y1, expected, rtol=1e-12)


def test_ddim_eta_one_is_ancestral_posterior():
    """DDIM with eta = 1 and ancestral sampling with the posterior variance draw the
    same sample from the same noise (both are q(x_t | x_s, x0 = D))."""
    sde = sg.VPSDE()
    score = mixture_3d().score(sde)
    keys = jr.split(jr.key(0), 4)
    run = lambda solver: jax.vmap(lambda k: sg.sample_sde(
        k, sde, score, (3,), solver, num_steps=30))(keys)  # fmt: skip
    np.testing.assert_allclose(run(sg.DDIM(eta=1.0)), run(sg.Ancestral("posterior")),
                               rtol=1e-10, atol=1e-10)  # fmt: skip


def test_edm_without_churn_is_heun_in_sigma():
    """EDM's deterministic sampler on the EDM SDE (alpha = 1, sigma = t) is Heun's
    method on the probability-flow ODE dx/dt = -t s(t, x)."""
    sde = sg.EDMSDE(T=10.0)
    score = mixture_3d().score(sde)
    x_T = jnp.array([3.0, -5.0, 1.0])
    a = sg.sample_ode(jr.key(0), sde, score, (3,), "edm", num_steps=9, x_init=x_T)
    b = sg.sample_ode(jr.key(0), sde, score, (3,), "heun", num_steps=9, x_init=x_T)
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["ancestral", "dpmpp_2m_sde", "edm_sde", "ddim_eta"])
def test_stochastic_solvers_sample_gaussian_data(name):
    """For Gaussian data the sample's mean and variance at eps are exact in the limit;
    at 200 steps with 4000 samples they match to 4 standard errors."""
    sde = sg.VPSDE()
    score = gaussian_score(sde)
    solver = sg.DDIM(eta=0.5) if name == "ddim_eta" else name
    keys = jr.split(jr.key(1), 4000)
    x = jax.jit(jax.vmap(lambda k: sg.sample_sde(k, sde, score, (2,), solver,
                                                 num_steps=200, grid="logsnr")))(keys)  # fmt: skip
    a, s = sde.alpha(1e-3), sde.sigma(1e-3)
    mean, var = a * MU, a**2 * S**2 + s**2
    se_mean = math.sqrt(var / x.size)
    se_var = var * math.sqrt(2 / x.size)
    assert abs(float(jnp.mean(x)) - mean) < 4 * se_mean
    assert abs(float(jnp.var(x)) - var) < 4 * se_var
