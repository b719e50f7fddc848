r"""Score-matching losses against the exact scores of Gaussian data.

Gaussian data $\mathcal{N}(\mu, \Sigma)$ diffused by a linear SDE stays Gaussian,
$\mathcal{N}(\alpha\mu, \alpha^2\Sigma + \sigma^2 I)$, so its score is exact and cheap
to compile (the properties tested hold for any data; Gaussian mixtures are exercised
by the sampling tests). Every statistical check uses common random numbers (the same
key for the exact and the perturbed model, so the per-example differences have small
variance) and a tolerance of a stated number of standard errors of the Monte-Carlo
mean.
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import sdegen as sg
from sdegen._training._losses._common import drop_labels, example_keys
from sdegen._training._losses._dsm import draw_times
from sdegen._training._losses._weighting import resolve_weighting

from .helpers import SDES


N = 2000  # examples per Monte-Carlo estimate
Z = 5.0  # tolerance in standard errors


class GaussianScore(eqx.Module):
    """The exact score of N(mu, cov) diffused by `sde`:
    -(alpha^2 cov + sigma^2 I)^{-1} (x - alpha mu), through cov's eigenbasis."""

    sde: sg.AbstractSDE
    mu: jax.Array
    evals: jax.Array
    evecs: jax.Array

    def __call__(self, t, x):
        t = jnp.asarray(t, self.mu.dtype)  # unchecked closed forms: cheap to compile
        a, s = self.sde._alpha(t), self.sde._sigma(t)
        r = self.evecs.T @ (x - a * self.mu)
        return -self.evecs @ (r / (a**2 * self.evals + s**2))


class NoiseConditional(eqx.Module):
    """The exact score of N(mu, cov) + N(0, sigma^2 I)."""

    mu: jax.Array
    evals: jax.Array
    evecs: jax.Array

    def __call__(self, sigma, x):
        r = self.evecs.T @ (x - self.mu)
        return -self.evecs @ (r / (self.evals + sigma**2))


class Gaussian:
    """Data N(mu, cov) with the `sample` / `score` / `noise_conditional_score` of
    sdegen.data.GaussianMixture."""

    def __init__(self, mu, cov):
        self.mu, self.cov = jnp.asarray(mu), jnp.asarray(cov)
        self.evals, self.evecs = jnp.linalg.eigh(self.cov)

    def sample(self, key, n):
        z = jr.normal(key, (n, self.mu.shape[0]))
        return self.mu[None] + (z * jnp.sqrt(self.evals)[None]) @ self.evecs.T

    def score(self, sde):
        return GaussianScore(sde, self.mu, self.evals, self.evecs)

    def noise_conditional_score(self):
        return NoiseConditional(self.mu, self.evals, self.evecs)


def eight_gaussians():
    """2-D data of about the 8-Gaussian mixture's scale: mean (1, -0.5), stds 2.5, 1."""
    return Gaussian([1.0, -0.5], [[5.0, 2.0], [2.0, 2.0]])


def mixture_3d():
    """3-D data with a correlated covariance."""
    a = np.array([[0.5, 0.2, 0.0], [0.1, 0.4, 0.15], [0.0, -0.2, 0.3]])
    return Gaussian([2.0, 0.0, -1.0], a @ a.T + 0.05 * np.eye(3))


def _mean_se(v):
    v = np.asarray(v)
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(v.size))


class Shifted(eqx.Module):
    """exact(t, x) * scale + shift: a perturbed score for the minimiser tests."""

    exact: eqx.Module
    shift: jax.Array
    scale: float = 1.0

    def __call__(self, t, x):
        return self.scale * self.exact(t, x) + self.shift


def _per_example(single, model, data, key, *args, **kwargs):
    return _per_example_many(single, [model], data, key, *args, **kwargs)[0]


def _per_example_many(single, models, data, key, *args, **kwargs):
    """Per-example losses of several models with common random numbers (the same
    per-example keys), in one compiled function: shape (len(models), N)."""
    keys = jr.split(key, data.shape[0])

    @jax.jit
    def run(data, keys):
        return jnp.stack(
            [
                jax.vmap(lambda x, k: single(m, *args, x, k, **kwargs))(data, keys)
                for m in models
            ]
        )

    return np.asarray(run(data, keys))


def _mean_sigma2(sde, eps, n=200_001):
    t = np.linspace(eps, sde.T, n)
    s2 = np.asarray(sde._sigma(jnp.asarray(t))) ** 2
    return float(np.trapezoid(s2, t) / (sde.T - eps))


# --------------------------------------------------------------------------------
# DSM


@pytest.mark.parametrize("sde_name,weighting", [("vp", "sigma2"), ("ve", "edm")])
def test_dsm_minimised_by_exact_score(sde_name, weighting, getkey):
    sde = SDES[sde_name]()
    gmm = eight_gaussians()
    exact = gmm.score(sde)
    data = gmm.sample(getkey(), N)
    models = [
        exact,
        Shifted(exact, 0.3 * jnp.ones(2)),
        Shifted(exact, jnp.zeros(2), 1.3),
    ]
    losses = _per_example_many(
        sg.single_dsm_loss, models, data, getkey(), sde, weighting=weighting, eps=1e-3
    )
    for other in losses[1:]:
        m, se = _mean_se(other - losses[0])
        assert m > Z * se, (m, se)


@pytest.mark.parametrize("sde_name", ["vp"])
def test_dsm_excess_loss_is_exact(sde_name, getkey):
    # For s = s* + c, E[sigma^2 ||s + z/sigma||^2] - E[... at s*] = ||c||^2 E_t[sigma^2]
    # exactly, because E[s*(t, x_t) + z/sigma | x_t] = 0.
    sde = SDES[sde_name]()
    gmm = mixture_3d()
    exact = gmm.score(sde)
    data = gmm.sample(getkey(), N)
    key = getkey()
    eps = 1e-3
    c = jnp.array([0.3, -0.2, 0.1])
    base, other = _per_example_many(
        sg.single_dsm_loss, [exact, Shifted(exact, c)], data, key, sde, eps=eps
    )
    m, se = _mean_se(other - base)
    # the per-example differences carry the t-sampling error, so the SE covers it
    expected = float(jnp.sum(c**2)) * _mean_sigma2(sde, eps)
    assert abs(m - expected) < Z * se + 0.02 * expected, (m, expected, se)


def test_dsm_loss_is_mean_of_single(getkey):
    sde = sg.VPSDE()
    gmm = eight_gaussians()
    model = Shifted(gmm.score(sde), 0.1 * jnp.ones(2))
    data = gmm.sample(getkey(), 64)
    key = getkey()
    per = _per_example(sg.single_dsm_loss, model, data, key, sde)
    batch_loss = jax.jit(lambda d, k: sg.dsm_loss(model, sde, d, k))(data, key)
    assert jnp.allclose(batch_loss, np.mean(per), rtol=1e-12)
    # an example's loss is that of single_dsm_loss with its own key
    keys = jr.split(key, 64)
    one = jax.jit(lambda x, k: sg.single_dsm_loss(model, sde, x, k))(data[3], keys[3])
    assert jnp.allclose(one, per[3], rtol=1e-12)


@pytest.mark.parametrize("sde_name", ["vp"])
def test_dsm_gradient_vanishes_at_exact_score(sde_name, getkey):
    sde = SDES[sde_name]()
    gmm = eight_gaussians()
    exact = gmm.score(sde)
    data = gmm.sample(getkey(), N)
    keys = jr.split(getkey(), N)
    eps = 1e-3

    def grads(c):
        f = lambda cc, x, k: sg.single_dsm_loss(Shifted(exact, cc), sde, x, k, eps=eps)
        return np.asarray(jax.jit(jax.vmap(jax.grad(f), (None, 0, 0)))(c, data, keys))

    g0 = grads(jnp.zeros(2))
    for i in range(2):
        m, se = _mean_se(g0[:, i])
        assert abs(m) < Z * se, (i, m, se)
    # at c = 0.5 the gradient is 2 E[sigma^2] c: positive, and of the right size
    g1 = grads(0.5 * jnp.ones(2))
    expected = 2 * _mean_sigma2(sde, eps) * 0.5
    for i in range(2):
        m, se = _mean_se(g1[:, i])
        assert m > Z * se
        assert abs(m - expected) < Z * se + 0.02 * expected, (i, m, expected, se)


@pytest.mark.parametrize("sde_name", ["vp", "subvp"])
def test_importance_weights_are_unbiased(sde_name, getkey):
    # E_q[1 / ((T - eps) q(t))] = 1 and E_q[w f(t)] = mean of f over U(eps, T).
    sde = SDES[sde_name]()
    eps = 1e-5
    times = sg.ImportanceTimes().prepare(sde, eps, jnp.float64)
    keys = jr.split(getkey(), 20_000)
    t, w = jax.jit(lambda k: draw_times(sde, k, times, eps, None, False, jnp.float64))(
        keys
    )
    assert bool(jnp.all((t >= eps) & (t <= sde.T)))
    m, se = _mean_se(w)
    assert abs(m - 1) < Z * se + 1e-12
    f = lambda s: jnp.cos(3 * s) + s**2
    m, se = _mean_se(w * f(t))
    exact = (math.sin(3 * sde.T) - math.sin(3 * eps)) / 3 + (sde.T**3 - eps**3) / 3
    assert abs(m - exact / (sde.T - eps)) < Z * se


@pytest.mark.parametrize("sde_name", ["vp"])
def test_importance_sampling_same_objective_lower_variance(sde_name, getkey):
    sde = SDES[sde_name]()
    gmm = eight_gaussians()
    exact = gmm.score(sde)
    data = gmm.sample(getkey(), 4 * N)
    eps = 1e-3
    plain = _per_example(
        sg.single_dsm_loss, exact, data, getkey(), sde, weighting="likelihood", eps=eps
    )
    kw = dict(weighting="likelihood", eps=eps, importance_sampling=True)
    imp = _per_example(sg.single_dsm_loss, exact, data, getkey(), sde, **kw)
    (m1, se1), (m2, se2) = _mean_se(plain), _mean_se(imp)
    assert abs(m1 - m2) < Z * math.hypot(se1, se2), (m1, se1, m2, se2)
    assert se2 < 0.5 * se1, (se1, se2)


# --------------------------------------------------------------------------------
# NCSN and DDPM


def test_geometric_sigmas():
    s = sg.geometric_sigmas(10.0, 0.01, 4)
    assert jnp.allclose(s, jnp.array([10.0, 1.0, 0.1, 0.01]), rtol=1e-12)
    assert s.dtype == jnp.zeros(()).dtype
    with pytest.raises(ValueError, match="sigma_max"):
        sg.geometric_sigmas(0.01, 10.0, 4)
    with pytest.raises(ValueError, match="sigma_min"):
        sg.geometric_sigmas(1.0, 0.0, 4)
    with pytest.raises(ValueError, match="num_levels"):
        sg.geometric_sigmas(1.0, 0.1, 1)


def test_ncsn_minimised_by_exact_score(getkey):
    gmm = eight_gaussians()
    exact = gmm.noise_conditional_score()
    sigmas = sg.geometric_sigmas(10.0, 0.05, 8)
    data = gmm.sample(getkey(), N)
    key = getkey()
    c = jnp.array([0.3, 0.3])
    models = [exact, Shifted(exact, c), Shifted(exact, jnp.zeros(2), 1.3)]
    base, other, scaled = _per_example_many(
        sg.single_ncsn_loss, models, data, key, sigmas
    )
    m, se = _mean_se(other - base)
    # excess loss (1/2) ||c||^2 E_i[sigma_i^2] with the level uniform over the ladder;
    # the per-example differences carry the level-sampling error, so SE covers it
    expected = 0.5 * float(jnp.sum(c**2) * jnp.mean(sigmas**2))
    assert m > Z * se
    assert abs(m - expected) < Z * se, (m, expected, se)
    m, se = _mean_se(scaled - base)
    assert m > Z * se
    batch_loss = jax.jit(lambda d, k: sg.ncsn_loss(exact, sigmas, d, k))(data, key)
    assert jnp.allclose(batch_loss, np.mean(base), rtol=1e-12)


def _vp_ddpm(num_steps=100):
    """An exact eps model for a VP chain: abar_n = alpha(t_n)^2 on t_n = (n+1)/N."""
    sde = sg.VPSDE()
    tn = (jnp.arange(num_steps) + 1.0) / num_steps
    abar = sde._alpha(tn) ** 2
    exact = eight_gaussians().score(sde)

    def eps_model(n, x):
        t = tn[n]
        return -sde._sigma(t) * exact(t, x)

    return abar, eps_model


def test_ddpm_minimised_by_exact_eps(getkey):
    abar, eps_model = _vp_ddpm()
    data = eight_gaussians().sample(getkey(), N)
    key = getkey()
    c = jnp.array([0.3, -0.3])
    shifted = lambda n, x: eps_model(n, x) + c
    base, other = _per_example_many(
        sg.single_ddpm_loss, [eps_model, shifted], data, key, abar
    )
    m, se = _mean_se(other - base)
    # E||z - eps* - c||^2 - E||z - eps*||^2 = ||c||^2 exactly
    assert abs(m - float(jnp.sum(c**2))) < Z * se, (m, se)
    assert m > Z * se
    batch_loss = jax.jit(lambda d, k: sg.ddpm_loss(eps_model, abar, d, k))(data, key)
    assert jnp.allclose(batch_loss, np.mean(base), rtol=1e-12)
    # at the exact eps the loss is the posterior variance of eps, below E||z||^2 = 2
    assert float(jnp.mean(base)) < 2.0


# --------------------------------------------------------------------------------
# SSM and ISM


@pytest.mark.parametrize("loss", ["ssm_gauss", "ism"])
def test_implicit_losses_minimised_by_exact_score(loss, getkey):
    sde = sg.VPSDE()
    gmm = eight_gaussians()
    exact = gmm.score(sde)
    data = gmm.sample(getkey(), N)
    key = getkey()
    if loss == "ism":
        single, kw = sg.single_ism_loss, {}
    else:
        single = sg.single_ssm_loss
        kw = {
            "ssm": dict(num_projections=2),
            "ssm_vr": dict(variance_reduction=True),
            "ssm_gauss": dict(projection="gaussian", num_projections=8),
        }[loss]
    # the shift cancels from v^T J v, leaving (1/2) sigma^2 ||c||^2 + sigma^2 c.s*:
    # use a shift large enough to stand out of the second term's noise
    models = [
        exact,
        Shifted(exact, 0.5 * jnp.ones(2)),
        Shifted(exact, jnp.zeros(2), 1.5),
    ]
    losses = _per_example_many(single, models, data, key, sde, eps=1e-3, **kw)
    for other in losses[1:]:
        m, se = _mean_se(other - losses[0])
        assert m > Z * se, (loss, m, se)


@pytest.mark.parametrize("loss", ["ssm", "ism"])
def test_implicit_losses_match_half_dsm_at_fixed_t(loss, getkey):
    # At fixed t, ISM(s) = (1/2) sigma^2 E||s - s*||^2 + C and
    # DSM(s) = sigma^2 E||s - s*||^2 + C': the excess losses differ by exactly 1/2.
    sde = sg.VPSDE()
    gmm = mixture_3d()
    exact = gmm.score(sde)
    data = gmm.sample(getkey(), N)
    t = 0.3
    pert = Shifted(exact, jnp.zeros(3), 1.3)
    key_dsm, key = getkey(), getkey()
    dsm = _per_example_many(sg.single_dsm_loss, [exact, pert], data, key_dsm, sde, t=t)
    dsm = dsm[1] - dsm[0]
    if loss == "ism":
        single, kw = sg.single_ism_loss, {}
    else:
        single = sg.single_ssm_loss
        kw = dict(variance_reduction=loss == "ssm_vr", num_projections=4)
    imp = _per_example_many(single, [exact, pert], data, key, sde, t=t, **kw)
    imp = imp[1] - imp[0]
    (m1, se1), (m2, se2) = _mean_se(dsm), _mean_se(imp)
    assert m2 > Z * se2
    assert abs(m2 - 0.5 * m1) < Z * math.hypot(0.5 * se1, se2), (m1, se1, m2, se2)


def test_ism_at_exact_score_is_minus_half_fisher(getkey):
    # Integration by parts: E[tr J*] = -E||s*||^2, so ISM(s*) = -(1/2) sigma^2 E||s*||^2.
    sde = sg.VPSDE()
    gmm = mixture_3d()
    exact = gmm.score(sde)
    data = gmm.sample(getkey(), N)
    t = 0.2
    key = getkey()
    ism = _per_example(sg.single_ism_loss, exact, data, key, sde, t=t)
    keys = jr.split(key, N)
    xt = jax.vmap(
        lambda x, k: sde.alpha(t) * x + sde.sigma(t) * jr.normal(jr.split(k)[1], (3,))
    )(data, keys)
    fisher = (
        -0.5 * sde.sigma(t) ** 2 * jnp.sum(jax.vmap(lambda x: exact(t, x))(xt) ** 2, 1)
    )
    m, se = _mean_se(ism - fisher)
    assert abs(m) < Z * se, (m, se)


# --------------------------------------------------------------------------------
# Reductions, the EDM weighting, time sampling, label dropout


def test_mean_reduction_divides_the_sum_by_the_entries(getkey):
    sde = sg.VPSDE()
    score = lambda t, x: 0.3 - (1 + t) * x
    eps_model = lambda n, x: 0.1 * x
    abar = jnp.linspace(0.99, 0.01, 20)
    sigmas = sg.geometric_sigmas(5.0, 0.1, 5)
    data = jr.normal(getkey(), (16, 2))
    key = getkey()
    calls = [
        lambda r: sg.dsm_loss(score, sde, data, key, weighting="edm", times="lognormal",
                              stratified=True, reduction=r),  # fmt: skip
        lambda r: sg.ncsn_loss(score, sigmas, data, key, reduction=r),
        lambda r: sg.ddpm_loss(eps_model, abar, data, key, reduction=r),
        lambda r: sg.ssm_loss(score, sde, data, key, reduction=r),
        lambda r: sg.ism_loss(score, sde, data, key, reduction=r),
    ]
    both = jax.jit(lambda: [(f("sum"), f("mean")) for f in calls])
    for i, (total, mean) in enumerate(both()):
        assert jnp.allclose(mean, total / 2, rtol=1e-12, atol=0), i


def test_edm_weighting_is_the_edm_loss(getkey):
    # EDM (Karras et al. 2022, eq. 8, Table 1): lambda = (st^2 + sd^2)/(st sd)^2 on
    # ||D - x0||^2 with D = (x_t + sigma^2 s)/alpha, st = sigma/alpha; with the EDM
    # preconditioner this is ||F - (x0 - c_skip x~)/c_out||^2 on the raw network.
    sde, sd, t = sg.VPSDE(), 0.7, 0.37
    net = sg.nn.MLP(2, 16, 2, key=getkey(), embed_dim=8)
    model = sg.nn.EDMPreconditioner(net, sde, sd)
    weighting = sg.EDMWeighting(sigma_data=sd)
    x0s = eight_gaussians().sample(getkey(), 6)
    alpha, sigma = sde.alpha(t), sde.sigma(t)
    st = sigma / alpha
    assert jnp.allclose(weighting(sde, jnp.asarray(t)),
                        sigma**2 * (st**2 + sd**2) / sd**2, rtol=1e-12)  # fmt: skip
    single = jax.jit(lambda x0, k: sg.single_dsm_loss(model, sde, x0, k,
                                                      weighting=weighting, t=t))  # fmt: skip
    for x0, k in zip(x0s, jr.split(getkey(), 6)):
        loss = single(x0, k)
        z = jr.normal(jr.split(k)[1], (2,))
        xt = alpha * x0 + sigma * z
        denoised = (xt + sigma**2 * model(t, xt)) / alpha
        edm = (st**2 + sd**2) / (st * sd) ** 2 * jnp.sum((denoised - x0) ** 2)
        assert jnp.allclose(loss, edm, rtol=1e-10), (loss, edm)
        x_tilde = xt / alpha
        c_skip = sd**2 / (st**2 + sd**2)
        c_out = st * sd / jnp.sqrt(st**2 + sd**2)
        c_in = 1 / jnp.sqrt(st**2 + sd**2)
        raw = net(0.25 * jnp.log(st), c_in * x_tilde)
        target = (x0 - c_skip * x_tilde) / c_out
        assert jnp.allclose(loss, jnp.sum((raw - target) ** 2), rtol=1e-10)
    # the name "edm" is sigma_data = 0.5
    assert resolve_weighting("edm") == sg.EDMWeighting(0.5)
    assert sg.WEIGHTINGS == ("sigma2", "likelihood", "edm", "cfm")
    assert sg.TIME_SAMPLINGS == ("uniform", "importance", "lognormal", "logit_normal")


def test_stratified_times_one_per_stratum_unbiased_less_variance(getkey):
    sde, eps, n = sg.VPSDE(), 1e-3, 16
    draw = jax.jit(lambda k, times, st: draw_times(sde, jr.split(k, n), times, eps,
                                                   None, st, jnp.float64),
                   static_argnums=(1, 2))  # fmt: skip
    for times in (sg.UniformTimes(), sg.LogNormalTimes()):
        t, w = draw(getkey(), times, True)
        assert jnp.all(w == 1)
        if isinstance(times, sg.UniformTimes):
            u = (t - eps) / (sde.T - eps)
        else:  # the normal quantile of ln(sigma/alpha)
            u = jax.scipy.stats.norm.cdf((jnp.log(sde._sigma(t) / sde._alpha(t)) + 1.2)
                                         / 1.2)  # fmt: skip
        # one time in each of the n strata [b/n, (b+1)/n)
        assert sorted(np.floor(np.asarray(u) * n + 1e-9).astype(int)) == list(range(n))
    # The batch mean of sigma(t_b)^2 (the excess loss of a shifted score per unit
    # shift, which varies strongly with t): the same expectation, far less variance.
    keys = jr.split(getkey(), 1000)
    f = jax.jit(jax.vmap(lambda k, st: jnp.mean(sde._sigma(
        draw_times(sde, jr.split(k, n), sg.UniformTimes(), eps, None, st,
                   jnp.float64)[0]) ** 2), (0, None)), static_argnums=1)  # fmt: skip
    plain, strat = np.asarray(f(keys, False)), np.asarray(f(keys, True))
    (m1, se1), (m2, se2) = _mean_se(plain), _mean_se(strat)
    assert abs(m1 - m2) < Z * math.hypot(se1, se2), (m1, se1, m2, se2)
    assert abs(m2 - _mean_sigma2(sde, eps)) < Z * se2
    assert np.var(strat) < 0.05 * np.var(plain), (np.var(strat), np.var(plain))


@pytest.mark.parametrize("sde_name", ["vp", "ve"])
def test_lognormal_times_follow_edm(sde_name, getkey):
    # ln(sigma/alpha) ~ N(P_mean, P_std^2) (Karras et al. 2022), clipped to [eps, T].
    import scipy.stats

    sde, eps = SDES[sde_name](), 1e-5
    times = sg.LogNormalTimes(p_mean=-1.2, p_std=1.2)
    t, w = jax.jit(lambda k: draw_times(sde, jr.split(k, 4000), times, eps, None,
                                        False, jnp.float64))(getkey())  # fmt: skip
    assert jnp.all(w == 1) and jnp.all((t >= eps) & (t <= sde.T))
    inside = np.asarray((t > eps) & (t < sde.T))
    log_st = np.log(np.asarray(sde._sigma(t) / sde._alpha(t)))
    lo = math.log(float(sde.sigma(eps) / sde.alpha(eps)))
    hi = math.log(float(sde.sigma(sde.T) / sde.alpha(sde.T)))
    # the clipped draws are those beyond the ends, with the normal's tail masses
    tails = scipy.stats.norm.cdf(lo, -1.2, 1.2) + scipy.stats.norm.sf(hi, -1.2, 1.2)
    assert abs((~inside).mean() - tails) < 5 * math.sqrt(tails / 4000) + 1e-3
    truncated = scipy.stats.truncnorm((lo + 1.2) / 1.2, (hi + 1.2) / 1.2, -1.2, 1.2)
    assert scipy.stats.kstest(log_st[inside], truncated.cdf).pvalue > 1e-3


def test_label_dropout_replaces_labels_by_the_null_class(getkey):
    n, p = 4000, 0.25
    labels = jnp.arange(n) % 10
    _, drop_keys = example_keys(getkey(), n)
    out = drop_labels(labels, drop_keys, p, 10)
    dropped = np.asarray(out == 10)
    assert abs(dropped.mean() - p) < 5 * math.sqrt(p * (1 - p) / n)
    assert jnp.all(out[~dropped] == labels[~dropped])
    sde = sg.VPSDE()
    net = sg.nn.MLP(2, width=16, depth=2, key=getkey(), num_classes=3, embed_dim=8)
    model = sg.nn.NoiseParam(net, sde)
    data = eight_gaussians().sample(getkey(), 32)
    labels, key = jnp.arange(32) % 3, getkey()
    loss = jax.jit(lambda lab, p: sg.dsm_loss(model, sde, data, key, labels=lab,
                                              label_dropout=p, null_label=3))  # fmt: skip
    # p = 1: every label is the null class; p = 0: the labels as given
    assert loss(labels, 1.0) == loss(jnp.full(32, 3), 0.0)
    assert loss(labels, 0.0) != loss(labels, 1.0)


# --------------------------------------------------------------------------------
# Transformations, labels and errors


@pytest.mark.parametrize(
    "name",
    ["dsm", "ism"],
)
def test_losses_jit_and_grad_through_mlp(name, getkey):
    sde = sg.VPSDE()
    net = sg.nn.MLP(2, width=16, depth=2, key=getkey(), num_classes=3)
    model = sg.nn.NoiseParam(net, sde)
    data = eight_gaussians().sample(getkey(), 32)
    labels = jnp.arange(32) % 4  # 3 = the null class
    key = getkey()
    losses = {
        "dsm": lambda m: sg.dsm_loss(m, sde, data, key, labels=labels, weighting="edm",
                                     times="lognormal", stratified=True,
                                     label_dropout=0.2, null_label=3),  # fmt: skip
        "ism": lambda m: sg.ism_loss(m, sde, data, key, labels=labels),
    }
    value, grads = eqx.filter_jit(eqx.filter_value_and_grad(losses[name]))(model)
    assert value.shape == () and bool(jnp.isfinite(value))
    leaves = jax.tree_util.tree_leaves(eqx.filter(grads, eqx.is_array))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert any(float(jnp.max(jnp.abs(g))) > 0 for g in leaves)


def test_loss_errors(getkey):
    sde = sg.VPSDE()
    gmm = eight_gaussians()
    exact = gmm.score(sde)
    data = gmm.sample(getkey(), 8)
    key = getkey()
    known = "Known weighting names: sigma2, likelihood, edm"
    with pytest.raises(ValueError, match=f"Unknown weighting 'uniform' for `weighting`. {known}"):
        sg.dsm_loss(exact, sde, data, key, weighting="uniform")
    with pytest.raises(ValueError, match="Unknown time 'beta' for `times`. Known time names: uniform, importance, lognormal"):
        sg.dsm_loss(exact, sde, data, key, times="beta")
    with pytest.raises(ValueError, match="`reduction` must be one of 'sum', 'mean', got 'max'"):
        sg.dsm_loss(exact, sde, data, key, reduction="max")
    with pytest.raises(ValueError, match=r"`batch` contains non-finite values \(NaN or inf\): 1 of 16"):
        sg.dsm_loss(exact, sde, data.at[0, 0].set(jnp.nan), key)
    with pytest.raises(ValueError, match=r"\(batch, \*data\)"):
        sg.dsm_loss(exact, sde, data[0], key)
    with pytest.raises(ValueError, match="data's shape"):
        sg.dsm_loss(lambda t, x: x[:1], sde, data, key)
    with pytest.raises(ValueError, match="`eps` must satisfy 0 < eps < T"):
        sg.dsm_loss(exact, sde, data, key, eps=0.0)
    with pytest.raises(ValueError, match="fixed `t`"):
        sg.dsm_loss(exact, sde, data, key, t=0.5, importance_sampling=True)
    with pytest.raises(ValueError, match="cannot be combined with `times='lognormal'`"):
        sg.dsm_loss(exact, sde, data, key, times="lognormal", importance_sampling=True)
    with pytest.raises(ValueError, match=r"`labels` must have shape \(8,\)"):
        sg.dsm_loss(exact, sde, data, key, labels=jnp.zeros(3, int))
    with pytest.raises(ValueError, match="`label_dropout` > 0 needs `null_label`"):
        sg.dsm_loss(exact, sde, data, key, labels=jnp.zeros(8, int), label_dropout=0.1)
    with pytest.raises(ValueError, match=r"`label_dropout` must be in \[0, 1\]"):
        sg.dsm_loss(exact, sde, data, key, labels=jnp.zeros(8, int), label_dropout=2.0,
                    null_label=3)  # fmt: skip
    with pytest.raises(ValueError, match="`sigma_data` must be finite and > 0"):
        sg.EDMWeighting(sigma_data=0.0)
    with pytest.raises(ValueError, match="`p_std` must be finite and > 0"):
        sg.LogNormalTimes(p_std=-1.0)
    sigmas = sg.geometric_sigmas(5.0, 0.1, 5)
    ncs = gmm.noise_conditional_score()
    with pytest.raises(ValueError, match="strictly decreasing"):
        sg.ncsn_loss(ncs, sigmas[::-1], data, key)
    with pytest.raises(ValueError, match="> 0"):
        sg.ncsn_loss(ncs, sigmas.at[-1].set(0.0), data, key)
    abar, eps_model = _vp_ddpm()
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        sg.ddpm_loss(eps_model, abar.at[0].set(1.5), data, key)
    with pytest.raises(ValueError, match="`num_projections` must be a positive int"):
        sg.ssm_loss(exact, sde, data, key, num_projections=0)
    with pytest.raises(ValueError, match="'rademacher', 'gaussian'"):
        sg.ssm_loss(exact, sde, data, key, projection="sphere")
    with pytest.raises(ValueError, match="Unknown weighting 'nope'"):
        sg.ism_loss(exact, sde, data, key, weighting="nope")


@pytest.mark.slow
def test_dsm_adam_training_reduces_score_error(getkey):
    # A few hundred Adam steps of DSM on the 8-Gaussian mixture bring the network's
    # score at t = 0.5 much closer to the exact one than at initialisation.
    sde = sg.VPSDE()
    gmm = eight_gaussians()
    exact = gmm.score(sde)
    model = sg.nn.NoiseParam(sg.nn.MLP(2, width=64, depth=2, key=getkey()), sde)
    data = gmm.sample(getkey(), 4096)
    t = 0.5
    x_eval = jax.vmap(
        lambda x, k: sde.alpha(t) * x + sde.sigma(t) * jr.normal(k, (2,))
    )(data[:1000], jr.split(getkey(), 1000))
    s_true = jax.vmap(lambda x: exact(t, x))(x_eval)

    @eqx.filter_jit
    def rel_error_of(m):
        s = jax.vmap(lambda x: m(t, x))(x_eval)
        return jnp.sqrt(jnp.sum((s - s_true) ** 2) / jnp.sum(s_true**2))

    rel_error = lambda m: float(rel_error_of(m))

    optim = optax.adam(3e-3)
    opt_state = optim.init(eqx.filter(model, eqx.is_array))

    @eqx.filter_jit
    def step(m, opt_state, key):
        kb, kl = jr.split(key)
        batch = data[jr.choice(kb, data.shape[0], (256,))]
        loss, grads = eqx.filter_value_and_grad(
            lambda mm: sg.dsm_loss(mm, sde, batch, kl, eps=1e-3)
        )(m)
        updates, opt_state = optim.update(grads, opt_state, eqx.filter(m, eqx.is_array))
        return eqx.apply_updates(m, updates), opt_state, loss

    before = rel_error(model)
    key = getkey()
    for i in range(200):
        model, opt_state, _ = step(model, opt_state, jr.fold_in(key, i))
    after = rel_error(model)
    assert after < 0.5 * before and after < 0.4, (before, after)
