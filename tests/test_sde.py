import math

import diffrax
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import sdegen as sg

from .helpers import SDES


T_GRID = np.array([0.0, 1e-4, 0.01, 0.3, 0.7, 1.0])


def test_vp_closed_forms():
    sde = sg.VPSDE(beta_min=0.1, beta_max=20.0)
    for t in T_GRID:
        B = 0.1 * t + 0.5 * t**2 * 19.9
        assert np.isclose(sde.beta(t), 0.1 + t * 19.9, rtol=1e-12)
        assert np.isclose(sde.alpha(t), math.exp(-0.5 * B), rtol=1e-12)
        assert np.isclose(sde.sigma(t), math.sqrt(1 - math.exp(-B)), rtol=1e-10, atol=0)
        assert np.isclose(sde.diffusion(t), math.sqrt(0.1 + t * 19.9), rtol=1e-12)
        x = jnp.array([1.0, -2.0])
        assert np.allclose(sde.drift(t, x), -0.5 * (0.1 + t * 19.9) * x, rtol=1e-12)
        mean, std = sde.marginal(t, x)
        assert np.allclose(mean, math.exp(-0.5 * B) * x, rtol=1e-12)
        assert np.isclose(std, math.sqrt(1 - math.exp(-B)), rtol=1e-10)


def test_subvp_closed_forms():
    sde = sg.SubVPSDE(beta_min=0.1, beta_max=20.0)
    for t in T_GRID:
        B = 0.1 * t + 0.5 * t**2 * 19.9
        assert np.isclose(sde.sigma(t), 1 - math.exp(-B), rtol=1e-10)
        assert np.isclose(sde.alpha(t), math.exp(-0.5 * B), rtol=1e-12)
        g2 = (0.1 + t * 19.9) * (1 - math.exp(-2 * B))
        assert np.isclose(sde.diffusion(t) ** 2, g2, rtol=1e-10)


def test_ve_closed_forms():
    sde = sg.VESDE(sigma_min=0.01, sigma_max=50.0)
    for t in T_GRID:
        s = 0.01 * (50.0 / 0.01) ** t
        assert np.isclose(sde.sigma(t), s, rtol=1e-12)
        assert np.isclose(sde.alpha(t), 1.0)
        assert np.isclose(sde.diffusion(t), s * math.sqrt(2 * math.log(5000.0)), rtol=1e-12)
        assert np.allclose(sde.drift(t, jnp.ones(3)), 0.0)
    assert sde.prior_std == pytest.approx(50.0)


@pytest.mark.parametrize("name", sorted(SDES))
def test_small_t_stability(name):
    """sigma(t) keeps full relative precision near t = 0 (expm1), in float32 too."""
    sde = SDES[name]()
    t = jnp.float32(1e-6)
    s = sde.sigma(t)
    assert s.dtype == jnp.float32
    if name == "vp":
        expected = math.sqrt(-math.expm1(-(0.1 * 1e-6 + 0.5 * 1e-12 * 19.9)))
        assert np.isclose(float(s), expected, rtol=1e-5)
    if name == "subvp":
        expected = -math.expm1(-(0.1 * 1e-6 + 0.5 * 1e-12 * 19.9))
        assert np.isclose(float(s), expected, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(SDES))
def test_drift_is_dlogalpha(name):
    """f(x, t) = (d log alpha / dt) x and g^2 = d sigma^2/dt - 2 (dlog alpha/dt) sigma^2
    (the Fokker–Planck consistency of a linear SDE with these marginals)."""
    sde = SDES[name]()
    x = jnp.array([0.3, -1.2])
    for t in [0.05, 0.4, 0.9]:
        dlog_alpha = jax.grad(lambda s: jnp.log(sde.alpha(s)))(t)
        assert np.allclose(sde.drift(t, x), dlog_alpha * x, rtol=1e-8, atol=1e-12)
        dsig2 = jax.grad(lambda s: sde.sigma(s) ** 2)(t)
        g2 = dsig2 - 2 * dlog_alpha * sde.sigma(t) ** 2
        assert np.isclose(sde.diffusion(t) ** 2, g2, rtol=1e-8)


@pytest.mark.parametrize("name", sorted(SDES))
def test_prior(name, getkey):
    sde = SDES[name]()
    z = sde.prior_sample(getkey(), (4, 5))
    assert z.shape == (4, 5)
    s = sde.prior_std
    expected = -0.5 * 20 * math.log(2 * math.pi * s**2) - 0.5 * float(jnp.sum(z**2)) / s**2
    assert np.isclose(sde.prior_logp(z), expected, rtol=1e-12)
    zs = jax.vmap(lambda k: sde.prior_sample(k, (2,)))(jr.split(getkey(), 20000))
    assert abs(float(jnp.std(zs)) / s - 1) < 0.02


@pytest.mark.parametrize("name", sorted(SDES))
def test_forward_sde_reproduces_marginal(name, getkey):
    """Simulating the forward SDE (Heun's method with diffrax's terms) gives the
    closed-form marginal p_t(x | x0) in mean and std (within Monte-Carlo error)."""
    sde = SDES[name]()
    x0 = jnp.array([1.5, -0.5])
    t1 = 0.6
    n = 4000
    # 100 Heun steps: for these linear SDEs the discretisation error of the mean and
    # std is O(dt^2) ~ 1e-5, far below the Monte-Carlo error (~1.6%). The Brownian
    # increments of the grid are exact in distribution.
    ts = jnp.linspace(0.0, t1, 101)

    @jax.jit
    @jax.vmap
    def simulate(key):
        bm = sg.GridBrownianPath(ts, (2,), key)
        terms = sg.forward_terms(sde, bm)
        return sg.fixed_solve(terms, diffrax.Heun(), ts, x0)[0]

    xs = np.asarray(simulate(jr.split(getkey(), n)))
    mean, std = sde.marginal(t1, x0)
    se = float(std) / math.sqrt(n)
    assert np.all(np.abs(np.mean(xs, 0) - mean) < 4 * se + 1e-3 * float(std))
    # VE counts data at t = 0 as already perturbed by sigma_min: the simulated spread
    # is sqrt(sigma(t)^2 - sigma(0)^2), which differs from sigma(t) by < 1e-4 here.
    assert np.all(np.abs(np.std(xs, 0) / float(std) - 1) < 0.04)


def test_invalid_parameters():
    with pytest.raises(ValueError, match="beta_max"):
        sg.VPSDE(beta_min=1.0, beta_max=0.5)
    with pytest.raises(ValueError, match="beta_min"):
        sg.SubVPSDE(beta_min=-0.1)
    with pytest.raises(ValueError, match="sigma_min"):
        sg.VESDE(sigma_min=0.0)
    with pytest.raises(ValueError, match="sigma_max"):
        sg.VESDE(sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError, match="T"):
        sg.VPSDE(T=0.0)
    with pytest.raises(ValueError, match="shape"):
        sg.VPSDE().prior_sample(jr.key(0), (2, -1))


def test_dtype_follows_input():
    sde = sg.VPSDE()
    x32 = jnp.ones(3, jnp.float32)
    assert sde.drift(jnp.float32(0.5), x32).dtype == jnp.float32
    assert sde.drift(0.5, jnp.ones(3)).dtype == jnp.float64


def test_edm_sde(getkey):
    sde = sg.EDMSDE(T=80.0)
    assert np.isclose(sde.sigma(0.5), 0.5) and np.isclose(sde.alpha(3.0), 1.0)
    assert np.isclose(sde.diffusion(2.0) ** 2, jax.grad(lambda t: sde.sigma(t) ** 2)(2.0))
    assert sde.prior_std == 80.0
    # sampling the 8-Gaussian mixture with its exact score: EDM's Heun sampler (fixed
    # steps) on EDM's grid (rho = 7) on the ODE. ("heun" with `ts` would be an adaptive
    # solve saving at `ts`: the same samples with 20x the evaluations.)
    gmm = sg.data.eight_gaussians()
    score = gmm.score(sde)
    ts = (80.0 ** (1 / 7) + jnp.linspace(0, 1, 40) * (0.002 ** (1 / 7) - 80.0 ** (1 / 7))) ** 7
    xs = jax.vmap(lambda k: sg.sample_ode(k, sde, score, (2,), "edm", ts=ts))(
        jr.split(getkey(), 1000)
    )
    assert float(sg.metrics.mmd(xs, gmm.sample(getkey(), 1000))) < 0.02


@pytest.mark.parametrize(
    "sde",
    [sg.VPSDE(), sg.SubVPSDE(beta_min=0.5, beta_max=7.0, T=2.0), sg.VESDE(), sg.EDMSDE(),
     sg.RectifiedFlow(T=2.0), sg.CosineInterpolant(), sg.VPSDE(beta_max=1e4)],
)  # fmt: skip
def test_alpha_at_T_in_python_floats_equals_alpha(sde):
    """The samplers ask whether alpha(T) = 0 while traced, from `_alpha_at_T` in Python
    floats (no XLA program): it must be the closed form's value."""
    from sdegen._processes._conversions import vanishes_at_T

    exact = float(sde._alpha(jnp.asarray(float(sde.T))))
    assert sde._alpha_at_T() == pytest.approx(exact, rel=1e-12, abs=1e-300)
    assert vanishes_at_T(sde) == (exact < 1e-300)


def test_a_subclass_that_redefines_alpha_is_evaluated():
    """`_alpha_at_T` is trusted only from the class that defines the `_alpha` in use."""
    from sdegen._processes._conversions import vanishes_at_T

    class Ends(sg.VPSDE):
        def _alpha(self, t):
            return jnp.where(t >= self.T, 0.0, super()._alpha(t))

    assert not vanishes_at_T(sg.VPSDE()) and vanishes_at_T(Ends())
