"""Distances between sample sets: MMD, sliced Wasserstein, component fractions, the
Fréchet distance on features, and the sample report."""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .._core._checks import error_if_not_finite
from .._core._custom_types import KeyArray, Scalar


def _check_pair(x, y):
    x, y = jnp.asarray(x), jnp.asarray(y)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(
            "`x` and `y` must be sample sets of shapes (n, d) and (m, d) with the same d, "
            f"got {x.shape} and {y.shape}."
        )
    return error_if_not_finite(x, "x"), error_if_not_finite(y, "y")


def mmd(
    x: Float[ArrayLike, "n d"],
    y: Float[ArrayLike, "m d"],
    bandwidths: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0, 10.0),
) -> Scalar:
    r"""Squared maximum mean discrepancy
    $\mathrm{MMD}^2 = \overline{k(x, x')} + \overline{k(y, y')} - 2\,\overline{k(x, y)}$
    with $k(a, b) = \sum_h \exp(-\lVert a - b\rVert^2 / (2h^2))$ summed over
    `bandwidths` (a characteristic kernel, so the population value is 0 iff the
    distributions agree). Biased V-statistic; $O(nm)$ time, one compiled program, and
    $O(bm)$ memory (the kernel is summed over blocks of $b = 128$ rows)."""
    x, y = _check_pair(x, y)
    return _mmd(x, y, tuple(float(h) for h in bandwidths))


_MMD_BLOCK = 128


@eqx.filter_jit
def _mmd(x, y, bandwidths):
    def mean_kernel(a, b):
        def row(ai):
            d2 = jnp.sum((ai[None, :] - b) ** 2, axis=-1)
            return sum(jnp.mean(jnp.exp(-d2 / (2 * h**2))) for h in bandwidths)

        return jnp.mean(jax.lax.map(row, a, batch_size=_MMD_BLOCK))

    return mean_kernel(x, x) + mean_kernel(y, y) - 2 * mean_kernel(x, y)


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


# ---------------------------------------------------------------- Fréchet distance


def _sqrtm_psd(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(0.5 * (s + s.T))
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def gaussian_frechet_distance(
    mean1: Float[ArrayLike, " d"],
    cov1: Float[ArrayLike, "d d"],
    mean2: Float[ArrayLike, " d"],
    cov2: Float[ArrayLike, "d d"],
) -> float:
    r"""The Fréchet (2-Wasserstein) distance between $\mathcal{N}(m_1, S_1)$ and
    $\mathcal{N}(m_2, S_2)$, squared (the convention of FID; Dowson & Landau 1982,
    Heusel et al. 2017):

    $$d^2 = \lVert m_1 - m_2\rVert^2 + \operatorname{tr}\big(S_1 + S_2 -
    2 (S_1 S_2)^{1/2}\big),$$

    computed in float64 as $\operatorname{tr}(S_1 S_2)^{1/2} = \sum_i \sqrt{\mu_i}$
    over the eigenvalues $\mu_i \ge 0$ of the symmetric $S_1^{1/2} S_2 S_1^{1/2}$
    (no complex matrix square root).

    **Returns:** a Python float $\ge 0$ (up to rounding).
    """
    m1, m2 = np.asarray(mean1, np.float64), np.asarray(mean2, np.float64)
    s1, s2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
    d = m1.shape[0]
    if m1.shape != (d,) or m2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(
            "`mean1`, `mean2` must have shape (d,) and `cov1`, `cov2` shape (d, d), "
            f"got {m1.shape}, {s1.shape}, {m2.shape}, {s2.shape}."
        )
    r = _sqrtm_psd(s1)
    mu = np.linalg.eigvalsh(r @ s2 @ r)
    cross = float(np.sum(np.sqrt(np.clip(mu, 0.0, None))))
    d2 = float(np.sum((m1 - m2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * cross)
    return max(d2, 0.0)  # a squared distance: rounding can make it slightly negative


class PCAFeatures(eqx.Module):
    r"""Projection of flattened examples on the top-$k$ principal axes of a fitted
    data set, $f(x) = V_k^\top(x - \bar x)$ (in the data's units; no whitening).
    Deterministic given the data (SVD in float64; the axes' signs do not change a
    Fréchet distance, which is invariant to orthogonal maps of the features)."""

    mean: np.ndarray
    components: np.ndarray

    def __init__(self, mean: Any, components: Any):
        """**Arguments:** `mean` $\\bar x$ of shape `(D,)` and `components` $V_k$ of
        shape `(D, k)` (orthonormal columns); see `PCAFeatures.fit`."""
        self.mean = np.asarray(mean, np.float64)
        self.components = np.asarray(components, np.float64)
        if self.components.ndim != 2 or self.mean.shape != self.components.shape[:1]:
            raise ValueError(
                f"`components` must have shape (D, k) and `mean` shape (D,), got "
                f"{self.components.shape} and {self.mean.shape}."
            )

    @classmethod
    def fit(cls, data: Any, num_components: int = 16) -> "PCAFeatures":
        """PCA of `data` (shape `(N, *shape)`, flattened) keeping `num_components`
        axes."""
        x = _flat(data, "data")
        k = int(num_components)
        if k < 1 or k > min(x.shape):
            raise ValueError(
                f"`num_components` must be in [1, {min(x.shape)}], got {num_components!r}."
            )
        mean = x.mean(axis=0)
        _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
        return cls(mean, vt[:k].T)

    def __call__(self, x: Any) -> np.ndarray:
        """Features of a batch `(n, *shape)`: an array `(n, k)`."""
        x = _flat(x, "x")
        if x.shape[1] != self.mean.shape[0]:
            raise ValueError(
                f"Examples have {x.shape[1]} entries; these features were fitted on "
                f"{self.mean.shape[0]}."
            )
        return (x - self.mean) @ self.components


def digit_features(num_components: int = 16) -> PCAFeatures:
    r"""Features for 8×8 digit images: [`sdegen.metrics.PCAFeatures`][] fitted on all
    1797 of scikit-learn's embedded digits scaled to $[-1, 1]$
    ([`sdegen.data.load_digits`][]), so they are the same on every machine."""
    from ..data import load_digits

    x, _ = load_digits(dtype=np.float64)
    return PCAFeatures.fit(np.asarray(x), num_components)


def _flat(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x, np.float64)
    if a.ndim < 2 or a.shape[0] < 2:
        raise ValueError(
            f"`{name}` must be a set of examples of shape (n, *shape) with n >= 2, got "
            f"shape {a.shape}."
        )
    return a.reshape(a.shape[0], -1)


def resolve_features(features: Any, flat: np.ndarray) -> tuple[Callable | None, str]:
    """`(feature map or None for the raw coordinates, its name)` of a `features`
    argument: `"auto"` (raw up to 16 entries, else PCA-16 fitted on the flattened data
    `flat`), `"raw"`, `"pca"`, or a callable map of a batch to `(n, k)`."""
    if not isinstance(features, str):
        return features, getattr(features, "name", type(features).__name__)
    if features not in ("auto", "raw", "pca"):
        raise ValueError(
            f"`features` must be 'auto', 'raw', 'pca' or a callable, got {features!r}."
        )
    if features == "raw" or (features == "auto" and flat.shape[1] <= 16):
        return None, "raw"
    feat = PCAFeatures.fit(flat, min(16, *flat.shape))
    return feat, f"pca{feat.components.shape[1]}"


def _features(x: Any, features: Callable | None, name: str) -> np.ndarray:
    f = _flat(x, name) if features is None else np.asarray(features(x), np.float64)
    if f.ndim != 2:
        raise ValueError(f"`features` must map a batch to (n, k), got shape {f.shape}.")
    if not np.all(np.isfinite(f)):
        raise ValueError(f"`{name}` (or its features) contains non-finite values.")
    return f


def frechet_distance(
    x: Float[ArrayLike, "n ..."],
    y: Float[ArrayLike, "m ..."],
    *,
    features: Callable[[Any], Any] | None = None,
) -> float:
    r"""The (squared) Fréchet distance between Gaussians fitted to two sample sets,
    $d^2 = \lVert m_x - m_y\rVert^2 + \operatorname{tr}(S_x + S_y - 2(S_x S_y)^{1/2})$
    with the means $m$ and (unbiased) covariances $S$ of the features (FID's formula,
    Heusel et al. 2017, on features suited to the data:
    [`sdegen.metrics.digit_features`][] for 8×8 digits, the raw coordinates for
    low-dimensional vectors).

    The estimate is biased upwards at finite sample sizes, so compare it with its
    data-vs-data floor at the same sizes ([`sdegen.metrics.sample_report`][]).

    **Arguments:**

    - `x`, `y`: sample sets `(n, *shape)` and `(m, *shape)`, $n, m \ge 2$.
    - `features`: a map of a batch to `(n, k)` features (e.g. a
      [`sdegen.metrics.PCAFeatures`][]); `None`: the flattened coordinates.

    **Returns:** a Python float.

    **Raises:** `ValueError` for non-finite values or mismatched shapes.
    """
    fx, fy = _features(x, features, "x"), _features(y, features, "y")
    if fx.shape[1] != fy.shape[1]:
        raise ValueError(
            f"`x` and `y` must have the same number of features, got {fx.shape[1]} and "
            f"{fy.shape[1]}."
        )
    cov = lambda f: np.atleast_2d(np.cov(f, rowvar=False))
    return gaussian_frechet_distance(fx.mean(0), cov(fx), fy.mean(0), cov(fy))


# ---------------------------------------------------------------- sample report


def example_sets(samples: Any, data: Any) -> tuple[np.ndarray, np.ndarray]:
    """`samples` and `data` as float64 sets of examples of one shape, `(n, *shape)` and
    `(N, *shape)` (a `ValueError` naming both otherwise)."""
    x = np.asarray(samples, np.float64)
    y = np.asarray(data, np.float64)
    if x.ndim < 2 or y.ndim < 2 or x.shape[1:] != y.shape[1:]:
        raise ValueError(
            "`samples` and `data` must be sets of examples of the same shape, "
            f"(n, *shape) and (N, *shape), got {x.shape} and {y.shape}."
        )
    return x, y


def _seed(key: Any) -> int:
    """A NumPy seed from the bits of a JAX key (typed or legacy `uint32[2]`)."""
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jr.key_data(key)
    return int.from_bytes(np.asarray(key).astype(np.uint32).tobytes(), "little")


def sample_report(
    samples: Float[ArrayLike, "n ..."],
    data: Float[ArrayLike, "N ..."],
    *,
    key: Any,
    features: str | Callable[[Any], Any] = "auto",
    num_splits: int = 10,
) -> dict[str, Any]:
    r"""How close samples are to the data, with the numbers that say how close is
    close: for `metrics.json` and the command line.

    - **Fréchet distance** ([`sdegen.metrics.frechet_distance`][]) of $m$ samples to
      $m$ data examples, and its **floor**: the distance between two *disjoint*
      random sets of $m$ data examples, $m = \min(n, \lfloor N/2\rfloor)$, both
      averaged over `num_splits` random splits of the data (the same reference set
      $A$ for the samples and for the floor in each split). A perfect sampler has a
      `frechet_ratio` (distance / floor) of about 1.
    - Features: `"auto"` uses the raw coordinates for data of at most 16 entries and
      otherwise [`sdegen.metrics.PCAFeatures`][] with 16 components fitted on `data`
      (the raw-coordinate distance and floor are then reported too, as
      `frechet_raw`); or `"raw"`, `"pca"`, or any map of a batch to `(n, k)`.
    - `mean`, `std` of all sample entries against the data's (`std_ratio`).
    - `frac_outside_range`: the fraction of sample entries outside the data's
      $[\min, \max]$, and `mean_distance_outside`, their mean distance to it; for
      data in $[-1, 1]$ also `frac_beyond_1.1`, the fraction with $|x| > 1.1$.
    - `frac_nonfinite`: the fraction of non-finite entries (the distances are then
      computed on the finite samples only).

    **Arguments:**

    - `samples`: shape `(n, *shape)`, $n \ge 2$.
    - `data`: the reference data `(N, *shape)`, $N \ge 4$.
    - `key`: PRNG key of the random splits and subsets.
    - `features`: see above.
    - `num_splits`: number of random splits averaged.

    **Returns:** a dict of JSON-serialisable numbers and strings.
    """
    x, y = example_sets(samples, data)
    if y.shape[0] < 4 or not np.all(np.isfinite(y)):
        raise ValueError("`data` must hold at least 4 finite examples.")
    if np.all(y == y.reshape(len(y), -1)[:1].reshape(y[:1].shape)):
        raise ValueError(
            "`data` is constant (all examples equal, standard deviation 0): the "
            "report's ratios to the data's spread are undefined."
        )
    num_splits = int(num_splits)
    if num_splits < 1:
        raise ValueError(f"`num_splits` must be a positive int, got {num_splits!r}.")
    xf, yf = x.reshape(len(x), -1), y.reshape(len(y), -1)
    finite = np.all(np.isfinite(xf), axis=1)
    out: dict[str, Any] = {
        "num_samples": int(len(x)),
        "num_data": int(len(y)),
        "frac_nonfinite": float(np.mean(~np.isfinite(xf))),
    }
    ok = xf[finite]
    lo, hi = float(yf.min()), float(yf.max())
    out.update(mean=float(ok.mean()) if ok.size else float("nan"),
               std=float(ok.std()) if ok.size else float("nan"),
               data_mean=float(yf.mean()), data_std=float(yf.std()),
               data_min=lo, data_max=hi)  # fmt: skip
    out["std_ratio"] = out["std"] / out["data_std"]
    out["frac_outside_range"] = float(np.mean((xf < lo) | (xf > hi) | ~np.isfinite(xf)))
    # how far outside: the mean distance to [lo, hi] of the entries outside
    dist = np.maximum(lo - ok, 0) + np.maximum(ok - hi, 0)
    out["mean_distance_outside"] = float(dist[dist > 0].mean()) if np.any(dist > 0) else 0.0
    if lo >= -1 and hi <= 1:
        out["frac_beyond_1.1"] = float(np.mean(~(np.abs(xf) <= 1.1)))
    m = min(len(ok), len(y) // 2)
    if m < 2:
        return out
    feat, out["features"] = resolve_features(features, yf)
    use_pca = isinstance(features, str) and feat is not None  # also the raw distance
    rng = np.random.default_rng(_seed(key))
    dist, floor, raw, raw_floor = [], [], [], []
    for _ in range(num_splits):
        perm = rng.permutation(len(yf))
        a, b = yf[perm[:m]], yf[perm[m : 2 * m]]
        s = ok[rng.permutation(len(ok))[:m]]
        dist.append(frechet_distance(s, a, features=feat))
        floor.append(frechet_distance(b, a, features=feat))
        if use_pca:
            raw.append(frechet_distance(s, a))
            raw_floor.append(frechet_distance(b, a))
    out.update(frechet_distance=float(np.mean(dist)), frechet_floor=float(np.mean(floor)),
               frechet_n=m, frechet_splits=num_splits)  # fmt: skip
    out["frechet_ratio"] = out["frechet_distance"] / out["frechet_floor"]
    if use_pca:
        out["frechet_raw"] = float(np.mean(raw))
        out["frechet_raw_floor"] = float(np.mean(raw_floor))
        out["frechet_raw_ratio"] = out["frechet_raw"] / out["frechet_raw_floor"]
    return out
