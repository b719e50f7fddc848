r"""Two-dimensional toy distributions for quick experiments and tests.

Each sampler is `sampler(key, n) -> (n, 2)` in JAX's default floating dtype, and all
live in one table, [`sdegen.data.TOY_DATASETS`][], looked up by name with
[`sdegen.data.toy`][]. The shapes follow the FFJORD paper's toy sets (Grathwohl et al.
2019, "FFJORD: Free-form continuous dynamics for scalable reversible generative
models"), scaled so that the data fill roughly $[-4, 4]^2$ like
[`sdegen.data.eight_gaussians`][]. Only the eight-Gaussian mixture has an exact score;
the others are for eyeballing samples and for sample-based metrics.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float

from .._core._custom_types import KeyArray
from .._core._misc import default_float
from ._gmm import eight_gaussians as _eight_gaussians


def _check_n(n) -> int:
    if isinstance(n, bool) or int(n) != n or n <= 0:
        raise ValueError(f"`n` must be a positive int, got {n!r}.")
    return int(n)


def _check_noise(noise) -> float:
    noise = float(noise)
    if not (math.isfinite(noise) and noise >= 0):
        raise ValueError(f"`noise` must be finite and >= 0, got {noise}.")
    return noise


def two_moons(key: KeyArray, n: int, noise: float = 0.1) -> Float[Array, "n 2"]:
    r"""Two interleaved half circles (scikit-learn's `make_moons`), centred and scaled
    by 2: with $\theta \sim U(0, \pi)$, the upper moon is $(\cos\theta, \sin\theta)$,
    the lower $(1 - \cos\theta, \tfrac12 - \sin\theta)$, each with probability
    $\tfrac12$; then $x \mapsto 2(x - (\tfrac12, \tfrac14)) + \text{noise}\cdot z$ with
    $z \sim \mathcal{N}(0, I)$.

    **Arguments:** `key`; `n` points; `noise`, the standard deviation of the added
    Gaussian noise (after scaling).

    **Returns:** an array of shape `(n, 2)`.
    """
    n, noise = _check_n(n), _check_noise(noise)
    dtype = default_float()
    kt, kc, kz = jr.split(key, 3)
    theta = jr.uniform(kt, (n,), dtype, 0.0, math.pi)
    upper = jr.bernoulli(kc, 0.5, (n,))
    x = jnp.where(upper, jnp.cos(theta), 1 - jnp.cos(theta))
    y = jnp.where(upper, jnp.sin(theta), 0.5 - jnp.sin(theta))
    pts = 2 * (jnp.stack([x, y], axis=-1) - jnp.array([[0.5, 0.25]], dtype))
    return pts + noise * jr.normal(kz, (n, 2), dtype)


def swiss_roll(key: KeyArray, n: int, noise: float = 0.1) -> Float[Array, "n 2"]:
    r"""The 2-D Swiss roll: $s \sim U(0, 1)$, $\theta = \tfrac{3\pi}{2}(1 + 2s)$,
    $x = \tfrac{\theta}{3}(\cos\theta, \sin\theta) + \text{noise}\cdot z$.

    **Returns:** an array of shape `(n, 2)`, inside a disc of radius about 4.7.
    """
    n, noise = _check_n(n), _check_noise(noise)
    dtype = default_float()
    ks, kz = jr.split(key)
    theta = 1.5 * math.pi * (1 + 2 * jr.uniform(ks, (n,), dtype))
    pts = (theta / 3)[:, None] * jnp.stack([jnp.cos(theta), jnp.sin(theta)], axis=-1)
    return pts + noise * jr.normal(kz, (n, 2), dtype)


def checkerboard(key: KeyArray, n: int) -> Float[Array, "n 2"]:
    r"""Uniform on the dark squares of a 4×4 checkerboard covering $[-4, 4]^2$ (squares
    of side 2; the square $[0, 2)^2$ is dark).

    **Returns:** an array of shape `(n, 2)`.
    """
    n = _check_n(n)
    dtype = default_float()
    k1, k2, k3 = jr.split(key, 3)
    x1 = jr.uniform(k1, (n,), dtype, -2.0, 2.0)
    x2 = jr.uniform(k2, (n,), dtype) - 2.0 * jr.randint(k3, (n,), 0, 2).astype(dtype)
    x2 = x2 + jnp.mod(jnp.floor(x1), 2)
    return 2 * jnp.stack([x1, x2], axis=-1)


def rings(key: KeyArray, n: int, noise: float = 0.08) -> Float[Array, "n 2"]:
    r"""Four concentric circles of radii 1, 2, 3, 4, each point on a ring chosen with
    probability proportional to its radius (so the density along each ring is the
    same), at a uniform angle, plus Gaussian noise of std `noise`.

    **Returns:** an array of shape `(n, 2)`.
    """
    n, noise = _check_n(n), _check_noise(noise)
    dtype = default_float()
    kr, ka, kz = jr.split(key, 3)
    radii = jnp.arange(1, 5, dtype=dtype)
    r = radii[jr.categorical(kr, jnp.log(radii), shape=(n,))]
    a = jr.uniform(ka, (n,), dtype, 0.0, 2 * math.pi)
    pts = r[:, None] * jnp.stack([jnp.cos(a), jnp.sin(a)], axis=-1)
    return pts + noise * jr.normal(kz, (n, 2), dtype)


def eight_gaussians_sampler(key: KeyArray, n: int) -> Float[Array, "n 2"]:
    r"""Samples of [`sdegen.data.eight_gaussians`][] (8 Gaussians of std 0.3 on a circle
    of radius 4), the toy set with an exact score at every $t$."""
    return _eight_gaussians().sample(key, _check_n(n))


@dataclass(frozen=True)
class ToyInfo:
    """One row of [`sdegen.data.TOY_DATASETS`][]."""

    name: str
    sample: Callable[[KeyArray, int], Array]
    description: str


TOY_DATASETS: dict[str, ToyInfo] = {
    info.name: info
    for info in (
        ToyInfo("8gaussians", eight_gaussians_sampler,
                "8 Gaussians (std 0.3) on a circle of radius 4; exact score known."),
        ToyInfo("moons", two_moons, "Two interleaved half circles."),
        ToyInfo("swiss_roll", swiss_roll, "A 2-D spiral."),
        ToyInfo("checkerboard", checkerboard, "Uniform on a 4x4 checkerboard."),
        ToyInfo("rings", rings, "Four concentric noisy circles."),
    )
}  # fmt: skip
"""The one table of toy data sets: name -> [`sdegen.data.ToyInfo`][]."""

_ALIASES = {
    "eight_gaussians": "8gaussians",
    "gaussians": "8gaussians",
    "two_moons": "moons",
    "swissroll": "swiss_roll",
    "circles": "rings",
}


def _normalise(name: str) -> str:
    name = name.strip().lower().replace("-", "_").replace(" ", "_")
    return _ALIASES.get(name, name)


def toy(name: str) -> Callable[[KeyArray, int], Array]:
    """The sampler `sampler(key, n) -> (n, 2)` of a toy data set by name.

    **Arguments:**

    - `name`: a name from [`sdegen.data.TOY_DATASETS`][] (case-insensitive; `-` and
      `_` are the same; `two_moons`, `eight_gaussians` and `swissroll` are accepted
      spellings).

    **Raises:** `ValueError` listing the known names for an unknown name.
    """
    if not isinstance(name, str):
        raise ValueError(f"`name` must be a string, got {type(name).__name__}.")
    info = TOY_DATASETS.get(_normalise(name))
    if info is None:
        raise ValueError(
            f"Unknown toy data set {name!r}. Known names: "
            f"{', '.join(TOY_DATASETS)}."
        )
    return info.sample
