"""DDPM ancestral sampling, DDIM, beta schedules and the VP bridge."""

import math

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import sdegen as sg

from .helpers import eight_gaussians
from .test_pc import batch, check_mixture, iso_score


def test_schedules():
    b = sg.linear_beta_schedule(1000)
    assert b.shape == (1000,)
    np.testing.assert_allclose([b[0], b[-1]], [1e-4, 2e-2], rtol=1e-12)
    c = sg.cosine_beta_schedule(1000)
    f = lambda u: math.cos((u / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2
    ref = [min(1 - f(n + 1) / f(n), 0.999) for n in range(1000)]
    np.testing.assert_allclose(c, ref, rtol=1e-10)
    assert float(c[-1]) == pytest.approx(0.999)
    abar = jnp.cumprod(1 - c)
    np.testing.assert_allclose(abar[:-1], [f(n + 1) / f(0) for n in range(999)],
                               rtol=1e-8)  # fmt: skip


def test_vp_bridge():
    sde = sg.VPSDE()
    abar = sg.vp_alphas_cumprod(sde, 100)
    t = (jnp.arange(100) + 1) / 100
    np.testing.assert_allclose(abar, jax.vmap(sde.alpha)(t) ** 2, rtol=1e-12)
    np.testing.assert_allclose(jnp.cumprod(1 - sg.vp_betas(sde, 100)), abar, rtol=1e-10)
    score = lambda t, x: -x * (1 + t)
    eps = sg.vp_eps_model(score, sde, 100)
    x = jnp.array([0.5, -1.0])
    np.testing.assert_allclose(eps(jnp.asarray(49), x), -sde.sigma(0.5) * score(0.5, x),
                               rtol=1e-12)  # fmt: skip
    with pytest.raises(ValueError, match="variance-preserving"):
        sg.vp_alphas_cumprod(sg.SubVPSDE(), 100)


def test_ddim_eta1_full_schedule_is_ddpm_beta_tilde():
    """DDIM with eta = 1 on all N steps is DDPM with the posterior variance, and both
    draw the same noise for the same key."""
    betas = sg.linear_beta_schedule(50, 1e-3, 0.2)
    eps_model = lambda n, x: jnp.tanh(x) * (n + 1) / 50
    for key in jr.split(jr.key(0), 3):
        a = sg.ddpm_sample(key, eps_model, betas, (3,), variance="beta_tilde")
        b = sg.ddim_sample(key, eps_model, jnp.cumprod(1 - betas), (3,), num_steps=50, eta=1.0)
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-10)


def test_ddim_deterministic_and_matches_sample_ode():
    """DDIM (eta = 0) with the VP bridge discretises the probability-flow ODE: with
    c = 1 its last update is Tweedie's denoiser at t = T/N, so it agrees with
    sample_ode(eps=T/N, denoise=True) to O(1/N)."""
    gmm, sde = eight_gaussians(), sg.VPSDE()
    score = iso_score(gmm, sde)
    n_steps = 1000
    eps_model = sg.vp_eps_model(score, sde, n_steps)
    abar = sg.vp_alphas_cumprod(sde, n_steps)
    z = jr.normal(jr.key(0), (64, 2))
    ddim = jax.jit(jax.vmap(lambda k, z: sg.ddim_sample(
        k, eps_model, abar, (2,), num_steps=n_steps, x_init=z)))  # fmt: skip
    x1 = ddim(jr.split(jr.key(1), 64), z)
    x2 = ddim(jr.split(jr.key(2), 64), z)
    np.testing.assert_array_equal(x1, x2)
    ode = jax.vmap(lambda z: sg.sample_ode(jr.key(0), sde, score, (2,), eps=1 / n_steps,
                                           rtol=1e-8, atol=1e-8, x_init=z,
                                           denoise=True))(z)  # fmt: skip
    err = float(jnp.max(jnp.abs(x1 - ode)))
    assert err < 0.05, err


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["ddpm_beta", "ddpm_beta_tilde", "ddim_eta1"])
def test_discrete_samplers_reproduce_mixture(sampler):
    gmm, sde = eight_gaussians(), sg.VPSDE()
    n = 500
    eps_model = sg.vp_eps_model(iso_score(gmm, sde), sde, n)
    if sampler == "ddim_eta1":
        abar = sg.vp_alphas_cumprod(sde, n)
        fn = lambda k: sg.ddim_sample(k, eps_model, abar, (2,), num_steps=n, eta=1.0)
    else:
        var = sampler.removeprefix("ddpm_")
        betas = sg.vp_betas(sde, n)
        fn = lambda k: sg.ddpm_sample(k, eps_model, betas, (2,), variance=var)
    check_mixture(batch(fn), gmm)


def test_trajectories():
    betas = sg.linear_beta_schedule(20, 1e-3, 0.3)
    eps_model = lambda n, x: 0.1 * x
    x, traj = sg.ddpm_sample(jr.key(0), eps_model, betas, (2,), return_trajectory=True)
    assert traj.shape == (21, 2)
    np.testing.assert_array_equal(traj[-1], x)
    x, traj = sg.ddim_sample(jr.key(0), eps_model, jnp.cumprod(1 - betas), (2,), num_steps=5,
                             return_trajectory=True)  # fmt: skip
    assert traj.shape == (6, 2)
    np.testing.assert_array_equal(traj[-1], x)


def test_discrete_errors():
    betas = sg.linear_beta_schedule(10)
    abar = jnp.cumprod(1 - betas)
    m = lambda n, x: x
    key = jr.key(0)
    with pytest.raises(ValueError, match="`betas` must all lie in"):
        sg.ddpm_sample(key, m, jnp.array([0.1, 1.0]), (2,))
    with pytest.raises(ValueError, match="Unknown variance 'large' for `variance`"):
        sg.ddpm_sample(key, m, betas, (2,), variance="large")
    with pytest.raises(ValueError, match="strictly decreasing"):
        sg.ddim_sample(key, m, abar[::-1], (2,))
    with pytest.raises(ValueError, match="`alphas_cumprod` must all lie in"):
        sg.ddim_sample(key, m, jnp.array([1.2, 0.5]), (2,))
    with pytest.raises(ValueError, match="at most len"):
        sg.ddim_sample(key, m, abar, (2,), num_steps=11)
    with pytest.raises(ValueError, match="`eta` must be finite and >= 0"):
        sg.ddim_sample(key, m, abar, (2,), num_steps=5, eta=-0.1)
    with pytest.raises(ValueError, match="`x_init` must have shape"):
        sg.ddim_sample(key, m, abar, (2,), num_steps=5, x_init=jnp.zeros(3))
    with pytest.raises(ValueError, match="non-finite"):
        sg.ddpm_sample(key, m, betas, (2,), x_init=jnp.array([jnp.inf, 0.0]))
    with pytest.raises(ValueError, match="`beta_end` must lie in"):
        sg.linear_beta_schedule(10, 1e-4, 1.5)
