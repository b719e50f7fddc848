r"""Conditional flow matching: the loss against a hand-written formula, its weighting
as a DSM weighting, SD3's logit-normal times, the minibatch couplings (exact OT against
scipy's assignment, the entropic plan's marginals) and a tiny training run."""

import math

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from scipy.stats import kstest, norm

import sdegen as sg
from sdegen._training._losses._couplings import ot_pairs, sb_pairs, sb_plan, sq_cost


W = jr.normal(jr.key(0), (2, 2))
BATCH = jr.normal(jr.key(1), (32, 2)) * 2 + 1


def score_model(t, x):
    """Any smooth score model of (t, x)."""
    return jnp.tanh(W @ x + t) - 0.5 * x


class VelocityModel:
    """A model with a `velocity` method, regressed on that output directly."""

    def __call__(self, t, x):
        raise AssertionError("cfm_loss must use `velocity`, not the score")

    def velocity(self, t, x):
        return jnp.sin(W @ x) + t


SDES = [sg.VPSDE(), sg.VESDE(sigma_min=0.01, sigma_max=5.0), sg.RectifiedFlow(T=2.0),
        sg.CosineInterpolant()]  # fmt: skip


def _draws(sde, key, n, shape, eps=1e-5):
    """The times and noises of example b: key b of `split(key, n)`, split into the
    time key and the noise key, as the DSM losses draw them."""
    keys = jr.split(key, n)
    kts, kzs = jnp.moveaxis(jax.vmap(jr.split)(keys), 1, 0)
    u = jax.vmap(lambda k: jr.uniform(k, (), jnp.float64))(kts)
    ts = eps + (sde.T - eps) * u
    zs = jax.vmap(lambda k: jr.normal(k, shape, jnp.float64))(kzs)
    return ts, zs


def _rates_fd(sde, t, h=1e-6):
    """alpha, alpha', sigma, sigma' with central differences (independent of jvp)."""
    a, s = sde.alpha(t), sde.sigma(t)
    lo, hi = max(t - h, 1e-9), min(t + h, sde.T)
    da = (sde.alpha(hi) - sde.alpha(lo)) / (hi - lo)
    ds = (sde.sigma(hi) - sde.sigma(lo)) / (hi - lo)
    return a, da, s, ds


@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
def test_cfm_loss_equals_hand_formula(sde):
    key = jr.key(3)
    ts, zs = _draws(sde, key, len(BATCH), (2,))
    want_v, want_s = [], []
    for t, z, x0 in zip(np.asarray(ts), zs, BATCH):
        a, da, s, ds = _rates_fd(sde, float(t))
        xt = a * x0 + s * z
        target = da * x0 + ds * z
        want_v.append(jnp.sum((VelocityModel().velocity(t, xt) - target) ** 2))
        # a score model: v = alpha' D + sigma' eps_hat, D = (x + s^2 score)/alpha
        sc = score_model(t, xt)
        v = da * (xt + s**2 * sc) / a + ds * (-s * sc)
        want_s.append(jnp.sum((v - target) ** 2))
    got_v = sg.cfm_loss(VelocityModel(), sde, BATCH, key)
    got_s = sg.cfm_loss(score_model, sde, BATCH, key)
    assert np.isclose(got_v, np.mean(want_v), rtol=1e-6)
    assert np.isclose(got_s, np.mean(want_s), rtol=1e-6)
    got_mean = sg.cfm_loss(VelocityModel(), sde, BATCH, key, reduction="mean")
    assert np.isclose(got_mean, np.mean(want_v) / 2, rtol=1e-6)


@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
def test_cfm_is_dsm_with_weighting_g4_over_4(sde):
    r"""||v_hat - v||^2 = (g^2/2)^2 ||s_hat + z/sigma||^2: cfm_loss of a score model
    equals dsm_loss with lambda = g^4/4 on the same draws, at random and fixed times."""
    key = jr.key(4)
    for kw in ({}, {"t": 0.3 * sde.T}, {"times": "logit_normal"}):
        cfm = sg.cfm_loss(score_model, sde, BATCH, key, **kw)
        dsm = sg.dsm_loss(score_model, sde, BATCH, key, weighting="cfm", **kw)
        assert np.isclose(cfm, dsm, rtol=1e-10), kw
    # the weighting itself: lambda(t) = g(t)^4 / 4 where g^2 is finite
    w = sg.CFMWeighting()
    for t in (0.01, 0.2, 0.5, 0.9):
        t = t * sde.T
        assert np.isclose(w(sde, t), sde.diffusion(t) ** 4 / 4, rtol=1e-8)


def test_cfm_weighting_on_the_straight_path_closed_form():
    r"""On RectifiedFlow: lambda/sigma^2 = 1/(T^2 (1 - tau)^2), tau = t/T."""
    sde = sg.RectifiedFlow(T=2.0)
    for t in (0.1, 0.7, 1.5, 1.99):
        tau = t / 2.0
        want = 1 / (4.0 * (1 - tau) ** 2)
        assert np.isclose(sg.CFMWeighting().dsm_factor(sde, jnp.asarray(t)), want,
                          rtol=1e-10)  # fmt: skip


def test_logit_normal_times_distribution():
    r"""logit(t/T) ~ N(m, s^2): a Kolmogorov-Smirnov test of 4000 draws (p > 1e-3 for
    the right law; the wrong location is rejected)."""
    sde = sg.RectifiedFlow(T=2.0)
    u = jr.uniform(jr.key(5), (4000,), jnp.float64)
    for m, s in ((0.0, 1.0), (0.5, 0.7)):
        tm = sg.LogitNormalTimes(m, s)
        ts, ws = jax.vmap(lambda v, tm=tm: tm.sample(sde, v, 1e-5))(u)
        assert np.all(ws == 1) and np.all((ts >= 1e-5) & (ts <= 2.0))
        logit = np.log(np.asarray(ts) / (2.0 - np.asarray(ts)))
        assert kstest(logit, norm(m, s).cdf).pvalue > 1e-3
        assert kstest(logit, norm(m + 0.2, s).cdf).pvalue < 1e-6
    with pytest.raises(ValueError, match="`s`"):
        sg.LogitNormalTimes(0.0, -1.0)
    # usable by every loss through the name table
    assert "logit_normal" in sg.TIME_SAMPLINGS
    assert np.isfinite(sg.dsm_loss(score_model, sg.VPSDE(), BATCH, jr.key(1),
                                   times="logit_normal"))  # fmt: skip


def test_ot_coupling_is_the_exact_assignment():
    x = jr.normal(jr.key(6), (12, 3)) + 1.5
    y = jr.normal(jr.key(7), (12, 3))
    cost = np.asarray(sq_cost(x, y))
    _, want = linear_sum_assignment(cost)
    for solver in ("scipy", "ott"):
        got = np.asarray(jax.jit(lambda a, b, s=solver: ot_pairs(a, b, solver=s))(x, y))
        assert np.array_equal(got, want), solver
    ident = np.trace(cost)
    assert cost[np.arange(12), want].sum() < 0.8 * ident  # transport cost reduced
    with pytest.raises(ValueError, match="`solver`"):
        ot_pairs(x, y, solver="nope")


def test_ot_coupling_inside_the_loss():
    """cfm_loss(coupling="ot") is the independent formula with each example's noise
    replaced by its optimal partner among the batch's prior samples sigma(T) z."""
    sde, key = sg.RectifiedFlow(), jr.key(8)
    ts, zs = _draws(sde, key, len(BATCH), (2,))
    _, perm = linear_sum_assignment(np.asarray(sq_cost(BATCH, zs)))
    zs = zs[perm]
    want = []
    for t, z, x0 in zip(ts, zs, BATCH):
        xt = (1 - t) * x0 + t * z
        want.append(jnp.sum((VelocityModel().velocity(t, xt) - (z - x0)) ** 2))
    loss = jax.jit(lambda b, k: sg.cfm_loss(VelocityModel(), sde, b, k, coupling="ot"))
    assert np.isclose(loss(BATCH, key), np.mean(want), rtol=1e-6)


def test_sb_plan_marginals_and_limit():
    x = jr.normal(jr.key(9), (10, 2)) * 2
    y = jr.normal(jr.key(10), (10, 2))
    p = np.asarray(sb_plan(x, y, 1.0))
    assert np.all(p >= 0)
    np.testing.assert_allclose(p.sum(0), 0.1, rtol=1e-2)
    np.testing.assert_allclose(p.sum(1), 0.1, rtol=1e-2)
    # small regularisation: the plan concentrates on the exact assignment
    _, perm = linear_sum_assignment(np.asarray(sq_cost(x, y)))
    sharp = np.asarray(sb_plan(x, y, 0.01))
    assert np.array_equal(sharp.argmax(1), perm)
    # pairs drawn from the plan follow it: frequencies within 5 standard errors
    n = 20000
    xs = jnp.tile(x, (n // 10, 1))
    i, j = sb_pairs(x, y, 1.0, jr.key(11))
    assert i.shape == j.shape == (10,)
    keys = jr.split(jr.key(12), 200)
    ij = jax.vmap(lambda k: jnp.stack(sb_pairs(x, y, 1.0, k)))(keys)  # (200, 2, 10)
    counts = np.zeros((10, 10))
    np.add.at(counts, (np.asarray(ij[:, 0]).ravel(), np.asarray(ij[:, 1]).ravel()), 1)
    freq, total = counts / counts.sum(), counts.sum()
    se = np.sqrt(p * (1 - p) / total)
    assert np.all(np.abs(freq - p) < 5 * se + 1e-3)
    del xs


def test_sb_loss_is_finite_and_differs_from_independent():
    sde, key = sg.RectifiedFlow(), jr.key(13)
    sb = jax.jit(lambda b, k: sg.cfm_loss(VelocityModel(), sde, b, k, coupling="sb",
                                          sigma_min=0.5))(BATCH, key)  # fmt: skip
    ind = sg.cfm_loss(VelocityModel(), sde, BATCH, key)
    assert np.isfinite(sb) and not np.isclose(sb, ind)


def test_cfm_errors_name_the_argument():
    sde = sg.RectifiedFlow()
    with pytest.raises(ValueError, match="`coupling`"):
        sg.cfm_loss(score_model, sde, BATCH, jr.key(0), coupling="emd")
    with pytest.raises(ValueError, match="`sigma_min`"):
        sg.cfm_loss(score_model, sde, BATCH, jr.key(0), coupling="sb", sigma_min=0.0)
    with pytest.raises(ValueError, match="`times`"):
        sg.cfm_loss(score_model, sde, BATCH, jr.key(0), times="logitnormal")
    with pytest.raises(ValueError, match="`t`"):
        sg.cfm_loss(score_model, sde, BATCH, jr.key(0), t=0.5, times="logit_normal")


def test_single_cfm_loss_matches_batch_of_one():
    sde, key = sg.CosineInterpolant(), jr.key(14)
    one = sg.single_cfm_loss(VelocityModel(), sde, BATCH[0], jr.split(key, 1)[0])
    assert np.isclose(one, sg.cfm_loss(VelocityModel(), sde, BATCH[:1], key), rtol=1e-12)


def test_tiny_cfm_training_reduces_the_loss():
    sde = sg.RectifiedFlow()
    data = np.asarray(sg.data.eight_gaussians().sample(jr.key(0), 512))
    model = sg.nn.VelocityParam(sg.nn.MLP(2, 32, 2, embed_dim=8, key=jr.key(1)), sde)
    cfg = sg.TrainConfig(num_steps=150, batch_size=64, lr=3e-3, warmup=10, log_every=50,
                         ckpt_every=None, seed=0)  # fmt: skip

    def loss_fn(m, b, k):
        return sg.cfm_loss(m, sde, b, k, coupling="ot", times="logit_normal")

    state, _ = sg.train(model, loss_fn, data, cfg, progress=False, ema_loss=False)
    losses = np.asarray(state.losses)
    assert math.isfinite(losses[-1])
    assert losses[-30:].mean() < 0.6 * losses[:10].mean()


def test_ot_pairs_inside_the_compiled_training_loop():
    """The host assignment (a `jax.pure_callback`) inside `sg.train`'s compiled loop
    over a chunk of steps sees each step's own batch: every step's pairing is the
    exact optimum of that step's cost matrix (scipy's, recomputed here), not a
    stale or reused permutation."""
    seen = []

    def record(x, y, perm):
        x, y, perm = map(np.asarray, (x, y, perm))
        cost = ((x[:, None] - y[None]) ** 2).sum(-1)
        rows, cols = linear_sum_assignment(cost)
        seen.append((cost[np.arange(len(x)), perm].sum(), cost[rows, cols].sum(),
                     x.copy()))  # fmt: skip

    def loss_fn(m, b, k):
        z = jr.normal(k, b.shape, b.dtype)
        perm = ot_pairs(b, z)
        jax.debug.callback(record, b, z, perm)
        return jnp.mean((m * (z[perm] - b)) ** 2)

    data = np.asarray(sg.data.eight_gaussians().sample(jr.key(0), 64))
    cfg = sg.TrainConfig(num_steps=4, batch_size=16, lr=1e-2, warmup=0, log_every=2,
                         ckpt_every=None, seed=0)  # fmt: skip
    sg.train(jnp.ones(()), loss_fn, data, cfg, progress=False, ema_loss=False)
    assert len(seen) == 4
    for got, best, _ in seen:
        assert np.isclose(got, best, rtol=1e-6)
    assert len({x.tobytes() for *_, x in seen}) == 4  # four different batches
