"""What every loss shares: the checks of its arguments, the reduction over the entries
of one example, label dropout, and the batch driver that draws one key per example,
`jax.vmap`s the single-example loss and averages over the batch.

All checks run once, when the loss is called or traced; nothing here adds work to the
compiled step (a traced batch is not scanned for NaN: a non-finite loss is reported by
[`sdegen.train`][] at the next log interval).
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Int, Real

from ..._core._checks import (
    as_float_array,
    check_callable,
    check_choice,
    check_eps,
    check_time,
    concrete_float,
    error_if_not_finite,
    staged,
)
from ..._core._misc import is_concrete
from ..._processes._sde import check_sde


REDUCTIONS = ("sum", "mean")
"""Reductions of a loss over the entries of one example."""

Labels = Int[ArrayLike, " num_labels"] | None
RealBatch = Real[ArrayLike, "batch *data"]


def check_model(model: Any, name: str = "model") -> None:
    check_callable(name, model, f"{name}(t, x) -> Array")


def check_reduction(reduction: Any) -> str:
    return check_choice("reduction", reduction, REDUCTIONS)


def reduce(sq: Array, reduction: str) -> Array:
    """Sum (or mean) of the entries of one example's squared residual."""
    return jnp.sum(sq) if reduction == "sum" else jnp.mean(sq)


def check_time_args(sde: Any, eps: Any, t: Any) -> tuple[Any, Any]:
    """`(eps, t)`, checked (staged when traced: use the returned values)."""
    check_sde(sde)
    eps = check_eps(sde, eps)
    if t is not None:
        v = concrete_float("t", t)
        if v is None:
            ok = (t > 0) & (t <= sde.T)
            return eps, staged(t, ~ok, f"`t` must be in (0, T] = (0, {sde.T}].")
        check_time(sde, t)
        if v <= 0:
            raise ValueError(f"`t` must be in (0, T] = (0, {sde.T}], got {v}.")
    return eps, t


def prepare_batch(batch: Any) -> Array:
    batch = as_float_array(batch, "batch")
    if batch.ndim < 2:
        raise ValueError(
            "`batch` must have shape (batch, *data) with at least one data axis, got "
            f"shape {batch.shape}; wrap a single example as batch[None]."
        )
    if batch.shape[0] == 0:
        raise ValueError("`batch` must hold at least one example, got an empty batch.")
    if is_concrete(batch):
        error_if_not_finite(batch, "batch")
    return batch


def prepare_labels(labels: Any, batch: Array, label_dropout: Any, null_label: Any):
    """Check `labels` against `batch` and the label-dropout arguments."""
    p = concrete_float("label_dropout", label_dropout)
    if p is not None and not 0 <= p <= 1:
        raise ValueError(f"`label_dropout` must be in [0, 1], got {p}.")
    if labels is None:
        if p is not None and p > 0:
            raise ValueError("`label_dropout` > 0 needs `labels`.")
        return None
    labels = jnp.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"`labels` must be integers, got dtype {labels.dtype}.")
    if labels.shape != batch.shape[:1]:
        raise ValueError(
            f"`labels` must have shape ({batch.shape[0]},) to match `batch`, got shape "
            f"{labels.shape}."
        )
    if (p is None or p > 0) and null_label is None:
        raise ValueError(
            "`label_dropout` > 0 needs `null_label`, the label that stands for 'no "
            "class' (for sdegen.nn networks: `num_classes`, i.e. "
            "`LabelEmbedding.null_label`)."
        )
    if null_label is not None:
        if isinstance(null_label, bool) or int(null_label) != null_label:
            raise ValueError(f"`null_label` must be an int, got {null_label!r}.")
    return labels


def call(model: Callable, t: Any, x: Array, label: Any) -> Array:
    if label is None:
        return model(t, x)
    return model(t, x, label=label)


def check_model_output(model, t, batch, labels, name: str = "model") -> None:
    """Trace the model once on one example (no compilation, no run-time cost) and check
    that it returns the data's shape."""
    lab = None if labels is None else labels[0]
    out = jax.eval_shape(lambda tt, xx, ll: call(model, tt, xx, ll), t, batch[0], lab)
    if not hasattr(out, "shape") or tuple(out.shape) != tuple(batch.shape[1:]):
        got = getattr(out, "shape", type(out).__name__)
        raise ValueError(
            f"`{name}` must return an array of the data's shape {tuple(batch.shape[1:])}"
            f" for one example (model(t, x) is unbatched; the batch is vmapped), got "
            f"{got}."
        )


def example_keys(key: Any, n: int) -> tuple[Array, Array]:
    """One key per example (`jax.random.split(key, n)`), and from each the key of its
    label dropout (`fold_in(k, 1)`), so that an example's loss is that of the
    single-example function called with its own key."""
    keys = jr.split(key, n)
    return keys, jax.vmap(lambda k: jr.fold_in(k, 1))(keys)


def drop_labels(labels, drop_keys, label_dropout, null_label):
    """Replace each label by `null_label` with probability `label_dropout`, for
    classifier-free guidance training (Ho & Salimans 2022, Algorithm 1)."""
    if labels is None:
        return None
    p = concrete_float("label_dropout", label_dropout)
    if p == 0:
        return labels
    drop = jax.vmap(lambda k: jr.bernoulli(k, label_dropout))(drop_keys)
    return jnp.where(drop, jnp.asarray(null_label, labels.dtype), labels)
