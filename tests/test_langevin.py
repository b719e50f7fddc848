"""Annealed Langevin dynamics (NCSN) and the sigma ladder."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import sdegen as sg

from .helpers import eight_gaussians
from .test_pc import batch, check_mixture


class IsoNoiseConditionalScore(eqx.Module):
    """Exact score of (isotropic mixture) * N(0, sigma^2 I), a cheap closed form of
    `GaussianMixture.noise_conditional_score()` (checked against it below)."""

    means: jax.Array
    var0: float
    logw: jax.Array

    def __call__(self, sigma, x):
        v = self.var0 + sigma**2
        d = self.means - x[None, :]
        r = jax.nn.softmax(self.logw - jnp.sum(d**2, -1) / (2 * v))
        return (r @ d) / v


def iso_nc(gmm):
    return IsoNoiseConditionalScore(gmm.means, float(gmm.covs[0, 0, 0]),
                                    jnp.log(gmm.weights))  # fmt: skip


def two_modes():
    """Far-apart unequal modes: weights 0.8 / 0.2 at (-4, 0) and (4, 0), std 0.5."""
    return sg.data.GaussianMixture(
        jnp.array([[-4.0, 0.0], [4.0, 0.0]]),
        jnp.tile(0.25 * jnp.eye(2), (2, 1, 1)),
        jnp.array([0.8, 0.2]),
    )


def test_iso_nc_is_exact():
    gmm = two_modes()
    xs = 3 * jr.normal(jr.key(0), (5, 2))
    exact, fast = gmm.noise_conditional_score(), iso_nc(gmm)
    for s in (0.01, 1.0, 10.0):
        np.testing.assert_allclose(jax.vmap(lambda x: fast(s, x))(xs),
                                   jax.vmap(lambda x: exact(s, x))(xs),
                                   rtol=1e-10, atol=1e-12)  # fmt: skip


def test_sigma_ladder():
    s = sg.sigma_ladder(5, 0.01, 100.0)
    np.testing.assert_allclose(s, [100.0, 10.0, 1.0, 0.1, 0.01], rtol=1e-12)
    np.testing.assert_allclose(sg.sigma_ladder(1, 0.01, 3.0), [3.0])
    data = jr.normal(jr.key(0), (50, 3))
    a = np.asarray(data)
    dmax = np.sqrt(((a[:, None] - a[None]) ** 2).sum(-1)).max()
    np.testing.assert_allclose(sg.sigma_ladder(4, 0.1, data=data)[0], dmax, rtol=1e-12)
    with pytest.raises(ValueError, match="exactly one of `sigma_max` and `data`"):
        sg.sigma_ladder(4, 0.1)
    with pytest.raises(ValueError, match="greater than `sigma_min`"):
        sg.sigma_ladder(4, 1.0, 0.5)


def test_annealing_recovers_weights_plain_langevin_does_not():
    """Song & Ermon 2019, §3.2.2 / Fig. 3: from a wide uniform start, plain Langevin
    with the (near-)clean score stays in whichever mode is nearest, so it keeps the
    start's 50/50 split; annealing over sigma from the data's diameter recovers the
    true 0.8 / 0.2 weights. n = 1000: MC std of a fraction is 0.013, tolerance 0.05."""
    gmm = two_modes()
    score = iso_nc(gmm)
    sigmas = sg.sigma_ladder(10, 0.05, data=gmm.sample(jr.key(0), 500))
    x_init = jr.uniform(jr.key(1), (1000, 2), minval=-8.0, maxval=8.0)

    def run(sigmas, steps, lr):
        return jax.jit(jax.vmap(lambda k, x0: sg.annealed_langevin(
            k, score, sigmas, (2,), steps_per_level=steps, step_lr=lr, x_init=x0)))(
            jr.split(jr.key(2), 1000), x_init)  # fmt: skip

    frac_annealed = sg.metrics.component_fractions(gmm, run(sigmas, 100, 2.5e-4))
    # plain Langevin at the smallest level, with a step that equilibrates each mode
    # (alpha / (2 var) = 0.1 per step, 1000 steps): the modes never exchange mass.
    x_plain = run(sigmas[-1:], 1000, 0.05)
    frac_plain = sg.metrics.component_fractions(gmm, x_plain)
    assert abs(float(jnp.std(x_plain[:, 1])) - 0.5) < 0.05  # it did equilibrate
    assert abs(float(frac_annealed[0]) - 0.8) < 0.05
    assert abs(float(frac_plain[0]) - 0.5) < 0.06
    assert abs(float(frac_plain[0]) - 0.8) > 0.2


@pytest.mark.slow
def test_annealed_langevin_reproduces_mixture():
    gmm = eight_gaussians()
    sigmas = sg.sigma_ladder(10, 0.01, 10.0)
    score = iso_nc(gmm)
    x = batch(lambda k: sg.annealed_langevin(k, score, sigmas, (2,), steps_per_level=100, step_lr=1e-5,
                                             denoise=True))  # fmt: skip
    check_mixture(x, gmm)


def test_trajectory_and_denoise():
    gmm = two_modes()
    score = iso_nc(gmm)
    sigmas = jnp.array([2.0, 1.0, 0.5])
    x, traj = sg.annealed_langevin(jr.key(0), score, sigmas, (2,), steps_per_level=4, step_lr=1e-2,
                                   return_trajectory=True)  # fmt: skip
    assert traj.shape == (4, 2)  # one state per level, x_init first
    np.testing.assert_array_equal(traj[-1], x)
    xd = sg.annealed_langevin(jr.key(0), score, sigmas, (2,), steps_per_level=4, step_lr=1e-2, denoise=True)
    np.testing.assert_allclose(xd, x + 0.25 * score(0.5, x), rtol=1e-12)


def test_langevin_errors():
    score = iso_nc(two_modes())
    key = jr.key(0)
    with pytest.raises(ValueError, match="strictly decreasing"):
        sg.annealed_langevin(key, score, jnp.array([0.1, 1.0]), (2,))
    with pytest.raises(ValueError, match="finite and > 0"):
        sg.annealed_langevin(key, score, jnp.array([1.0, -0.1]), (2,))
    with pytest.raises(ValueError, match="`steps_per_level` must be a positive int"):
        sg.annealed_langevin(key, score, jnp.array([1.0]), (2,), steps_per_level=0)
    with pytest.raises(ValueError, match="`step_lr` must be finite and > 0"):
        sg.annealed_langevin(key, score, jnp.array([1.0]), (2,), step_lr=0.0)
    with pytest.raises(ValueError, match="`x_init` must have shape"):
        sg.annealed_langevin(key, score, jnp.array([1.0]), (2,), x_init=jnp.zeros(1))
