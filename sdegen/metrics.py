r"""Distances between sample sets, for testing samplers against known distributions.

- [`sdegen.metrics.mmd`][]: the (biased, V-statistic) squared maximum mean discrepancy
  with a sum of Gaussian kernels over several bandwidths.
- [`sdegen.metrics.sliced_wasserstein`][]: the sliced 2-Wasserstein distance, exact in
  1-D along random directions.
- [`sdegen.metrics.component_fractions`][]: how many samples fall in each mixture
  component (by highest responsibility), to check mixture weights.
"""

import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Float

from ._custom_types import KeyArray, Scalar


def _check_pair(x, y):
    x, y = jnp.asarray(x), jnp.asarray(y)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(
            "`x` and `y` must be sample sets of shapes (n, d) and (m, d) with the same d, "
            f"got {x.shape} and {y.shape}."
        )
    return x, y


def mmd(
    x: Float[ArrayLike, "n d"],
    y: Float[ArrayLike, "m d"],
    bandwidths: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0, 10.0),
) -> Scalar:
    r"""Squared maximum mean discrepancy
    $\mathrm{MMD}^2 = \overline{k(x, x')} + \overline{k(y, y')} - 2\,\overline{k(x, y)}$
    with $k(a, b) = \sum_h \exp(-\lVert a - b\rVert^2 / (2h^2))$ summed over
    `bandwidths` (a characteristic kernel, so the population value is 0 iff the
    distributions agree). Biased V-statistic; $O(nm)$ memory."""
    x, y = _check_pair(x, y)

    def k(a, b):
        d2 = jnp.sum((a[:, None, :] - b[None, :, :]) ** 2, axis=-1)
        return sum(jnp.exp(-d2 / (2 * h**2)) for h in bandwidths)

    return jnp.mean(k(x, x)) + jnp.mean(k(y, y)) - 2 * jnp.mean(k(x, y))


def sliced_wasserstein(
    key: KeyArray,
    x: Float[ArrayLike, "n d"],
    y: Float[ArrayLike, "n d"],
    num_projections: int = 256,
) -> Scalar:
    r"""Sliced 2-Wasserstein distance
    $\big(\mathbb{E}_{\theta \sim U(S^{d-1})} W_2^2(\theta^\top x, \theta^\top y)\big)^{1/2}$,
    with the 1-D distances computed exactly by sorting. `x` and `y` must hold the same
    number of points."""
    x, y = _check_pair(x, y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"`x` and `y` must have the same number of points, got {x.shape[0]} and "
            f"{y.shape[0]}."
        )
    theta = jr.normal(key, (num_projections, x.shape[1]), x.dtype)
    theta = theta / jnp.linalg.norm(theta, axis=-1, keepdims=True)
    px = jnp.sort(x @ theta.T, axis=0)
    py = jnp.sort(y @ theta.T, axis=0)
    return jnp.sqrt(jnp.mean((px - py) ** 2))


def component_fractions(mixture, x: Float[ArrayLike, "n d"]) -> Float[Array, " K"]:
    r"""Fraction of the points `x` assigned to each component of a
    [`sdegen.data.GaussianMixture`][] by highest responsibility $p(k \mid x)$."""
    x = jnp.asarray(x)
    comp = jnp.argmax(jax.vmap(mixture.component_log_probs)(x), axis=-1)
    counts = jnp.bincount(comp, length=mixture.num_components)
    return counts / x.shape[0]
