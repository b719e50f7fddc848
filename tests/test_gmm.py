"""The exact scores of Gaussian mixtures against their definitions: the gradient of the
log-density of the diffused mixture (Cholesky factors, autodiff), at every time, with
derivatives in every argument, isotropic components (repeated eigenvalues) included."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import sdegen as sg
from sdegen.data._gmm import _diffuse, mixture_score

from .helpers import SDES, eight_gaussians, mixture_3d


TIMES = jnp.array([1e-3, 0.1, 0.5, 1.0])
MIXTURES = {"8g": eight_gaussians, "3d": mixture_3d}


def _reference_score(sde, mixture, t, x):
    """grad log p_t(x), p_t = marginal(sde, t), through Cholesky factors."""
    return jax.grad(lambda y: sg.data.GaussianMixture(
        *_diffuse(sde, t, mixture.means, mixture.covs), mixture.weights).log_prob(y))(x)  # fmt: skip


@pytest.mark.parametrize("which", sorted(MIXTURES))
def test_score_is_grad_log_marginal(which, getkey):
    """At every time, under the VP SDE (alpha < 1) and the VE SDE (alpha = 1, sigma up
    to 20), in one compiled program."""
    mixture = MIXTURES[which]()
    sdes = (SDES["vp"](), SDES["ve"]())
    xs = 3.0 * jr.normal(getkey(), (TIMES.shape[0], 5, mixture.dim))

    @jax.jit
    def exact_and_reference(ts, xs):
        per_t = lambda f: jax.vmap(lambda t, x: jax.vmap(lambda y: f(t, y))(x))
        return [(per_t(mixture.score(sde))(ts, xs),
                 per_t(lambda t, y: _reference_score(sde, mixture, t, y))(ts, xs))
                for sde in sdes]  # fmt: skip

    for exact, ref in exact_and_reference(TIMES, xs):
        np.testing.assert_allclose(exact, ref, rtol=1e-9, atol=1e-9)
    # one point at a time, outside vmap: the same numbers
    one = mixture.score(sdes[1])(TIMES[2], xs[2, 0])
    np.testing.assert_allclose(one, exact[2, 0], rtol=1e-12, atol=1e-12)


def test_noise_conditional_score_is_grad_log_convolution(getkey):
    mixture = mixture_3d()
    xs = 2.0 * jr.normal(getkey(), (6, 3))
    sigmas = jnp.array([0.01, 0.1, 0.5, 1.0, 3.0, 10.0])
    nc = mixture.noise_conditional_score()

    def ref(sigma, x):
        covs = mixture.covs + sigma**2 * jnp.eye(3)[None]
        return mixture_score(mixture.means, covs, mixture.weights, x)

    got, want = jax.jit(lambda s, x: (jax.vmap(nc)(s, x), jax.vmap(ref)(s, x)))(sigmas, xs)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("which", sorted(MIXTURES))
def test_derivatives_in_every_argument(which, getkey):
    """Gradients in the mixture's parameters, the time and the point, and the Jacobian
    in x (the divergence of the probability-flow ODE), against autodiff of the
    Cholesky reference. The 8 Gaussians are isotropic: eigh's derivative is undefined
    there, the score's is not."""
    sde, mixture = sg.VPSDE(), MIXTURES[which]()
    x = jr.normal(getkey(), (mixture.dim,))
    w = jr.normal(getkey(), (mixture.dim,))
    t = 0.3

    def exact(mix, t, x):
        return w @ sg.data.GaussianMixtureScore(mix, sde)(t, x)

    def ref(mix, t, x):
        means, covs = _diffuse(sde, t, mix.means, mix.covs)
        return w @ mixture_score(means, covs, mix.weights, x)

    @eqx.filter_jit
    def derivatives(f):
        grads = eqx.filter_grad(lambda m, t, x: f(m, t, x))(mixture, t, x)
        dt = jax.grad(f, argnums=1)(mixture, t, x)
        jac = jax.jacfwd(lambda y: jax.grad(f, argnums=2)(mixture, t, y))(x)
        return grads.means, grads.covs, grads.weights, dt, jac

    for got, want in zip(derivatives(exact), derivatives(ref), strict=True):
        assert np.all(np.isfinite(got))
        np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-10)


def test_singular_posterior_covariance_has_a_finite_score(getkey):
    """The posterior of a noiseless observation has a singular covariance; for t > 0
    the diffused one is not, and the score is finite (rounding can make an eigenvalue
    of the singular matrix slightly negative)."""
    prior = mixture_3d()
    mask = jnp.array([True, False, True])
    post = sg.mixture_posterior(prior, jnp.array([1.0, 0.0, 0.5]), mask=mask)
    score = post.score(sg.VPSDE())
    xs = jr.normal(getkey(), (4, 3))
    out = jax.jit(jax.vmap(score))(jnp.array([1e-3, 0.01, 0.5, 1.0]), xs)
    assert np.all(np.isfinite(out))
