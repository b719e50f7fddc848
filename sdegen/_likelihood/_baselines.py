r"""Simple models of quantised data, scored in bits/dim on held-out examples: what a
diffusion model's bits/dim should beat (the numbers `sdegen likelihood` prints beside
the model's)."""

import math
from typing import Any

import numpy as np


def _levels(x: Any, num_bins: int, name: str) -> np.ndarray:
    k = np.asarray(x)
    if not np.issubdtype(k.dtype, np.integer) or k.ndim < 2:
        raise ValueError(f"`{name}` must be integer levels of shape (N, *shape).")
    if k.size and (k.min() < 0 or k.max() >= num_bins):
        raise ValueError(f"`{name}` must lie in {{0, ..., {num_bins - 1}}}.")
    return k.reshape(len(k), -1)


def baseline_bits_per_dim(train: Any, held_out: Any, num_bins: int, *,
                          seed: int = 0) -> dict[str, float]:  # fmt: skip
    r"""Bits/dim on `held_out` of three models fitted on `train` (integer levels
    $k \in \{0, \dots, L-1\}^D$, $L$ = `num_bins`):

    - `uniform`: every level equally likely, $\log_2 L$;
    - `histogram`: independent pixels, each a categorical with add-one (Laplace)
      smoothing, $P_i(k) = (c_i(k) + 1)/(N + L)$ from the training counts
      $c_i(k)$: $-\frac1D\sum_i \log_2 P_i(k_i)$, exact discrete bits/dim;
    - `gaussian`: one full-covariance Gaussian fitted to the uniformly dequantised
      training data $k + u$ (bin width 1), scored on dequantised held-out data:
      $-\log_2 \mathcal{N}(k + u;\, \mu, \Sigma)/D$, an upper bound on its discrete
      bits/dim like the model's (same protocol); only with more training examples
      than entries $D$ (else the covariance is singular).

    **Returns:** `{"uniform", "histogram", "gaussian"}` (the last only for
    $N > D$), the means over `held_out`.
    """
    num_bins = int(num_bins)
    tr, te = _levels(train, num_bins, "train"), _levels(held_out, num_bins, "held_out")
    if tr.shape[1] != te.shape[1] or len(tr) < 2 or len(te) < 1:
        raise ValueError("`train` and `held_out` must hold examples of the same shape.")
    n, d = tr.shape
    counts = np.stack([np.bincount(col, minlength=num_bins) for col in tr.T])  # (D, L)
    logp = np.log2((counts + 1.0) / (n + num_bins))
    hist = -float(np.mean(logp[np.arange(d)[None, :], te]))
    out = {"uniform": math.log2(num_bins), "histogram": hist}
    if n <= d:  # too few examples for a full covariance
        return out
    rng = np.random.default_rng(seed)
    y_tr = tr + rng.uniform(size=tr.shape)
    y_te = te + rng.uniform(size=te.shape)
    mu = y_tr.mean(0)
    cov = np.atleast_2d(np.cov(y_tr, rowvar=False))
    chol = np.linalg.cholesky(cov)
    z = np.linalg.solve(chol, (y_te - mu).T)
    nll = 0.5 * np.sum(z**2, 0) + np.sum(np.log(np.diag(chol))) + 0.5 * d * math.log(
        2 * math.pi)  # fmt: skip
    out["gaussian"] = float(np.mean(nll) / (d * math.log(2.0)))
    return out
