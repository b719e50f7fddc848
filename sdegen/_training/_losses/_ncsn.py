r"""The NCSN loss over a geometric ladder of noise levels (Song & Ermon 2019)."""

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from ..._core._checks import as_float_array, check_int, concrete_float
from ..._core._custom_types import KeyArray, RealScalarLike, Scalar
from ..._core._misc import is_concrete
from ._common import (
    Labels,
    RealBatch,
    call,
    check_model,
    check_model_output,
    check_reduction,
    drop_labels,
    example_keys,
    prepare_batch,
    prepare_labels,
    reduce,
)


def geometric_sigmas(
    sigma_max: RealScalarLike, sigma_min: RealScalarLike, num_levels: int
) -> Float[Array, " num_levels"]:
    r"""The decreasing geometric ladder of NCSN (Song & Ermon 2019),
    $\sigma_i = \sigma_{\max}(\sigma_{\min}/\sigma_{\max})^{i/(L-1)}$,
    $i = 0, \dots, L-1$, so $\sigma_0 = \sigma_{\max}$ and
    $\sigma_{L-1} = \sigma_{\min}$.

    **Arguments:**

    - `sigma_max`: the largest noise level.
    - `sigma_min`: the smallest noise level, $0 < \sigma_{\min} < \sigma_{\max}$.
    - `num_levels`: $L \ge 2$.

    **Returns:** an array of shape `(num_levels,)` in JAX's default float dtype.
    """
    smax = concrete_float("sigma_max", sigma_max)
    smin = concrete_float("sigma_min", sigma_min)
    if smin is None or smax is None:
        raise ValueError("`sigma_max` and `sigma_min` must be concrete numbers.")
    if not (math.isfinite(smin) and smin > 0):
        raise ValueError(f"`sigma_min` must be finite and > 0, got {smin}.")
    if not (math.isfinite(smax) and smax > smin):
        raise ValueError(
            f"`sigma_max` must be finite and > `sigma_min` = {smin}, got {smax}."
        )
    num_levels = check_int("num_levels", num_levels, minimum=2)
    ladder = np.geomspace(smax, smin, num_levels)
    return jnp.asarray(ladder, jnp.zeros(()).dtype)


def _check_sigmas(sigmas) -> Array:
    sigmas = as_float_array(sigmas, "sigmas")
    if sigmas.ndim != 1 or sigmas.shape[0] < 1:
        raise ValueError(
            f"`sigmas` must be a non-empty 1-D array of noise levels, got shape "
            f"{sigmas.shape}."
        )
    if is_concrete(sigmas):
        s = np.asarray(sigmas)
        if not np.all(np.isfinite(s)) or np.any(s <= 0):
            raise ValueError("`sigmas` must be finite and > 0.")
        if np.any(np.diff(s) >= 0):
            raise ValueError(
                "`sigmas` must be strictly decreasing (sigma_max first), e.g. "
                "sdegen.geometric_sigmas(sigma_max, sigma_min, num_levels)."
            )
    return sigmas


def _single(model, sigmas, x0, key, label, reduction):
    ki, kz = jr.split(key)
    i = jr.randint(ki, (), 0, sigmas.shape[0])
    sigma = sigmas[i].astype(x0.dtype)
    z = jr.normal(kz, x0.shape, x0.dtype)
    s = call(model, sigma, x0 + sigma * z, label)
    # (1/2) sigma^2 ||s + z/sigma||^2 = (1/2) ||sigma s + z||^2
    return 0.5 * reduce((sigma * s + z) ** 2, reduction)


def single_ncsn_loss(
    model: Callable,
    sigmas: Float[ArrayLike, " levels"],
    x0: Float[ArrayLike, "*data"],
    key: KeyArray,
    *,
    label: Int[ArrayLike, ""] | None = None,
    reduction: str = "sum",
) -> Scalar:
    r"""The NCSN loss for one clean example (Song & Ermon 2019, eqs. 5-6): a level
    $i \sim \mathcal{U}\{0, \dots, L-1\}$, $\tilde x = x_0 + \sigma_i z$, and

    $$\ell = \lambda(\sigma_i)\,\tfrac12\big\lVert s(\sigma_i, \tilde x) +
    z/\sigma_i\big\rVert^2,\qquad \lambda(\sigma) = \sigma^2,$$

    (note the paper's factor $\tfrac12$), whose expectation is the paper's
    $\frac1L\sum_i \lambda(\sigma_i)\,\ell(\theta; \sigma_i)$. The norm is summed over
    the entries of $x_0$ (`reduction="sum"`) or averaged (`"mean"`).

    **Arguments:**

    - `model`: a noise-conditional score `model(sigma, x)`.
    - `sigmas`: the noise levels, positive and strictly decreasing.
    - `x0`: one clean example.
    - `key`: PRNG key for the level and the noise.
    - `label`: optional class label passed to the model.
    - `reduction`: `"sum"` (default) or `"mean"` over the entries.

    **Returns:** the scalar loss.
    """
    check_model(model)
    check_reduction(reduction)
    sigmas = _check_sigmas(sigmas)
    x0 = as_float_array(x0, "x0")
    return _single(model, sigmas, x0, key, label, reduction)


def ncsn_loss(
    model: Callable,
    sigmas: Float[ArrayLike, " levels"],
    batch: RealBatch,
    key: KeyArray,
    *,
    labels: Labels = None,
    label_dropout: RealScalarLike = 0.0,
    null_label: int | None = None,
    reduction: str = "sum",
) -> Scalar:
    r"""The batch mean of [`sdegen.single_ncsn_loss`][] (Song & Ermon 2019): denoising
    score matching of a noise-conditional score `model(sigma, x)` over a ladder of
    noise levels, $\frac1B\sum_b \tfrac12\lVert\sigma_{i_b} s(\sigma_{i_b},
    x_b + \sigma_{i_b} z_b) + z_b\rVert^2$ with one uniform level per example.

    **Arguments:**

    - `model`: a noise-conditional score `model(sigma, x)` of one example.
    - `sigmas`: noise levels, positive and strictly decreasing (see
      [`sdegen.geometric_sigmas`][]).
    - `batch`: clean data of shape `(batch, *data)` (finite).
    - `key`: PRNG key, split into one key per example.
    - `labels`, `label_dropout`, `null_label`: optional integer labels `(batch,)`
      and classifier-free-guidance label dropout, as in [`sdegen.dsm_loss`][].
    - `reduction`: `"sum"` (default) or `"mean"` over the entries of an example.

    **Returns:** the scalar mean loss.
    """
    check_model(model)
    check_reduction(reduction)
    sigmas = _check_sigmas(sigmas)
    batch = prepare_batch(batch)
    labels = prepare_labels(labels, batch, label_dropout, null_label)
    check_model_output(model, sigmas[0].astype(batch.dtype), batch, labels)
    keys, drop_keys = example_keys(key, batch.shape[0])
    labels = drop_labels(labels, drop_keys, label_dropout, null_label)
    per = jax.vmap(lambda x, k, lab: _single(model, sigmas, x, k, lab, reduction))(
        batch, keys, labels
    )
    return jnp.mean(per)
