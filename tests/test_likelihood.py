"""Exact likelihood through the probability-flow ODE, against closed forms.

The ODE is solved from eps, so the reference density is that of the diffused mixture
p_eps (`GaussianMixture.marginal(sde, eps)`). Two errors separate `log_likelihood`
from it: the solver's (set by rtol/atol) and the prior mismatch at T,
log p_T(z) - log N(z; 0, s^2 I) at the latent z. The tests compute that mismatch
exactly for each point (the "floor") and check

- with the exact p_T as `prior_logp`: |error| below SOLVER_TOL (the floor removed);
- with the SDE's prior: |error| <= |floor| + SOLVER_TOL.

SOLVER_TOL = 5e-4 nats at rtol = atol = 1e-5 in float64 (measured errors are
3e-5 to 1.2e-4), and 1e-3 nats for VP in float32.
"""

import math

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.scipy as jsp
import numpy as np
import pytest

import sdegen as sg

from .helpers import SDES, eight_gaussians, mixture_3d


SOLVER_TOL = 5e-4
EPS = 1e-5
MIXTURES = {"8gauss": eight_gaussians, "3d": mixture_3d}


def _errors(sde, mixture, xs, **kwargs):
    score = mixture.score(sde)
    p_eps = mixture.marginal(sde, EPS)
    p_T = mixture.marginal(sde, sde.T)

    def one(x):
        lp, st = sg.log_likelihood(sde, score, x, eps=EPS, **kwargs)
        # the same solve with the exact p_T in place of the prior
        lp_exact_prior = p_T.log_prob(st.z) + st.delta_logp
        ref = p_eps.log_prob(x)
        floor = p_T.log_prob(st.z) - st.prior_logp
        return lp - ref, lp_exact_prior - ref, floor, lp, st

    return jax.vmap(one)(xs)


@pytest.mark.parametrize(
    "mix,sde_name",
    [
        pytest.param("8gauss", "vp", marks=pytest.mark.slow),  # float32 case below
        ("3d", "vp"),
        pytest.param("8gauss", "subvp", marks=pytest.mark.slow),
        pytest.param("3d", "subvp", marks=pytest.mark.slow),
        pytest.param("8gauss", "ve", marks=pytest.mark.slow),
        ("3d", "ve"),
    ],
)
def test_matches_analytic_density(mix, sde_name, getkey):
    mixture = MIXTURES[mix]()
    sde = SDES[sde_name]()
    xs = mixture.sample(getkey(), 4)
    err, err_exact_prior, floor, lp, st = _errors(sde, mixture, xs)
    assert lp.dtype == jnp.float64
    # the solver's own error, with the prior mismatch removed
    assert float(jnp.max(jnp.abs(err_exact_prior))) < SOLVER_TOL
    # with the SDE's prior the floor is the exact prior mismatch at T
    assert bool(jnp.all(jnp.abs(err) <= jnp.abs(floor) + SOLVER_TOL))
    # stats are consistent: logp = prior term + integral term
    np.testing.assert_allclose(lp, st.prior_logp + st.delta_logp, rtol=0, atol=1e-12)
    assert bool(jnp.all(st.nfe > 0))
    assert bool(jnp.all(st.num_steps >= st.num_accepted_steps))


def test_float32_vp(getkey):
    mixture = sg.data.eight_gaussians(dtype=jnp.float32)
    sde = sg.VPSDE()
    xs = mixture.sample(getkey(), 4)
    assert xs.dtype == jnp.float32
    err, err_exact_prior, floor, lp, _ = _errors(sde, mixture, xs)
    assert lp.dtype == jnp.float32
    assert float(jnp.max(jnp.abs(err_exact_prior))) < 1e-3
    assert bool(jnp.all(jnp.abs(err) <= jnp.abs(floor) + 1e-3))
    # the stated floor itself: the prior mismatch of VP on these points is < 1e-3 nats
    assert float(jnp.max(jnp.abs(floor))) < 1e-3


def test_tighter_tolerance_is_more_accurate(getkey):
    mixture = mixture_3d()
    sde = sg.VPSDE()
    x = mixture.sample(getkey(), 1)[0]
    p_T = mixture.marginal(sde, sde.T)
    ref = mixture.marginal(sde, EPS).log_prob(x)
    errs, nfes = [], []
    for tol in (1e-4, 1e-8):
        _, st = sg.log_likelihood(sde, mixture.score(sde), x, rtol=tol, atol=tol)
        lp = p_T.log_prob(st.z) + st.delta_logp  # exact p_T in place of the prior
        errs.append(abs(float(lp - ref)))
        nfes.append(int(st.nfe))
    assert errs[1] < 1e-6
    assert errs[1] < errs[0]
    assert nfes[1] > nfes[0]


@pytest.mark.parametrize(
    "solver", ["tsit5", pytest.param("heun", marks=pytest.mark.slow)]
)
def test_nfe_counts_every_evaluation(solver):
    mixture = eight_gaussians()
    sde = sg.VPSDE()
    inner = mixture.score(sde)
    calls = []

    def score(t, x):
        jax.debug.callback(lambda: calls.append(1))
        return inner(t, x)

    x = jnp.array([4.0, 0.1])
    _, st = sg.log_likelihood(sde, score, x, solver=solver, rtol=1e-4, atol=1e-4)
    jax.effects_barrier()
    assert int(st.nfe) == len(calls)


def test_hutchinson_orthogonal_full_rank_is_exact(getkey):
    mixture = mixture_3d()
    sde = sg.VPSDE()
    x = mixture.sample(getkey(), 1)[0]
    score = mixture.score(sde)
    exact, _ = sg.log_likelihood(sde, score, x, rtol=1e-8, atol=1e-8)
    est, st = sg.log_likelihood(
        sde, score, x, key=getkey(), rtol=1e-8, atol=1e-8, trace="hutchinson",
        probe="orthogonal", num_probes=3,
    )  # fmt: skip
    assert st.num_probes == 3
    assert abs(float(est - exact)) < 1e-6


@pytest.mark.parametrize(
    "probe", ["rademacher", pytest.param("gaussian", marks=pytest.mark.slow)]
)
def test_hutchinson_is_unbiased(probe, getkey):
    mixture = mixture_3d()
    sde = sg.VPSDE()
    x = jnp.array([0.5, 0.5, 0.5])  # between components: a non-diagonal Jacobian
    score = mixture.score(sde)
    exact, _ = sg.log_likelihood(sde, score, x)
    n = 256
    keys = jr.split(getkey(), n)
    one = lambda k: sg.log_likelihood(
        sde, score, x, key=k, trace="hutchinson", probe=probe
    )
    est, st = jax.vmap(one)(keys)
    spread = float(jnp.std(est))
    assert spread > 1e-3  # the estimator is random ...
    se = spread / math.sqrt(n)
    # ... and its mean matches the exact trace within 4 Monte-Carlo standard errors
    assert abs(float(jnp.mean(est) - exact)) < 4 * se


@pytest.mark.slow
def test_hutchinson_more_probes_less_spread(getkey):
    # averaging m probes inside one solve divides the variance by m; with 64 draws
    # the sample std is within ~20% of the truth, so m = 4 must give < 0.75 x
    mixture = mixture_3d()
    sde = sg.VPSDE()
    x = jnp.array([0.5, 0.5, 0.5])
    score = mixture.score(sde)
    keys = jr.split(getkey(), 64)

    def spread(m):
        est, _ = jax.vmap(
            lambda k: sg.log_likelihood(
                sde, score, x, key=k, trace="hutchinson", num_probes=m
            )
        )(keys)
        return float(jnp.std(est))

    assert spread(4) < 0.75 * spread(1)


class _TinyScore(eqx.Module):
    mlp: eqx.nn.MLP

    def __call__(self, t, x):
        return self.mlp(jnp.concatenate([x, jnp.reshape(t, (1,))]))


@pytest.mark.parametrize(
    "adjoint,rtol",
    [
        (diffrax.RecursiveCheckpointAdjoint(), 1e-5),
        pytest.param(diffrax.BacksolveAdjoint(), 1e-3, marks=pytest.mark.slow),
    ],
)
def test_gradient_matches_finite_differences(adjoint, rtol, getkey):
    model = _TinyScore(
        eqx.nn.MLP(3, 2, width_size=8, depth=1, activation=jnp.tanh, key=getkey())
    )
    sde = sg.VPSDE()
    xs = jr.normal(getkey(), (3, 2))

    @eqx.filter_jit
    def loss(m):
        lp = jax.vmap(
            lambda x: sg.log_likelihood(
                sde, m, x, rtol=1e-9, atol=1e-9, adjoint=adjoint
            )[0]
        )(xs)
        return jnp.mean(lp)

    grads = eqx.filter_jit(eqx.filter_grad(loss))(model)
    params, static = eqx.partition(model, eqx.is_array)
    direction = jax.tree_util.tree_map(
        lambda p: jr.normal(jr.key(1), p.shape, p.dtype), params
    )
    g_dir = sum(
        jnp.vdot(g, d)
        for g, d in zip(
            jax.tree_util.tree_leaves(eqx.filter(grads, eqx.is_array)),
            jax.tree_util.tree_leaves(direction),
        )
    )
    h = 1e-5
    shift = lambda s: eqx.combine(
        jax.tree_util.tree_map(lambda p, d: p + s * d, params, direction), static
    )
    fd = (loss(shift(h)) - loss(shift(-h))) / (2 * h)
    assert abs(float(fd)) > 1e-3
    np.testing.assert_allclose(float(g_dir), float(fd), rtol=rtol)


def test_batch_matches_per_sample_and_chunking(getkey):
    mixture = eight_gaussians()
    sde = sg.VPSDE()
    score = mixture.score(sde)
    xs = mixture.sample(getkey(), 7)
    lp, st = jax.vmap(lambda x: sg.log_likelihood(sde, score, x))(xs)
    lp_b, st_b = sg.log_likelihood_batch(sde, score, xs, batch_size=3)
    assert lp_b.shape == (7,) and st_b.nfe.shape == (7,)
    np.testing.assert_allclose(lp_b, lp, rtol=0, atol=1e-10)
    np.testing.assert_array_equal(st_b.nfe, st.nfe)


@pytest.mark.slow
def test_batch_hutchinson_independent_of_chunking(getkey):
    # Hutchinson probes come from fold_in(key, index): independent of the chunking
    mixture = eight_gaussians()
    sde = sg.VPSDE()
    score = mixture.score(sde)
    xs = mixture.sample(getkey(), 7)
    key = getkey()
    kw = dict(key=key, trace="hutchinson", num_probes=2)
    h3, _ = sg.log_likelihood_batch(sde, score, xs, batch_size=3, **kw)
    h7, _ = sg.log_likelihood_batch(sde, score, xs, batch_size=None, **kw)
    np.testing.assert_allclose(h3, h7, rtol=0, atol=1e-10)


def test_batched_shared_solve(getkey):
    mixture = mixture_3d()
    sde = sg.VPSDE()
    xs = mixture.sample(getkey(), 6)
    p_T = mixture.marginal(sde, sde.T)
    lp, st = sg.log_likelihood_batch(
        sde, mixture.score(sde), xs, per_sample_solves=False, prior_logp=p_T.log_prob
    )
    ref = jax.vmap(mixture.marginal(sde, EPS).log_prob)(xs)
    assert float(jnp.max(jnp.abs(lp - ref))) < SOLVER_TOL
    assert len(set(np.asarray(st.nfe).tolist())) == 1  # shared steps


def test_stats_mapping_interface(getkey):
    mixture = eight_gaussians()
    sde = sg.VPSDE()
    # under jax.jit, with the stats returned as a pytree
    lp, st = jax.jit(lambda x: sg.log_likelihood(sde, mixture.score(sde), x))(
        jnp.array([4.0, 0.0])
    )
    for name in ("nfe", "prior_logp", "delta_logp"):
        assert name in st
        np.testing.assert_array_equal(st[name], getattr(st, name))
    assert dict(st)["nfe"] is st.nfe
    assert st.num_probes == 0
    assert st.result == sg.RESULTS.successful
    np.testing.assert_allclose(lp, st.prior_logp + st.delta_logp, rtol=0, atol=1e-12)


def test_nice_errors():
    mixture = eight_gaussians()
    sde = sg.VPSDE()
    score = mixture.score(sde)
    x = jnp.array([1.0, 0.0])
    with pytest.raises(ValueError, match="`key` is required for trace='hutchinson'"):
        sg.log_likelihood(sde, score, x, trace="hutchinson")
    with pytest.raises(ValueError, match="`key` is required"):
        sg.log_likelihood_batch(sde, score, x[None], trace="hutchinson")
    with pytest.raises(ValueError, match="`trace` must be one of"):
        sg.log_likelihood(sde, score, x, trace="jacobian")
    with pytest.raises(ValueError, match="`probe` must be one of"):
        sg.log_likelihood(sde, score, x, key=jr.key(0), trace="hutchinson", probe="x")
    with pytest.raises(ValueError, match="`num_probes` must be at most"):
        sg.log_likelihood(sde, score, x, key=jr.key(0), trace="hutchinson",
                          probe="orthogonal", num_probes=3)  # fmt: skip
    with pytest.raises(ValueError, match="`eps` must satisfy"):
        sg.log_likelihood(sde, score, x, eps=0.0)
    with pytest.raises(ValueError, match="`rtol` must be finite and > 0"):
        sg.log_likelihood(sde, score, x, rtol=-1.0)
    with pytest.raises(ValueError, match="Unknown ODE solver"):
        sg.log_likelihood(sde, score, x, solver="euler_maruyama")
    with pytest.raises(ValueError, match="no error estimate"):
        sg.log_likelihood(sde, score, x, solver="euler")
    with pytest.raises(ValueError, match="`adjoint` must be a diffrax.AbstractAdjoint"):
        sg.log_likelihood(sde, score, x, adjoint="backsolve")
    with pytest.raises(ValueError, match="`x` contains non-finite"):
        sg.log_likelihood(sde, score, jnp.array([jnp.nan, 0.0]))
    with pytest.raises(ValueError, match="`batch_size` must be a positive int"):
        sg.log_likelihood_batch(sde, score, x[None], batch_size=0)
    with pytest.raises(ValueError, match="`data_range` must be"):
        sg.bits_per_dim(jnp.zeros(()), 2, data_range="pixels")
    with pytest.raises(ValueError, match="`num_dims` must be a positive int"):
        sg.bits_per_dim(jnp.zeros(()), 0)
    with pytest.raises(ValueError, match=r"`x` must lie in \{0, ..., 255\}"):
        sg.dequantize(jr.key(0), jnp.array([0, 256]))
    with pytest.raises(ValueError, match="`x` must be integer data"):
        sg.dequantize(jr.key(0), jnp.array([0.5]))


@pytest.mark.slow
def test_fixed_steps(getkey):
    mixture = eight_gaussians()
    sde = sg.VPSDE()
    x = mixture.sample(getkey(), 1)[0]
    p_T = mixture.marginal(sde, sde.T)
    ref = mixture.marginal(sde, EPS).log_prob(x)
    lp, st = sg.log_likelihood(sde, mixture.score(sde), x, solver="heun",
                               num_steps=400, prior_logp=p_T.log_prob)  # fmt: skip
    assert int(st.num_steps) == 400 and int(st.nfe) == 800
    assert abs(float(lp - ref)) < 1e-2


# ---------------------------------------------------------------- bits per dim


def _gauss_bin_mass(k, lo, a, mu, s):
    """Exact mass of N(mu, s^2) on the bin [lo + a k, lo + a (k + 1))."""
    cdf = lambda v: jsp.special.ndtr((v - mu) / s)
    return cdf(lo + a * (k + 1)) - cdf(lo + a * k)


@pytest.mark.parametrize("data_range,lo,a", [("minus_one_one", -1.0, 2 / 256),
                                             ("zero_one", 0.0, 1 / 256)])  # fmt: skip
def test_bits_per_dim_matches_discrete_mass(data_range, lo, a, getkey):
    # A Gaussian density on the rescaled data; its discrete model is the mass per bin.
    # With x at bin midpoints, log P(k) = log(a p(x)) + log(1 + a^2 p''/(24 p) + ...),
    # so the two bits/dim agree up to a^2/24 max|p''/p| / ln 2 (+ higher order).
    mu, s, d = lo + 128 * a + 0.1 * (a * 128), 0.3 * (a * 128), 3
    k = jr.randint(getkey(), (50, d), 60, 196)
    x_mid = lo + a * (k + 0.5)
    logp = jnp.sum(jsp.stats.norm.logpdf(x_mid, mu, s), axis=-1)
    bpd = sg.bits_per_dim(logp, d, data_range=data_range)
    mass = _gauss_bin_mass(k, lo, a, mu, s)
    bpd_mass = -jnp.sum(jnp.log(mass), axis=-1) / (d * math.log(2))
    curv = jnp.abs((x_mid - mu) ** 2 / s**4 - 1 / s**2)
    bound = 2 * a**2 / 24 * jnp.max(curv) / math.log(2)
    assert float(jnp.max(jnp.abs(bpd - bpd_mass))) < bound
    # the offsets of the official code: +7 for [-1, 1], +8 for [0, 1], 256 levels
    offset = 7.0 if data_range == "minus_one_one" else 8.0
    np.testing.assert_allclose(sg.bits_per_dim(jnp.zeros(()), 5, data_range=data_range),
                               offset, rtol=0, atol=1e-12)  # fmt: skip
    np.testing.assert_allclose(
        sg.bits_per_dim(jnp.zeros(()), 5, data_range=(lo, lo + 256 * a)), offset,
        rtol=0, atol=1e-12,
    )  # fmt: skip


def test_dequantize_range_and_distribution(getkey):
    k = jnp.arange(256, dtype=jnp.uint8)
    k = jnp.tile(k, 40)
    for rng, lo, hi in (("minus_one_one", -1.0, 1.0), ("zero_one", 0.0, 1.0)):
        x = sg.dequantize(getkey(), k, rng)
        assert x.dtype == jnp.float64 and x.shape == k.shape
        width = (hi - lo) / 256
        left = lo + k * width
        assert bool(jnp.all((x >= left) & (x < left + width)))
        # u = (x - left)/width ~ U[0, 1): mean 1/2 within 4 standard errors
        u = (x - left) / width
        assert abs(float(jnp.mean(u)) - 0.5) < 4 * math.sqrt(1 / 12 / u.size)


def test_bits_per_dim_of_quantised_gaussian(getkey):
    # Data: 8-bit quantisation of N(128, 20^2) per entry (in bin units), D = 2, scaled
    # to [-1, 1]. The model density is the exact Gaussian (one-component mixture,
    # exact score), evaluated by log_likelihood on dequantised data. The expected
    # bits/dim under the dequantised data q is analytic:
    # E_q[-log2 p_y(y)]
    #   = sum_k P(k) [log(2 pi s^2)/2 + ((k + 1/2 - m)^2 + 1/12)/(2 s^2)] / ln 2
    # per dimension (p_y: the Gaussian in bin units, m = 128, s = 20).
    d, n, m, s = 2, 256, 128.0, 20.0
    a = 2 / 256
    y_cont = m + s * jr.normal(getkey(), (n, d))
    k = jnp.clip(jnp.floor(y_cont), 0, 255).astype(jnp.uint8)
    x = sg.dequantize(getkey(), k, "minus_one_one")
    cov = (s * a) ** 2 * jnp.eye(d)[None]
    mixture = sg.data.GaussianMixture(jnp.zeros((1, d)), cov, jnp.ones(1))
    sde = sg.VPSDE()
    logp, _ = sg.log_likelihood_batch(sde, mixture.score(sde), x)
    bpd = sg.bits_per_dim(logp, d)
    # pointwise: the ODE's bits/dim equal those of the analytic density
    p_eps = mixture.marginal(sde, EPS)
    bpd_exact = sg.bits_per_dim(jax.vmap(p_eps.log_prob)(x), d)
    assert float(jnp.max(jnp.abs(bpd - bpd_exact))) < 1e-3
    # on average: the analytic expected value, within 4 Monte-Carlo standard errors
    kk = jnp.arange(256.0)
    mass = _gauss_bin_mass(kk, 0.0, 1.0, m, s)
    second = (kk + 0.5 - m) ** 2 + 1 / 12
    expected = jnp.sum(
        mass * (0.5 * jnp.log(2 * jnp.pi * s**2) + second / (2 * s**2))
    ) / math.log(2)
    se = float(jnp.std(bpd)) / math.sqrt(n)
    assert abs(float(jnp.mean(bpd) - expected)) < 4 * se
    # and that value is the Gaussian's differential entropy in bits plus the
    # quantisation excess: the grouped variance exceeds s^2 by 1/12 (Sheppard) and u
    # adds 1/12, so E_q[(y - m)^2] = s^2 + 1/6 and the excess is 1/(12 s^2 ln 2)
    entropy = 0.5 * math.log2(2 * math.pi * math.e * s**2)
    excess = 1 / (12 * s**2 * math.log(2))
    assert abs(float(expected) - entropy - excess) < 1e-6
