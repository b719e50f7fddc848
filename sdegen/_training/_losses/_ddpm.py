r"""The simple DDPM loss (Ho et al. 2020)."""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from ..._core._checks import as_float_array
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


def _check_alphas_cumprod(alphas_cumprod) -> Array:
    a = as_float_array(alphas_cumprod, "alphas_cumprod")
    if a.ndim != 1 or a.shape[0] < 1:
        raise ValueError(
            f"`alphas_cumprod` must be a non-empty 1-D array, got shape {a.shape}."
        )
    if is_concrete(a):
        v = np.asarray(a)
        if not np.all(np.isfinite(v)) or np.any(v <= 0) or np.any(v >= 1):
            raise ValueError(
                "`alphas_cumprod` must hold values in (0, 1) (products of 1 - beta_n)."
            )
    return a


def _single(eps_model, alphas_cumprod, x0, key, label, reduction):
    kn, kz = jr.split(key)
    n = jr.randint(kn, (), 0, alphas_cumprod.shape[0])
    abar = alphas_cumprod[n].astype(x0.dtype)
    z = jr.normal(kz, x0.shape, x0.dtype)
    xn = jnp.sqrt(abar) * x0 + jnp.sqrt(1 - abar) * z
    return reduce((z - call(eps_model, n, xn, label)) ** 2, reduction)


def single_ddpm_loss(
    eps_model: Callable,
    alphas_cumprod: Float[ArrayLike, " N"],
    x0: Float[ArrayLike, "*data"],
    key: KeyArray,
    *,
    label: Int[ArrayLike, ""] | None = None,
    reduction: str = "sum",
) -> Scalar:
    r"""The simple DDPM loss for one clean example (Ho et al. 2020, eq. 14):
    $n \sim \mathcal{U}\{0, \dots, N-1\}$, $z \sim \mathcal{N}(0, I)$,

    $$\ell = \big\lVert z - \hat\varepsilon\big(n,\ \sqrt{\bar\alpha_n}\,x_0 +
    \sqrt{1 - \bar\alpha_n}\,z\big)\big\rVert^2$$

    summed over all entries (`reduction="sum"`, default) or averaged over them
    (`"mean"`, the `F.mse_loss` of the reference implementations).

    **Arguments:**

    - `eps_model`: the noise predictor `eps_model(n, x)`, called with the integer step
      `n` (an int32 scalar array) in `[0, N)`.
    - `alphas_cumprod`: $\bar\alpha_n = \prod_{m \le n}(1 - \beta_m)$, shape `(N,)`,
      values in $(0, 1)$.
    - `x0`: one clean example.
    - `key`: PRNG key for $n$ and $z$.
    - `label`: optional class label passed to the model.
    - `reduction`: `"sum"` or `"mean"` over the entries.

    **Returns:** the scalar loss.
    """
    check_model(eps_model, "eps_model")
    check_reduction(reduction)
    alphas_cumprod = _check_alphas_cumprod(alphas_cumprod)
    x0 = as_float_array(x0, "x0")
    return _single(eps_model, alphas_cumprod, x0, key, label, reduction)


def ddpm_loss(
    eps_model: Callable,
    alphas_cumprod: Float[ArrayLike, " N"],
    batch: RealBatch,
    key: KeyArray,
    *,
    labels: Labels = None,
    label_dropout: RealScalarLike = 0.0,
    null_label: int | None = None,
    reduction: str = "sum",
) -> Scalar:
    r"""The batch mean of [`sdegen.single_ddpm_loss`][], Ho et al. 2020's
    $L_{\text{simple}} = \mathbb{E}_{n, x_0, z}\lVert z - \hat\varepsilon(n,
    \sqrt{\bar\alpha_n}x_0 + \sqrt{1 - \bar\alpha_n}z)\rVert^2$.

    **Arguments:**

    - `eps_model`: `eps_model(n, x)` with integer step `n` in `[0, N)`.
    - `alphas_cumprod`: shape `(N,)`, values in $(0, 1)$.
    - `batch`: clean data of shape `(batch, *data)` (finite).
    - `key`: PRNG key, split into one key per example.
    - `labels`, `label_dropout`, `null_label`: optional integer labels `(batch,)`
      and classifier-free-guidance label dropout, as in [`sdegen.dsm_loss`][].
    - `reduction`: `"sum"` (default) or `"mean"` over the entries of an example.

    **Returns:** the scalar mean loss.
    """
    check_model(eps_model, "eps_model")
    check_reduction(reduction)
    alphas_cumprod = _check_alphas_cumprod(alphas_cumprod)
    batch = prepare_batch(batch)
    labels = prepare_labels(labels, batch, label_dropout, null_label)
    check_model_output(eps_model, jnp.asarray(0), batch, labels, "eps_model")
    keys, drop_keys = example_keys(key, batch.shape[0])
    labels = drop_labels(labels, drop_keys, label_dropout, null_label)
    per = jax.vmap(
        lambda x, k, lab: _single(eps_model, alphas_cumprod, x, k, lab, reduction)
    )(batch, keys, labels)
    return jnp.mean(per)
