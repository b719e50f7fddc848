r"""Gaussian mixtures: data with exact scores and densities at every time $t$.

Under a linear SDE with marginal kernel $\mathcal{N}(\alpha(t) x_0, \sigma(t)^2 I)$ a
mixture $\sum_k w_k \mathcal{N}(\mu_k, \Sigma_k)$ stays a mixture,

$$p_t = \sum_k w_k\,\mathcal{N}\big(\alpha(t)\mu_k,\ \alpha(t)^2\Sigma_k + \sigma(t)^2 I\big),$$

so scores, densities and posteriors are available in closed form for testing.
"""

import functools
import math

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.random as jr
import jax.scipy as jsp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .._core._checks import as_float_array, check_time
from .._core._custom_types import KeyArray, RealScalarLike, Scalar
from .._core._misc import is_concrete
from .._processes._sde import AbstractSDE


def _validate(means, covs, weights) -> None:
    if means.ndim != 2:
        raise ValueError(f"`means` must have shape (K, d), got shape {means.shape}.")
    k, d = means.shape
    if covs.shape != (k, d, d):
        raise ValueError(
            f"`covs` must have shape (K, d, d) = {(k, d, d)} to match `means`, got "
            f"shape {covs.shape}."
        )
    if weights.shape != (k,):
        raise ValueError(
            f"`weights` must have shape (K,) = {(k,)} to match `means`, got shape "
            f"{weights.shape}."
        )
    if not all(is_concrete(a) for a in (means, covs, weights)):
        return
    m, c, w = (np.asarray(a, dtype=np.float64) for a in (means, covs, weights))
    for name, a in (("means", m), ("covs", c), ("weights", w)):
        if not np.all(np.isfinite(a)):
            raise ValueError(f"`{name}` contains non-finite values.")
    if np.any(w <= 0):
        raise ValueError(f"`weights` must all be positive, got {w.tolist()}.")
    if abs(w.sum() - 1.0) > 1e-5:
        raise ValueError(f"`weights` must sum to 1, got sum {w.sum():.8g}.")
    if not np.allclose(c, np.swapaxes(c, -1, -2), rtol=1e-6, atol=1e-8):
        raise ValueError("`covs` must be symmetric.")
    eig = np.linalg.eigvalsh(c)
    if np.any(eig <= 0):
        bad = int(np.argmin(eig.min(axis=-1)))
        raise ValueError(
            f"`covs` must be positive definite; component {bad} has smallest "
            f"eigenvalue {eig[bad].min():.3g}."
        )


_LOG_2PI = math.log(2 * math.pi)


class GaussianMixture(eqx.Module):
    r"""A mixture $p(x) = \sum_{k=1}^K w_k\,\mathcal{N}(x;\ \mu_k, \Sigma_k)$ in
    $\mathbb{R}^d$ with full covariances.

    Used as data with known answers: its score and density under any
    [`sdegen.AbstractSDE`][] are exact at every $t$ (see
    [`sdegen.data.GaussianMixture.score`][]).
    """

    means: Float[Array, "K d"]
    covs: Float[Array, "K d d"]
    weights: Float[Array, " K"]

    def __init__(
        self,
        means: Float[ArrayLike, "K d"],
        covs: Float[ArrayLike, "K d d"],
        weights: Float[ArrayLike, " K"],
    ):
        """**Arguments:**

        - `means`: component means, shape `(K, d)`.
        - `covs`: full symmetric positive-definite covariances, shape `(K, d, d)`.
        - `weights`: positive mixture weights summing to 1, shape `(K,)`.

        **Raises:** `ValueError` naming the argument when shapes disagree, weights are
        not positive or do not sum to 1, or a covariance is not symmetric positive
        definite.
        """
        means = as_float_array(means, "means")
        covs = as_float_array(covs, "covs")
        weights = as_float_array(weights, "weights")
        _validate(means, covs, weights)
        dtype = jnp.result_type(means, covs, weights)
        self.means = means.astype(dtype)
        self.covs = covs.astype(dtype)
        self.weights = weights.astype(dtype)

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def _check_x(self, x) -> Array:
        x = jnp.asarray(x)
        if x.shape != (self.dim,):
            raise ValueError(
                f"`x` must be one point of shape ({self.dim},), got shape {x.shape}; "
                "use jax.vmap for a batch."
            )
        return x

    def sample(self, key: KeyArray, n: int) -> Float[Array, "n d"]:
        r"""Draw `n` points: a component $k \sim \mathrm{Cat}(w)$, then
        $\mu_k + L_k z$ with $L_k L_k^\top = \Sigma_k$, $z \sim \mathcal{N}(0, I)$."""
        if int(n) != n or n <= 0:
            raise ValueError(f"`n` must be a positive int, got {n!r}.")
        return _sample(self.means, self.covs, self.weights, key, int(n))

    def component_log_probs(self, x: Float[ArrayLike, " d"]) -> Float[Array, " K"]:
        r"""$\log w_k + \log\mathcal{N}(x; \mu_k, \Sigma_k)$ for each component."""
        x = self._check_x(x).astype(self.means.dtype)
        return _components(self.means, self.covs, self.weights, x)[0]

    def log_prob(self, x: Float[ArrayLike, " d"]) -> Scalar:
        r"""$\log p(x) = \operatorname{logsumexp}_k\big(\log w_k +
        \log\mathcal{N}(x; \mu_k, \Sigma_k)\big)$ for one point `x` of shape `(d,)`."""
        return jax.nn.logsumexp(self.component_log_probs(x))

    def responsibilities(self, x: Float[ArrayLike, " d"]) -> Float[Array, " K"]:
        r"""Posterior component probabilities $p(k \mid x)$ for one point."""
        return jax.nn.softmax(self.component_log_probs(x))

    def marginal(self, sde: AbstractSDE, t: RealScalarLike) -> "GaussianMixture":
        r"""The mixture $p_t$ of $x_t$ under `sde`: means $\alpha(t)\mu_k$, covariances
        $\alpha(t)^2\Sigma_k + \sigma(t)^2 I$, same weights."""
        means, covs = _diffuse(sde, sde._t(t), self.means, self.covs)
        return GaussianMixture(means, covs, self.weights)

    def score(self, sde: AbstractSDE | None = None) -> "GaussianMixtureScore":
        r"""The exact score $\nabla_x \log p_t(x)$ of the mixture diffused by `sde`,
        as a callable `score(t, x)`; with `sde=None`, the score of $p$ itself
        (`score(t, x)` ignores `t`)."""
        return GaussianMixtureScore(self, sde)

    def noise_conditional_score(self) -> "NoiseConditionalScore":
        r"""The exact score of $p * \mathcal{N}(0, \sigma^2 I)$ as `score(sigma, x)`, the
        noise-conditional score of NCSN (Song & Ermon 2019)."""
        return NoiseConditionalScore(self)


# The helpers below are compiled once per shape (and SDE): called eagerly, e.g. on a
# batch through `jax.vmap`, they run as one program instead of op by op.


@functools.partial(jax.jit, static_argnums=4)
def _sample(means, covs, weights, key, n):
    kc, kz = jr.split(key)
    comp = jr.categorical(kc, jnp.log(weights), shape=(n,))
    chol = jnp.linalg.cholesky(covs)
    z = jr.normal(kz, (n, means.shape[-1]), means.dtype)
    return means[comp] + jnp.einsum("nij,nj->ni", chol[comp], z)


@eqx.filter_jit
def _diffuse(sde, t, means, covs):
    r"""Means $\alpha(t)\mu_k$ and covariances $\alpha(t)^2\Sigma_k + \sigma(t)^2 I$."""
    a, s = sde._alpha(t), sde._sigma(t)
    eye = jnp.eye(means.shape[-1], dtype=covs.dtype)
    return a * means, a**2 * covs + s**2 * eye[None]


@jax.jit
def _components(means, covs, weights, x):
    r"""Per component: $\log w_k + \log\mathcal{N}(x; \mu_k, \Sigma_k)$ and
    $\Sigma_k^{-1}(x - \mu_k)$.

    The precisions $\Sigma_k^{-1}$ come from Cholesky factors and depend on $t$ only,
    so under `jax.vmap` over points they are computed once, and each point costs a
    few small matrix-vector products."""
    chol = jnp.linalg.cholesky(covs)
    eye = jnp.eye(x.shape[-1], dtype=covs.dtype)
    prec = jax.vmap(lambda c: jsp.linalg.cho_solve((c, True), eye))(chol)
    half_logdet = jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
    diff = x[None, :] - means
    m = jnp.einsum("kij,kj->ki", prec, diff)
    d = x.shape[-1]
    logpdf = -0.5 * jnp.sum(diff * m, axis=-1) - half_logdet - 0.5 * d * _LOG_2PI
    return logpdf + jnp.log(weights), m


@jax.jit
def mixture_score(means, covs, weights, x):
    r"""$\nabla\log\sum_k w_k\mathcal{N}(x;\mu_k,\Sigma_k) =
    -\sum_k r_k(x)\,\Sigma_k^{-1}(x-\mu_k)$, with responsibilities $r_k(x)$."""
    logp, m = _components(means, covs, weights, x)
    return -(jax.nn.softmax(logp) @ m)


def _diffused_components(means, covs, weights, a, s, x):
    r"""`_components` of the diffused mixture $\sum_k w_k\,\mathcal{N}(a\mu_k,\
    a^2\Sigma_k + s^2 I)$ at `x`, without a factorisation per $(a, s)$.

    With $\Sigma_k = U_k\,\mathrm{diag}(\lambda_k)\,U_k^\top$ (one `eigh`, independent of
    $a$ and $s$), $a^2\Sigma_k + s^2 I = U_k\,\mathrm{diag}(a^2\lambda_k + s^2)\,
    U_k^\top$: the precision, the quadratic form and the log-determinant are a few
    matrix-vector products. Under `jax.vmap` over points *and* times (an adaptive
    solve, where every sample has its own $t$) nothing is factorised per sample, where
    a Cholesky factor of $a^2\Sigma_k + s^2 I$ would be computed for every sample at
    every stage.

    Derivatives: exact at every order in `x`, `a`, `s`, `means` and `weights`. The
    eigendecomposition is held constant (`eigh` has no derivative where eigenvalues
    repeat, as for isotropic components), and the derivative in `covs` enters through
    zero-valued first-order terms, $P \to P - P\,\Delta P$ and
    $\log\det \to \log\det + \operatorname{tr}(P\Delta)$ with $\Delta = a^2
    \operatorname{sym}(\Sigma - \bar\Sigma)$, $\bar\Sigma$ = `stop_gradient(covs)`:
    exact to first order in `covs`.
    """
    fixed = lax.stop_gradient(covs)
    lam, u = jnp.linalg.eigh(fixed)
    var = a**2 * jnp.maximum(lam, 0.0) + s**2  # (K, d): rounding can make lam < 0

    def precision(r):  # (a^2 Sigma_k + s^2 I)^{-1} r_k for every component k
        return jnp.einsum("kij,kj->ki", u, jnp.einsum("kji,kj->ki", u, r) / var)

    diff = x[None, :] - a * means
    m0 = precision(diff)
    # zero-valued: carries the derivative in `covs` (symmetrised, as the Cholesky
    # factorisation's derivative is, since only symmetric changes stay covariances)
    change = covs - fixed
    delta = 0.5 * a**2 * (change + jnp.swapaxes(change, -1, -2))
    dm = jnp.einsum("kij,kj->ki", delta, m0)
    m = m0 - precision(dm)
    quad = jnp.sum(diff * m0, axis=-1) - jnp.sum(m0 * dm, axis=-1)
    delta_diag = jnp.einsum("kji,kjl,kli->ki", u, delta, u)  # diag(U^T Delta U)
    logdet = jnp.sum(jnp.log(var), axis=-1) + jnp.sum(delta_diag / var, axis=-1)
    logpdf = -0.5 * quad - 0.5 * logdet - 0.5 * x.shape[-1] * _LOG_2PI
    return logpdf + jnp.log(weights), m


@jax.jit
def diffused_mixture_score(means, covs, weights, a, s, x):
    r"""The exact score of $\sum_k w_k\,\mathcal{N}(a\mu_k,\ a^2\Sigma_k + s^2 I)$
    at `x` (one point): $-\sum_k r_k(x)\,(a^2\Sigma_k + s^2 I)^{-1}(x - a\mu_k)$.
    See `_diffused_components`."""
    logp, m = _diffused_components(means, covs, weights, a, s, x)
    return -(jax.nn.softmax(logp) @ m)


class GaussianMixtureScore(eqx.Module):
    r"""Exact score $\nabla_x\log p_t(x)$ of a [`sdegen.data.GaussianMixture`][]
    diffused by an SDE; call as `score(t, x)` with one point `x` of shape `(d,)`.

    $p_t = \sum_k w_k\,\mathcal{N}(\alpha(t)\mu_k,\ \alpha(t)^2\Sigma_k +
    \sigma(t)^2 I)$ is evaluated through one eigendecomposition of each $\Sigma_k$, so
    a batch of points at different times (`jax.vmap` over an adaptive solve) costs
    matrix-vector products only. Derivatives are exact at every order in $t$, $x$ and
    the means and weights, and to first order in the covariances."""

    mixture: GaussianMixture
    sde: AbstractSDE | None

    def __call__(self, t: RealScalarLike, x: Float[ArrayLike, " d"]) -> Float[Array, " d"]:
        m = self.mixture
        x = m._check_x(x)
        if self.sde is None:
            out = mixture_score(m.means, m.covs, m.weights, x.astype(m.means.dtype))
        else:
            t = jnp.asarray(check_time(self.sde, t), m.covs.dtype)
            a, s = self.sde._alpha(t), self.sde._sigma(t)
            out = diffused_mixture_score(m.means, m.covs, m.weights, a, s,
                                         x.astype(m.means.dtype))  # fmt: skip
        return out.astype(jnp.result_type(x, out))


class NoiseConditionalScore(eqx.Module):
    r"""Exact $\nabla_x \log (p * \mathcal{N}(0, \sigma^2 I))(x)$ for a mixture $p$;
    call as `score(sigma, x)`."""

    mixture: GaussianMixture

    def __call__(
        self, sigma: RealScalarLike, x: Float[ArrayLike, " d"]
    ) -> Float[Array, " d"]:
        m = self.mixture
        x = m._check_x(x)
        one = jnp.ones((), m.covs.dtype)
        sigma = jnp.asarray(sigma, m.covs.dtype)
        out = diffused_mixture_score(m.means, m.covs, m.weights, one, sigma,
                                     x.astype(m.means.dtype))  # fmt: skip
        return out.astype(jnp.result_type(x, m.means))


def eight_gaussians(
    radius: float = 4.0, std: float = 0.3, dtype=None
) -> GaussianMixture:
    r"""The classic 2-D benchmark: 8 equal-weight isotropic Gaussians with std `std`
    on a circle of radius `radius`."""
    angles = np.arange(8) * (2 * np.pi / 8)
    means = radius * np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    covs = np.tile((std**2) * np.eye(2), (8, 1, 1))
    weights = np.full(8, 1 / 8)
    dtype = dtype or jnp.zeros(()).dtype
    return GaussianMixture(
        jnp.asarray(means, dtype), jnp.asarray(covs, dtype), jnp.asarray(weights, dtype)
    )
