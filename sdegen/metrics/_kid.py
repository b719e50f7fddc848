"""The kernel distance (KID): the unbiased squared MMD with the cubic polynomial
kernel (Bińkowski et al. 2018, "Demystifying MMD GANs")."""

from typing import Any

import numpy as np


def _poly(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    t = a @ b.T
    t /= a.shape[1]
    t += 1.0
    return t * t * t  # faster than ** 3


def kid(x: Any, y: Any) -> float:
    r"""The kernel distance of Bińkowski et al. (2018): the unbiased estimate of the
    squared maximum mean discrepancy with the polynomial kernel
    $k(a, b) = (a^\top b / d + 1)^3$ on $d$-dimensional features,

    $$\widehat{\mathrm{MMD}}^2_u = \frac{1}{n(n-1)}\sum_{i \ne j} k(x_i, x_j)
    + \frac{1}{m(m-1)}\sum_{i \ne j} k(y_i, y_j)
    - \frac{2}{nm}\sum_{i, j} k(x_i, y_j),$$

    the U-statistic: the diagonal terms $k(x_i, x_i)$ are left out of the
    within-set sums, so its expectation is the population MMD² exactly, at any
    sample sizes (0 when the two sets come from the same law; an estimate can then
    be negative). Unlike the Fréchet distance it needs no data-vs-data floor. Pass
    features (e.g. [`sdegen.metrics.PCAFeatures`][] of the data), not raw pixels.

    **Arguments:** `x` of shape `(n, d)` and `y` of shape `(m, d)`, $n, m \ge 2$,
    finite.

    **Returns:** a Python float (computed in float64).

    **Raises:** `ValueError` for other shapes or non-finite values.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(
            "`x` and `y` must be feature sets of shapes (n, d) and (m, d) with the "
            f"same d, got {x.shape} and {y.shape}."
        )
    if len(x) < 2 or len(y) < 2:
        raise ValueError(
            f"`x` and `y` need at least 2 points each, got {len(x)} and {len(y)}."
        )
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("`x` and `y` must be finite.")
    n, m = len(x), len(y)
    kxx, kyy = _poly(x, x), _poly(y, y)
    sxx = (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(sxx + syy - 2.0 * _poly(x, y).mean())
