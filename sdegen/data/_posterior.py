r"""The exact posterior of a Gaussian-mixture prior under a linear Gaussian
observation $y = A x_0 + n$, $n \sim \mathcal{N}(0, s^2 I)$: again a Gaussian mixture,
and so is its diffused version $p_t(x \mid y)$, whose score is therefore exact — the
oracle for testing inpainting, colorization and inverse-problem samplers.
"""

import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .._core._checks import check_positive, check_time
from .._core._custom_types import KeyArray, RealScalarLike
from .._engine._projections import MatrixOp, as_operator, check_mask, check_obs
from .._processes._sde import AbstractSDE, check_sde
from ._gmm import GaussianMixture, diffused_mixture_score


class MixturePosterior(eqx.Module):
    r"""The posterior $p(x_0 \mid y) = \sum_k \tilde w_k\,\mathcal{N}(\tilde\mu_k,
    \tilde\Sigma_k)$ of a Gaussian-mixture prior under a linear Gaussian observation,
    with possibly singular covariances (a noiseless observation pins $A x_0 = y$).

    Diffused by an SDE it stays a mixture, $p_t(x \mid y) = \sum_k \tilde w_k\,
    \mathcal{N}(\alpha(t)\tilde\mu_k,\ \alpha(t)^2\tilde\Sigma_k + \sigma(t)^2 I)$,
    so [`sdegen.MixturePosterior.score`][] is the exact conditional score for $t > 0$.
    Build it with [`sdegen.mixture_posterior`][].
    """

    means: Float[Array, "K d"]
    covs: Float[Array, "K d d"]
    weights: Float[Array, " K"]

    def sample(self, key: KeyArray, n: int) -> Float[Array, "n d"]:
        r"""`n` exact posterior draws (a component, then $\tilde\mu_k + \tilde
        \Sigma_k^{1/2} z$ with the symmetric square root, valid for singular
        $\tilde\Sigma_k$)."""
        if int(n) != n or n <= 0:
            raise ValueError(f"`n` must be a positive int, got {n!r}.")
        kc, kz = jr.split(key)
        comp = jr.categorical(kc, jnp.log(self.weights), shape=(int(n),))
        evals, evecs = jnp.linalg.eigh(self.covs)
        root_evals = jnp.sqrt(jnp.maximum(evals, 0))
        roots = jnp.einsum("kij,kj,klj->kil", evecs, root_evals, evecs)
        z = jr.normal(kz, (int(n), self.means.shape[1]), self.means.dtype)
        return self.means[comp] + jnp.einsum("nij,nj->ni", roots[comp], z)

    def score(self, sde: AbstractSDE) -> "MixturePosteriorScore":
        r"""The exact score $\nabla_x \log p_t(x \mid y)$, as `score(t, x)`."""
        check_sde(sde)
        return MixturePosteriorScore(self, sde)

    def mixture(self) -> GaussianMixture:
        r"""As a [`sdegen.data.GaussianMixture`][] (only when every $\tilde\Sigma_k$ is
        positive definite, i.e. for a noisy observation)."""
        return GaussianMixture(self.means, self.covs, self.weights)


class MixturePosteriorScore(eqx.Module):
    r"""Exact $\nabla_x \log p_t(x \mid y)$ of a [`sdegen.MixturePosterior`][]."""

    posterior: MixturePosterior
    sde: AbstractSDE

    def __call__(
        self, t: RealScalarLike, x: Float[ArrayLike, " d"]
    ) -> Float[Array, " d"]:
        p = self.posterior
        x = jnp.asarray(x)
        t = check_time(self.sde, t)
        t = jnp.asarray(t, p.covs.dtype)
        a, s = self.sde._alpha(t), self.sde._sigma(t)
        out = diffused_mixture_score(p.means, p.covs, p.weights, a, s,
                                     x.astype(p.means.dtype))  # fmt: skip
        return out.astype(jnp.result_type(x, out))


def mixture_posterior(
    prior: GaussianMixture,
    y: Float[ArrayLike, " m"],
    A: Any = None,
    *,
    mask: Any = None,
    noise_std: RealScalarLike = 0.0,
) -> MixturePosterior:
    r"""The exact posterior of a Gaussian-mixture prior $\sum_k w_k\mathcal{N}(\mu_k,
    \Sigma_k)$ under $y = A x_0 + n$, $n \sim \mathcal{N}(0, s^2 I)$ (Bishop 2006,
    §2.3.3, per component):

    $$K_k = \Sigma_k A^\top (A\Sigma_k A^\top + s^2 I)^{-1},\quad
    \tilde\mu_k = \mu_k + K_k(y - A\mu_k),\quad \tilde\Sigma_k = \Sigma_k - K_k A
    \Sigma_k,$$

    $$\tilde w_k \propto w_k\,\mathcal{N}(y;\ A\mu_k,\ A\Sigma_k A^\top + s^2 I).$$

    The gain form holds for $s = 0$ too (then $\tilde\Sigma_k$ is singular).

    **Arguments:**

    - `prior`: a [`sdegen.data.GaussianMixture`][] in $\mathbb{R}^d$.
    - `y`: the observation, shape `(m,)`; with `mask`, shape `(d,)` (unobserved
      entries ignored).
    - `A`: an `(m, d)` matrix or a linear function of one point; or give `mask`.
    - `mask`: boolean (or 0/1) array of shape `(d,)`: inpainting, $A$ = the
      selection of the observed entries.
    - `noise_std`: $s \ge 0$.

    **Returns:** a [`sdegen.MixturePosterior`][].

    **Raises:** `ValueError` for inconsistent shapes, both or neither of `A` and
    `mask`, or a negative `noise_std`.
    """
    if not isinstance(prior, GaussianMixture):
        raise ValueError(
            "`prior` must be an sdegen.data.GaussianMixture, got "
            f"{type(prior).__name__}."
        )
    if (A is None) == (mask is None):
        raise ValueError("Give exactly one of `A` (a linear map) and `mask`.")
    noise_std = check_positive("noise_std", noise_std, allow_zero=True)
    y = check_obs(y, "y")
    d = prior.dim
    if mask is not None:
        m = np.asarray(check_mask(mask, (d,)))
        if y.shape != (d,):
            raise ValueError(f"`y` must have shape ({d},) like `mask`, got {y.shape}.")
        A = np.eye(d)[m]
        y = y[m]
    op, _ = as_operator(A, y, (d,), check_rank=float(noise_std) == 0.0)
    dtype = prior.means.dtype
    if isinstance(op, MatrixOp):
        mat = op.matrix.astype(dtype)
    else:
        mat = jax.jacfwd(op.fn)(jnp.zeros((d,), dtype)).reshape(-1, d)
        y = y.reshape(-1)
    y = y.astype(dtype)
    noise_cov = noise_std**2 * jnp.eye(mat.shape[0], dtype=dtype)

    def one(mu, cov):
        s_yy = mat @ cov @ mat.T + noise_cov
        cho = jax.scipy.linalg.cho_factor(s_yy)
        gain = jax.scipy.linalg.cho_solve(cho, mat @ cov).T
        r = y - mat @ mu
        mean = mu + gain @ r
        post = cov - gain @ mat @ cov
        post = 0.5 * (post + post.T)
        loglik = (
            -0.5 * r @ jax.scipy.linalg.cho_solve(cho, r)
            - jnp.sum(jnp.log(jnp.diagonal(cho[0])))
            - 0.5 * r.shape[0] * math.log(2 * math.pi)
        )
        return mean, post, loglik

    means, covs, loglik = jax.vmap(one)(prior.means, prior.covs)
    weights = jax.nn.softmax(jnp.log(prior.weights) + loglik)
    return MixturePosterior(means, covs, weights)
