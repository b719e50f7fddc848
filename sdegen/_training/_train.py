r"""Training: an optax optimiser (by default Adam with warm-up, cosine decay and
gradient clipping), an exponential moving average (EMA) of the weights with a
warm-up, `equinox.filter_jit` steps, and a loop with logs, evaluation and atomic
checkpoints that resumes exactly.

The loop is generic in the model and the loss: `loss_fn(model, batch, key) -> scalar`
(e.g. `lambda m, x, k: sg.dsm_loss(m, sde, x, k)`). Every random choice of step $s$
is a function of the seed and $s$ alone (the step key is
`jax.random.fold_in(key, s)`, the batch is [`sdegen.data.batch_indices`][] of $s$), so
a run resumed from a checkpoint at step $s$ continues exactly as the uninterrupted run
would have, bit for bit.
"""

import functools
import math
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

from .._core._checks import check_choice
from .._runs._distributed import sharded_step
from ._batches import iterate_batches as iterate_batches
from ._ema import EMAS, AbstractEMA, ConstantEMA, ema_update, make_ema
from ._optim import SCHEDULES


class TrainConfig(eqx.Module):
    r"""Hyper-parameters of [`sdegen.train`][].

    - `num_steps`: total number of optimiser steps $S \ge 1$.
    - `batch_size`: examples per step.
    - `lr`: peak learning rate $\eta$ of Adam(W).
    - `warmup`: steps $W$ of linear warm-up from 0 to `lr`.
    - `schedule`: `"cosine"` (default: after the warm-up, a half cosine from `lr` to
      `final_lr_ratio * lr` at step $S$) or `"constant"` (`lr` after the warm-up);
      see [`sdegen.make_schedule`][].
    - `final_lr_ratio`: the cosine schedule's final rate as a fraction of `lr`.
    - `grad_clip`: clip the global gradient norm to this value (`None`: no clipping).
    - `weight_decay`: decoupled weight decay (AdamW) when > 0.
    - `ema`: the EMA schedule: `"warmup"` (default; $\beta_s = \min(\beta,
      (1 + s)/(10 + s))$, [`sdegen.WarmupEMA`][]), `"power"`
      ([`sdegen.PowerEMA`][] with $\gamma$ = `ema_gamma`) or `"constant"`
      ($\beta_s = \beta$).
    - `ema_decay`: $\beta$ (the largest decay of `"warmup"`).
    - `ema_gamma`: $\gamma$ of `"power"`.
    - `seed`: fixes the step keys and the data order.
    - `log_every`: steps between log records (loss, EMA loss, learning rate, gradient
      norm, steps/s).
    - `eval_every`: steps between calls of the evaluation function (`None`: at the
      end only).
    - `ckpt_every`: steps between checkpoints (`None`: only at the end).
    - `keep_checkpoints`: how many checkpoint files to keep (oldest deleted first).
    """

    num_steps: int = 10_000
    batch_size: int = 128
    lr: float = 1e-3
    warmup: int = 200
    schedule: str = "cosine"
    final_lr_ratio: float = 0.0
    grad_clip: float | None = 1.0
    weight_decay: float = 0.0
    ema: str = "warmup"
    ema_decay: float = 0.999
    ema_gamma: float = 6.94
    seed: int = 0
    log_every: int = 100
    eval_every: int | None = None
    ckpt_every: int | None = 1000
    keep_checkpoints: int = 3

    def __check_init__(self):
        def _int(name, v, lo, optional=False):
            if optional and v is None:
                return
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < lo:
                what = f"an int >= {lo}" + (" or None" if optional else "")
                raise ValueError(f"`{name}` must be {what}, got {v!r}.")

        _int("num_steps", self.num_steps, 1)  # 0 steps would return the untrained model
        _int("batch_size", self.batch_size, 1)
        _int("warmup", self.warmup, 0)
        _int("seed", self.seed, 0)
        _int("log_every", self.log_every, 1)
        _int("eval_every", self.eval_every, 1, optional=True)
        _int("ckpt_every", self.ckpt_every, 1, optional=True)
        _int("keep_checkpoints", self.keep_checkpoints, 1)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("ema", self.ema, EMAS)
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"`lr` must be finite and > 0, got {self.lr!r}.")
        if not (0 <= self.final_lr_ratio <= 1):
            raise ValueError(
                f"`final_lr_ratio` must be in [0, 1], got {self.final_lr_ratio!r}."
            )
        if self.grad_clip is not None and not (
            math.isfinite(self.grad_clip) and self.grad_clip > 0
        ):
            raise ValueError(
                f"`grad_clip` must be finite and > 0 or None, got {self.grad_clip!r}."
            )
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(
                f"`weight_decay` must be finite and >= 0, got {self.weight_decay!r}."
            )
        make_ema(self.ema, self.ema_decay, self.ema_gamma)  # checks decay and gamma

    def to_dict(self) -> dict[str, Any]:
        """The hyper-parameters as a JSON-serialisable dict."""
        return {f: getattr(self, f) for f in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Inverse of `to_dict` (missing keys take their defaults); unknown keys raise
        `ValueError`."""
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"Unknown TrainConfig fields: {sorted(unknown)}.")
        return cls(**d)


# Hyper-parameters that may change when a run is resumed (they do not change the
# trajectory of the parameters). `num_steps` joins them unless the cosine schedule,
# whose length it is, drives the default optimiser.
_RESUMABLE = ("log_every", "eval_every", "ckpt_every", "keep_checkpoints")


class TrainState(eqx.Module):
    """Everything that defines a run at a step: the model, its EMA, the optimiser
    state, the number of steps done, and the loss of every step done."""

    model: Any
    ema_model: Any
    opt_state: Any
    step: int
    losses: np.ndarray
    """Float64 array of shape `(step,)`: the training loss of each step."""


def _as_ema(ema: Any) -> AbstractEMA | None:
    if ema is None or isinstance(ema, AbstractEMA):
        return ema
    return ConstantEMA(float(ema))


def make_step(
    loss_fn: Callable[[Any, Any, Any], Any],
    optimizer: optax.GradientTransformation,
    ema_decay: float | AbstractEMA | None = None,
) -> Callable:
    r"""One jitted training step.

    **Arguments:**

    - `loss_fn`: `loss_fn(model, batch, key) -> scalar`, differentiated with respect
      to the model's inexact arrays (`equinox.filter_value_and_grad`).
    - `optimizer`: any optax gradient transformation, e.g.
      [`sdegen.make_optimizer`][]`(cfg)` or `optax.adamw(1e-3)`.
    - `ema_decay`: a constant decay $\beta$, an EMA schedule
      ([`sdegen.WarmupEMA`][], [`sdegen.PowerEMA`][], ...), or `None` (the EMA is
      returned unchanged).

    **Returns:** `step(model, ema_model, opt_state, batch, key, step=None) -> (model,
    ema_model, opt_state, loss)`. It calls a `jax.jit` step compiled once per
    structure of (`model`, `ema_model`, `opt_state`): the tree and its non-array
    leaves (a new structure, e.g. another activation, compiles anew; inside an outer
    transformation it calls an `equinox.filter_jit` step instead). `step` is
    the number of steps done before this one (an int or an integer array), which a
    scheduled EMA needs. The buffers of the input `model`, `ema_model` and
    `opt_state` are donated (reused for the outputs, which halves the memory on
    accelerators): rebind all three to the outputs and do not use the inputs again.
    `batch` and `key` are not donated. An array passed twice (e.g. `step(model,
    model, ...)`, the EMA starting as the model itself) is copied before the call,
    since XLA cannot donate one buffer twice.
    """
    ema = _as_ema(ema_decay)

    def step(model, ema_model, opt_state, batch, key, step=None):
        if step is None:
            if ema is not None and not isinstance(ema, ConstantEMA):
                raise ValueError(
                    f"The EMA schedule {type(ema).__name__} depends on the step: pass "
                    "`step=` (the number of steps done) to the training step."
                )
            step = 0
        # A NumPy scalar is cheaper to pass than a new `jax.Array` (same program).
        s = np.int32(step) if isinstance(step, int) else jnp.asarray(step, jnp.int32)
        leaves, treedef = jax.tree_util.tree_flatten((model, ema_model, opt_state))
        arrays, static = _split_leaves(leaves)
        fn = None if arrays is None else _compiled_step(loss_fn, optimizer, ema,
                                                        treedef, static)  # fmt: skip
        if fn is None:  # traced (inside an outer transform) or unhashable: the old path
            model, ema_model, opt_state = _unalias((model, ema_model, opt_state))
            out = _step((batch, key, s), model, ema_model, opt_state, loss_fn,
                        optimizer, ema)  # fmt: skip
            return out[0], out[1], out[2], out[3]["loss"]
        if len(set(map(id, arrays))) < len(arrays):  # an array passed twice
            arrays = _unalias(arrays)
        try:
            out, out_static, loss = fn(arrays, batch, key, s)
        except jax.errors.JaxRuntimeError as e:
            # Two distinct array objects on one buffer (rare: `id` cannot see it).
            if "donate the same buffer twice" not in str(e):
                raise
            out, out_static, loss = fn(_unalias(arrays), batch, key, s)
        out_def, out_leaves = out_static.value
        it = iter(out)
        leaves = [next(it) if x is _ARRAY else x for x in out_leaves]
        model, ema_model, opt_state = jax.tree_util.tree_unflatten(out_def, leaves)
        return model, ema_model, opt_state, loss

    return step


# The step of `make_step` without `equinox.filter_jit`'s per-call partition and
# hashing of every argument: the leaves of (model, EMA, optimiser state) are split
# once per call into arrays (donated to a `jax.jit`) and the rest, which with the
# tree structure keys a cache of jitted steps (a new structure compiles a new step).
_ARRAY = object()  # the place of an array leaf in the key of a compiled step
_ARRAY_TYPES = (jax.Array, np.ndarray, np.generic)  # those of `equinox.is_array`


def _split_leaves(leaves: list, traced: bool = False) -> tuple[tuple | None, tuple]:
    """`(arrays, static)`: the array leaves, and the leaves with `_ARRAY` in place
    of each array; `arrays` is None if one is a tracer (unless `traced`)."""
    arrays, static = [], []
    for x in leaves:
        if isinstance(x, _ARRAY_TYPES):
            if not traced and isinstance(x, jax.core.Tracer):
                return None, ()
            arrays.append(x)
            static.append(_ARRAY)
        else:
            static.append(x)
    return tuple(arrays), tuple(static)


class _Static(eqx.Module):
    value: Any = eqx.field(static=True)


def _compiled_step(loss_fn, optimizer, ema, treedef, static) -> Callable | None:
    try:
        return _cached_compiled_step(loss_fn, optimizer, ema, treedef, static)
    except TypeError:  # an unhashable loss, optimiser or static leaf
        return None


@functools.lru_cache(maxsize=32)
def _cached_compiled_step(loss_fn, optimizer, ema, treedef, static) -> Callable:
    def f(arrays, batch, key, s):
        it = iter(arrays)
        leaves = [next(it) if x is _ARRAY else x for x in static]
        model, ema_model, opt_state = jax.tree_util.tree_unflatten(treedef, leaves)
        *out, stats = _step_maths(batch, key, s, model, ema_model, opt_state, loss_fn,
                                  optimizer, ema)  # fmt: skip
        out_leaves, out_def = jax.tree_util.tree_flatten(tuple(out))
        out_arrays, out_static = _split_leaves(out_leaves, traced=True)
        return out_arrays, _Static((out_def, out_static)), stats["loss"]

    return jax.jit(f, donate_argnums=0)


def _step_maths(batch, key, s, model, ema_model, opt_state, loss_fn, optimizer, ema):
    loss, grads = eqx.filter_value_and_grad(loss_fn)(model, batch, key)
    params = eqx.filter(model, eqx.is_inexact_array)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    model = eqx.apply_updates(model, updates)
    if ema is not None:
        ema_model = ema_update(ema_model, model, ema.decay(s))
    stats = {"loss": loss, "grad_norm": optax.tree.norm(grads)}
    return model, ema_model, opt_state, stats


@eqx.filter_jit(donate="all-except-first")
def _step(batch_key_step, model, ema_model, opt_state, loss_fn, optimizer, ema):
    # Module level, with the loss, optimiser and EMA schedule as static arguments, so
    # that repeated `train` calls with the same loss and config reuse the compilation.
    batch, key, s = batch_key_step
    return _step_maths(batch, key, s, model, ema_model, opt_state, loss_fn, optimizer,
                       ema)  # fmt: skip


@eqx.filter_jit(donate="all-except-first")
def _steps(chunk_in, model, ema_model, opt_state, loss_fn, optimizer, ema):
    r"""Steps $s_0, \ldots, s_0 + k - 1$ in one compiled loop: step $s$ uses the key
    `fold_in(step_key, s)` and the batch `pick(chunk, i, s)` ($i = s - s_0$), as
    `train` does step by step. $k$ is traced (a `fori_loop` with a dynamic trip
    count), so one compilation serves every chunk up to `size` steps; the losses and
    gradient norms come back in buffers of `size` entries, the first $k$ filled."""
    pick, chunk, step_key, s0, k, size = chunk_in
    arrays, static = eqx.partition((model, ema_model, opt_state), eqx.is_array)

    def body(i, carry):
        arrays, losses, norms = carry
        m, e, o = eqx.combine(arrays, static)
        s = s0 + i
        m, e, o, stats = _step_maths(pick(chunk, i, s), jr.fold_in(step_key, s), s, m,
                                     e, o, loss_fn, optimizer, ema)  # fmt: skip
        arrays = eqx.filter((m, e, o), eqx.is_array)
        return (arrays, losses.at[i].set(stats["loss"]),
                norms.at[i].set(stats["grad_norm"]))  # fmt: skip

    zeros = jnp.zeros((size,), jnp.result_type(float))
    try:
        arrays, losses, norms = jax.lax.fori_loop(0, k, body, (arrays, zeros, zeros))
    except TypeError as e:
        raise TypeError(
            "A training step changed the dtype or shape of the model, EMA or optimiser "
            "state (e.g. an optimiser whose float64 updates promote float32 "
            "parameters); make the updates keep the parameters' dtypes. "
            f"JAX says: {e}"
        ) from None
    model, ema_model, opt_state = eqx.combine(arrays, static)
    return model, ema_model, opt_state, {"loss": losses, "grad_norm": norms}


def _train_step(loss_fn, optimizer, ema) -> Callable:
    def step(model, ema_model, opt_state, batch, key, s):
        return _step((batch, key, s), model, ema_model, opt_state, loss_fn, optimizer,
                     ema)  # fmt: skip

    return step


def _sharded_train_step(loss_fn, optimizer, ema, mesh) -> Callable:
    try:
        return _cached_sharded_step(loss_fn, optimizer, ema, mesh)
    except TypeError:  # an unhashable loss (e.g. a module holding arrays)
        return _new_sharded_step(loss_fn, optimizer, ema, mesh)


def _new_sharded_step(loss_fn, optimizer, ema, mesh) -> Callable:
    # The donation of the inner (jitted) step is ignored inside the outer jit of
    # `sharded_step`, hence `donate_argnums` here.
    step = _train_step(loss_fn, optimizer, ema)
    return sharded_step(step, mesh, batch_argnums=3, donate_argnums=(0, 1, 2))


# The same loss, optimiser, EMA and mesh give the same jitted step, so repeated
# `train(..., mesh=mesh)` calls (e.g. a resumed run) reuse its compilation.
_cached_sharded_step = functools.lru_cache(maxsize=16)(_new_sharded_step)


def _buffer_id(x: jax.Array) -> int:
    # The device buffer behind a single-device array: two distinct `jax.Array`
    # objects can share it (e.g. after a no-op `jax.device_put`). Arrays on several
    # devices have no single pointer and are compared by identity.
    try:
        return x.unsafe_buffer_pointer()
    except Exception:
        return id(x)


def _unalias(tree: Any) -> Any:
    """Copy every concrete array of `tree` whose device buffer already appeared
    earlier in `tree` (so that each donated buffer is donated once). Tracers (inside
    an outer `jit`, where donation does not apply) are left as they are."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    seen: set[int] = set()
    copied = False
    for i, x in enumerate(leaves):
        if not isinstance(x, jax.Array) or isinstance(x, jax.core.Tracer):
            continue
        buf = _buffer_id(x)
        if buf in seen:
            leaves[i] = jnp.array(x, copy=True)
            copied = True
        else:
            seen.add(buf)
    return jax.tree_util.tree_unflatten(treedef, leaves) if copied else tree


def _copy_arrays(tree: Any) -> Any:
    return jax.tree_util.tree_map(
        lambda x: jnp.array(x, copy=True) if eqx.is_array(x) else x, tree
    )
