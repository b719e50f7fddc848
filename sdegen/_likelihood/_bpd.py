r"""Bits per dimension of discrete data from the log-density of its dequantised,
rescaled version, and uniform dequantisation (Theis et al. 2016; the conventions of the
official score_sde code).
"""

import math
from typing import Any

import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Float, Shaped

from .._core._checks import as_float_array
from .._core._custom_types import Data, KeyArray
from .._core._misc import is_concrete


def _data_range(data_range) -> tuple[float, float]:
    if isinstance(data_range, str):
        named = {"minus_one_one": (-1.0, 1.0), "zero_one": (0.0, 1.0)}
        if data_range not in named:
            raise ValueError(
                "`data_range` must be 'minus_one_one', 'zero_one' or a pair (low, "
                f"high), got {data_range!r}."
            )
        return named[data_range]
    try:
        lo, hi = (float(v) for v in data_range)
    except (TypeError, ValueError):
        raise ValueError(
            "`data_range` must be 'minus_one_one', 'zero_one' or a pair (low, high), "
            f"got {data_range!r}."
        ) from None
    if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
        raise ValueError(
            f"`data_range` must have finite low < high, got {data_range!r}."
        )
    return lo, hi


def _check_num_bins(num_bins) -> int:
    if isinstance(num_bins, bool) or int(num_bins) != num_bins or num_bins < 2:
        raise ValueError(f"`num_bins` must be an int >= 2, got {num_bins!r}.")
    return int(num_bins)


def bits_per_dim(
    logp: Float[ArrayLike, "*batch"],
    num_dims: int,
    *,
    data_range: str | tuple[float, float] = "minus_one_one",
    num_bins: int = 256,
) -> Float[Array, "*batch"]:
    r"""Bits per dimension of discrete data (e.g. 8-bit images) from the
    log-density `logp` (nats) of its uniformly dequantised, rescaled version.

    Data $k \in \{0, \dots, K-1\}^D$ ($K$ = `num_bins`) is dequantised to
    $y = k + u$, $u \sim \mathcal{U}[0, 1)^D$, and rescaled to
    $x = \mathrm{low} + a\,y$ with $a = (\mathrm{high} - \mathrm{low}) / K$
    (so $x = (k + u)/128 - 1$ for `"minus_one_one"` and $x = (k + u)/256$ for
    `"zero_one"` with $K = 256$). By the change of variables
    $\log p_y(y) = \log p_x(x) + D\log a$, and

    $$\mathrm{bpd} = -\frac{\log p_y(y)}{D\ln 2} = -\frac{\log p_x(x)}{D\ln 2}
    - \log_2 a,$$

    i.e. $+7$ bits for $[-1, 1]$ and $+8$ for $[0, 1]$ with 256 levels (the offsets
    of the official score_sde code). Averaged over $u$ this is an upper bound on
    $-\log_2 P(k)/D$ of the discrete model $P(k) = \int_{[0,1)^D} p_y(k + u)\,
    \mathrm{d}u$ (Jensen; Theis et al. 2016, "A note on the evaluation of
    generative models"); the gap vanishes as the density becomes flat within a bin.

    **Arguments:**

    - `logp`: $\log p_x(x)$ in nats, e.g. from [`sdegen.log_likelihood`][] (any
      shape: one value per example).
    - `num_dims`: $D$, the number of entries of one example (e.g. $3\cdot32\cdot32$).
    - `data_range`: `"minus_one_one"`, `"zero_one"` or a pair `(low, high)`: the
      interval the $K$ levels were scaled to.
    - `num_bins`: $K$, the number of quantisation levels (256 for 8-bit data).

    **Returns:** bits per dimension, of the shape of `logp`.
    """
    if isinstance(num_dims, bool) or int(num_dims) != num_dims or num_dims < 1:
        raise ValueError(f"`num_dims` must be a positive int, got {num_dims!r}.")
    lo, hi = _data_range(data_range)
    num_bins = _check_num_bins(num_bins)
    logp = as_float_array(logp, "logp")
    log2_a = math.log2((hi - lo) / num_bins)
    return -logp / (int(num_dims) * math.log(2.0)) - log2_a


def dequantize(
    key: KeyArray,
    x: Shaped[ArrayLike, "*data"],
    data_range: str | tuple[float, float] = "minus_one_one",
    *,
    num_bins: int = 256,
    dtype: Any = None,
) -> Data:
    r"""Uniform dequantisation of integer data $k \in \{0, \dots, K-1\}$:
    $x = \mathrm{low} + (k + u)\,(\mathrm{high} - \mathrm{low})/K$ with
    $u \sim \mathcal{U}[0, 1)$ drawn independently for every entry (see
    [`sdegen.bits_per_dim`][]).

    **Arguments:**

    - `key`: PRNG key for $u$.
    - `x`: integer data (e.g. `uint8` pixels), any shape.
    - `data_range`: `"minus_one_one"`, `"zero_one"` or a pair `(low, high)`.
    - `num_bins`: $K$ (256 for 8-bit data).
    - `dtype`: output float dtype (JAX's default float by default).

    **Returns:** floats in $[\mathrm{low}, \mathrm{high})$ of the shape of `x`.

    **Raises:** `ValueError` if `x` is not integer-valued or falls outside
    $\{0, \dots, K-1\}$.
    """
    lo, hi = _data_range(data_range)
    num_bins = _check_num_bins(num_bins)
    x = jnp.asarray(x)
    if not (jnp.issubdtype(x.dtype, jnp.integer) or x.dtype == bool):
        raise ValueError(f"`x` must be integer data (e.g. uint8), got dtype {x.dtype}.")
    if is_concrete(x) and x.size > 0:
        xmin, xmax = int(jnp.min(x)), int(jnp.max(x))
        if xmin < 0 or xmax >= num_bins:
            raise ValueError(
                f"`x` must lie in {{0, ..., {num_bins - 1}}}, got values in "
                f"[{xmin}, {xmax}]."
            )
    dtype = jnp.zeros(()).dtype if dtype is None else dtype
    u = jr.uniform(key, x.shape, dtype=dtype)
    return (lo + (x.astype(dtype) + u) * ((hi - lo) / num_bins)).astype(dtype)
