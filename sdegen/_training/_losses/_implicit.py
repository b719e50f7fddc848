r"""Score matching without a denoising target, at noised data: sliced score matching
(Song, Garg, Shi & Ermon 2019) and exact implicit score matching (Hyvärinen 2005)."""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import ArrayLike, Float, Int

from ..._core._checks import as_float_array, check_choice, check_int
from ..._core._custom_types import KeyArray, RealScalarLike, Scalar
from ..._processes._sde import AbstractSDE
from ._common import (
    Labels,
    RealBatch,
    call,
    check_model,
    check_model_output,
    check_reduction,
    check_time_args,
    drop_labels,
    example_keys,
    prepare_batch,
    prepare_labels,
)
from ._weighting import Weighting, resolve_weighting


PROJECTIONS = ("rademacher", "gaussian")


def _noised(sde, x0, key, eps, t_fixed):
    kt, kz = jr.split(key)
    if t_fixed is None:
        t = eps + (sde.T - eps) * jr.uniform(kt, (), x0.dtype)
    else:
        t = jnp.asarray(t_fixed, x0.dtype)
    z = jr.normal(kz, x0.shape, x0.dtype)
    return t, sde._alpha(t) * x0 + sde._sigma(t) * z


def _scale(reduction, x0):
    return 1.0 if reduction == "sum" else 1.0 / x0.size


def _single_ssm(model, sde, x0, key, label, m, variance_reduction, projection,
                weighting, eps, t_fixed, reduction):  # fmt: skip
    kx, kv = jr.split(key)
    t, xt = _noised(sde, x0, kx, eps, t_fixed)
    shape = (m, *x0.shape)
    if projection == "rademacher":
        vs = jr.rademacher(kv, shape, x0.dtype)
    else:
        vs = jr.normal(kv, shape, x0.dtype)
    f = lambda y: call(model, t, y, label)

    def one(v):
        s, jv = jax.jvp(f, (xt,), (v,))
        quad = 0.5 * jnp.sum(s**2) if variance_reduction else 0.5 * jnp.sum(v * s) ** 2
        return jnp.sum(v * jv) + quad

    per = jnp.mean(jax.vmap(one)(vs))
    return weighting(sde, t) * per * _scale(reduction, x0)


def _check_ssm_args(num_projections, projection):
    check_int("num_projections", num_projections)
    check_choice("projection", projection, PROJECTIONS)


def single_ssm_loss(
    model: Callable,
    sde: AbstractSDE,
    x0: Float[ArrayLike, "*data"],
    key: KeyArray,
    *,
    num_projections: int = 1,
    variance_reduction: bool = False,
    projection: str = "rademacher",
    weighting: Weighting = "sigma2",
    eps: RealScalarLike = 1e-5,
    t: RealScalarLike | None = None,
    label: Int[ArrayLike, ""] | None = None,
    reduction: str = "sum",
) -> Scalar:
    r"""Sliced score matching for one example (Song, Garg, Shi & Ermon 2019), at the
    noised data $x_t = \alpha(t)x_0 + \sigma(t)z$, $t \sim \mathcal{U}(\varepsilon, T)$,
    so it applies to time-dependent models: with $J = \partial_x s(t, x_t)$ and $M$
    projections $v_m$ (Rademacher or standard Gaussian),

    $$\ell = \lambda(t)\,\frac1M\sum_m \Big[v_m^\top J v_m +
    \tfrac12\big(v_m^\top s(t, x_t)\big)^2\Big],$$

    or with `variance_reduction=True` (SSM-VR) $\tfrac12\lVert s\rVert^2$ in place of
    $\tfrac12(v^\top s)^2$ (its expectation over $v$). $J v$ comes from one
    `jax.jvp` per projection (no full Jacobian). In expectation
    $\ell = \lambda(t)\,\tfrac12\mathbb{E}\lVert s - \nabla\log p_t\rVert^2 + C$, a sum
    over the $D$ entries; `reduction="mean"` divides it by $D$.

    **Arguments:**

    - `model`: a score function `model(t, x)`.
    - `sde`: the forward [`sdegen.AbstractSDE`][].
    - `x0`: one clean example.
    - `key`: PRNG key for $t$, $z$ and the projections.
    - `num_projections`: $M \ge 1$.
    - `variance_reduction`: use the SSM-VR form.
    - `projection`: `"rademacher"` or `"gaussian"`.
    - `weighting`: a name of [`sdegen.WEIGHTINGS`][], an
      [`sdegen.AbstractWeighting`][] or a callable $\lambda(t)$.
    - `eps`: smallest time, default `1e-5`.
    - `t`: optional fixed time in $(0, T]$.
    - `label`: optional class label passed to the model.
    - `reduction`: `"sum"` (default) or `"mean"` over the entries.

    **Returns:** the scalar loss.
    """
    check_model(model)
    _check_ssm_args(num_projections, projection)
    check_reduction(reduction)
    x0 = as_float_array(x0, "x0")
    eps, t = check_time_args(sde, eps, t)
    w = resolve_weighting(weighting)
    return _single_ssm(model, sde, x0, key, label, int(num_projections),
                       variance_reduction, projection, w, eps, t, reduction)  # fmt: skip


def ssm_loss(
    model: Callable,
    sde: AbstractSDE,
    batch: RealBatch,
    key: KeyArray,
    *,
    num_projections: int = 1,
    variance_reduction: bool = False,
    projection: str = "rademacher",
    weighting: Weighting = "sigma2",
    eps: RealScalarLike = 1e-5,
    t: RealScalarLike | None = None,
    labels: Labels = None,
    label_dropout: RealScalarLike = 0.0,
    null_label: int | None = None,
    reduction: str = "sum",
) -> Scalar:
    r"""The batch mean of [`sdegen.single_ssm_loss`][]: sliced score matching
    (Song et al. 2019) at noised data, $\frac1B\sum_b \lambda(t_b)\frac1M\sum_m
    [v^\top J v + \tfrac12 (v^\top s)^2]$ (or $\tfrac12\lVert s\rVert^2$ with
    `variance_reduction=True`).

    **Arguments:** as [`sdegen.single_ssm_loss`][], with `batch` of shape
    `(batch, *data)` in place of `x0`, and optional `labels` `(batch,)` with
    `label_dropout`/`null_label` as in [`sdegen.dsm_loss`][].

    **Returns:** the scalar mean loss.
    """
    check_model(model)
    _check_ssm_args(num_projections, projection)
    check_reduction(reduction)
    batch = prepare_batch(batch)
    labels = prepare_labels(labels, batch, label_dropout, null_label)
    eps, t = check_time_args(sde, eps, t)
    w = resolve_weighting(weighting)
    check_model_output(model, jnp.asarray(0.5 * sde.T, batch.dtype), batch, labels)
    keys, drop_keys = example_keys(key, batch.shape[0])
    labels = drop_labels(labels, drop_keys, label_dropout, null_label)
    m = int(num_projections)
    per = jax.vmap(
        lambda x, k, lab: _single_ssm(model, sde, x, k, lab, m, variance_reduction,
                                      projection, w, eps, t, reduction)  # fmt: skip
    )(batch, keys, labels)
    return jnp.mean(per)


def _single_ism(model, sde, x0, key, label, weighting, eps, t_fixed, reduction):
    t, xt = _noised(sde, x0, key, eps, t_fixed)
    shape = x0.shape
    flat = lambda y: jnp.ravel(call(model, t, y.reshape(shape), label))
    y = jnp.ravel(xt)
    jac = jax.jacfwd(flat)(y)
    s = flat(y)
    per = jnp.trace(jac) + 0.5 * jnp.sum(s**2)
    return weighting(sde, t) * per * _scale(reduction, x0)


def single_ism_loss(
    model: Callable,
    sde: AbstractSDE,
    x0: Float[ArrayLike, "*data"],
    key: KeyArray,
    *,
    weighting: Weighting = "sigma2",
    eps: RealScalarLike = 1e-5,
    t: RealScalarLike | None = None,
    label: Int[ArrayLike, ""] | None = None,
    reduction: str = "sum",
) -> Scalar:
    r"""Exact implicit score matching for one example (Hyvärinen 2005) at the noised
    data $x_t = \alpha(t)x_0 + \sigma(t)z$, $t \sim \mathcal{U}(\varepsilon, T)$:

    $$\ell = \lambda(t)\Big[\operatorname{tr}\big(\partial_x s(t, x_t)\big) +
    \tfrac12\lVert s(t, x_t)\rVert^2\Big],$$

    with the full Jacobian from `jax.jacfwd` ($D$ forward passes for $D$ entries: for
    low-dimensional data). In expectation
    $\ell = \lambda(t)\,\tfrac12\mathbb{E}\lVert s - \nabla\log p_t\rVert^2 + C$, a sum
    over the entries; `reduction="mean"` divides it by $D$.

    **Arguments:**

    - `model`: a score function `model(t, x)`.
    - `sde`: the forward [`sdegen.AbstractSDE`][].
    - `x0`: one clean example.
    - `key`: PRNG key for $t$ and $z$.
    - `weighting`: a name of [`sdegen.WEIGHTINGS`][], an
      [`sdegen.AbstractWeighting`][] or a callable $\lambda(t)$.
    - `eps`: smallest time, default `1e-5`.
    - `t`: optional fixed time in $(0, T]$.
    - `label`: optional class label passed to the model.
    - `reduction`: `"sum"` (default) or `"mean"` over the entries.

    **Returns:** the scalar loss.
    """
    check_model(model)
    check_reduction(reduction)
    x0 = as_float_array(x0, "x0")
    eps, t = check_time_args(sde, eps, t)
    w = resolve_weighting(weighting)
    return _single_ism(model, sde, x0, key, label, w, eps, t, reduction)


def ism_loss(
    model: Callable,
    sde: AbstractSDE,
    batch: RealBatch,
    key: KeyArray,
    *,
    weighting: Weighting = "sigma2",
    eps: RealScalarLike = 1e-5,
    t: RealScalarLike | None = None,
    labels: Labels = None,
    label_dropout: RealScalarLike = 0.0,
    null_label: int | None = None,
    reduction: str = "sum",
) -> Scalar:
    r"""The batch mean of [`sdegen.single_ism_loss`][]: exact implicit score matching
    (Hyvärinen 2005), $\frac1B\sum_b\lambda(t_b)[\operatorname{tr} J +
    \tfrac12\lVert s\rVert^2]$ at noised data, with the Jacobian trace from
    `jax.jacfwd` (cost grows with the data dimension: use it for low dimension).

    **Arguments:** as [`sdegen.single_ism_loss`][], with `batch` of shape
    `(batch, *data)` in place of `x0`, and optional `labels` `(batch,)` with
    `label_dropout`/`null_label` as in [`sdegen.dsm_loss`][].

    **Returns:** the scalar mean loss.
    """
    check_model(model)
    check_reduction(reduction)
    batch = prepare_batch(batch)
    labels = prepare_labels(labels, batch, label_dropout, null_label)
    eps, t = check_time_args(sde, eps, t)
    w = resolve_weighting(weighting)
    check_model_output(model, jnp.asarray(0.5 * sde.T, batch.dtype), batch, labels)
    keys, drop_keys = example_keys(key, batch.shape[0])
    labels = drop_labels(labels, drop_keys, label_dropout, null_label)
    per = jax.vmap(
        lambda x, k, lab: _single_ism(model, sde, x, k, lab, w, eps, t, reduction)
    )(batch, keys, labels)
    return jnp.mean(per)
