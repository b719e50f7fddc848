r"""Training: an optax optimiser with warm-up and gradient clipping, an exponential
moving average (EMA) of the weights, `equinox.filter_jit` steps, and a loop with
logging, evaluation and atomic checkpoints that resumes exactly.

The loop is generic in the model and the loss: `loss_fn(model, batch, key) -> scalar`
(e.g. `lambda m, x, k: sg.dsm_loss(m, sde, x, k)`). Every random choice of step $s$
is a function of the seed and $s$ alone (the step key is
`jax.random.fold_in(key, s)`, the batch is [`sdegen.data.batch_indices`][] of $s$), so
a run resumed from a checkpoint at step $s$ continues exactly as the uninterrupted run
would have, bit for bit.
"""

import functools
import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

from ._checkpoint import (
    atomic_write_json,
    checkpoint_metadata,
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
)
from ._distributed import (
    _require_mesh,
    check_divisible,
    is_main_process,
    replicate,
    save_checkpoint_main,
    sharded_step,
    to_host,
)
from .data._images import _check_batch_args


class TrainConfig(eqx.Module):
    r"""Hyper-parameters of [`sdegen.train`][].

    - `num_steps`: total number of optimiser steps.
    - `batch_size`: examples per step.
    - `lr`: peak learning rate of Adam(W).
    - `warmup`: steps of linear warm-up from 0 to `lr` (0: none); constant after.
    - `grad_clip`: clip the global gradient norm to this value (`None`: no clipping).
    - `weight_decay`: decoupled weight decay (AdamW) when > 0.
    - `ema_decay`: $\beta$ in $\bar\theta \leftarrow \beta\bar\theta +
      (1 - \beta)\theta$, applied after every step.
    - `seed`: fixes the step keys and the data order.
    - `log_every`: steps between progress/loss reports.
    - `eval_every`: steps between calls of the evaluation function (`None`: never).
    - `ckpt_every`: steps between checkpoints (`None`: only at the end).
    - `keep_checkpoints`: how many checkpoint files to keep (oldest deleted first).
    """

    num_steps: int = 10_000
    batch_size: int = 128
    lr: float = 3e-4
    warmup: int = 100
    grad_clip: float | None = 1.0
    weight_decay: float = 0.0
    ema_decay: float = 0.999
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

        _int("num_steps", self.num_steps, 0)
        _int("batch_size", self.batch_size, 1)
        _int("warmup", self.warmup, 0)
        _int("seed", self.seed, 0)
        _int("log_every", self.log_every, 1)
        _int("eval_every", self.eval_every, 1, optional=True)
        _int("ckpt_every", self.ckpt_every, 1, optional=True)
        _int("keep_checkpoints", self.keep_checkpoints, 1)
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"`lr` must be finite and > 0, got {self.lr!r}.")
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
        if not (0 <= self.ema_decay < 1):
            raise ValueError(f"`ema_decay` must be in [0, 1), got {self.ema_decay!r}.")

    def to_dict(self) -> dict[str, Any]:
        """The hyper-parameters as a JSON-serialisable dict."""
        return {f: getattr(self, f) for f in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Inverse of `to_dict`; unknown keys raise `ValueError`."""
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"Unknown TrainConfig fields: {sorted(unknown)}.")
        return cls(**d)


# Hyper-parameters that may change when a run is resumed (they do not change the
# trajectory of the parameters).
_RESUMABLE = ("num_steps", "log_every", "eval_every", "ckpt_every", "keep_checkpoints")


class TrainState(eqx.Module):
    """Everything that defines a run at a step: the model, its EMA, the optimiser
    state, the number of steps done, and the loss of every step done."""

    model: Any
    ema_model: Any
    opt_state: Any
    step: int
    losses: np.ndarray
    """Float64 array of shape `(step,)`: the training loss of each step."""


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    r"""The optax optimiser of `cfg`: `clip_by_global_norm(grad_clip)` (if set), then
    Adam (AdamW when `weight_decay > 0`) with learning rate
    $\eta_s = \eta\,\min(1, s / \text{warmup})$ (Kingma & Ba 2015; Loshchilov & Hutter
    2019). The same settings give the same (cached) object, so jitted steps built on
    it are compiled once."""
    return _optimizer(float(cfg.lr), int(cfg.warmup), cfg.grad_clip,
                      float(cfg.weight_decay))  # fmt: skip


@functools.lru_cache(maxsize=64)
def _optimizer(lr, warmup, grad_clip, weight_decay) -> optax.GradientTransformation:
    cfg = TrainConfig(lr=lr, warmup=warmup, grad_clip=grad_clip,
                      weight_decay=weight_decay)  # fmt: skip
    if cfg.warmup > 0:
        lr = optax.linear_schedule(0.0, cfg.lr, cfg.warmup)
    else:
        lr = cfg.lr
    if cfg.weight_decay > 0:
        opt = optax.adamw(lr, weight_decay=cfg.weight_decay)
    else:
        opt = optax.adam(lr)
    if cfg.grad_clip is not None:
        opt = optax.chain(optax.clip_by_global_norm(cfg.grad_clip), opt)
    return opt


def ema_update(ema_model: Any, model: Any, decay: float) -> Any:
    r"""$\bar\theta \leftarrow \beta\,\bar\theta + (1 - \beta)\,\theta$ on the inexact
    array leaves (weights); everything else is taken from `model`."""
    params = eqx.filter(model, eqx.is_inexact_array)
    ema_params, _ = eqx.partition(ema_model, eqx.is_inexact_array)
    _, static = eqx.partition(model, eqx.is_inexact_array)
    new = jax.tree_util.tree_map(
        lambda e, p: (decay * e + (1 - decay) * p).astype(p.dtype), ema_params, params
    )
    return eqx.combine(new, static)


def make_step(
    loss_fn: Callable[[Any, Any, Any], Any],
    optimizer: optax.GradientTransformation,
    ema_decay: float | None = None,
) -> Callable:
    r"""One jitted training step.

    **Arguments:**

    - `loss_fn`: `loss_fn(model, batch, key) -> scalar`, differentiated with respect
      to the model's inexact arrays (`equinox.filter_value_and_grad`).
    - `optimizer`: an optax gradient transformation, e.g. [`sdegen.make_optimizer`][].
    - `ema_decay`: update the EMA model with this decay (`None`: the EMA is returned
      unchanged).

    **Returns:** `step(model, ema_model, opt_state, batch, key) -> (model, ema_model,
    opt_state, loss)`, calling an `equinox.filter_jit` function. The buffers of the
    input `model`, `ema_model` and `opt_state` are donated (reused for the outputs,
    which halves the memory on accelerators): rebind all three to the outputs and do
    not use the inputs again. `batch` and `key` are not donated. An array passed
    twice (e.g. `step(model, model, ...)`, the EMA starting as the model itself) is
    copied before the call, since XLA cannot donate one buffer twice.
    """

    unchecked = _unchecked_step(loss_fn, optimizer, ema_decay)

    def step(model, ema_model, opt_state, batch, key):
        model, ema_model, opt_state = _unalias((model, ema_model, opt_state))
        return unchecked(model, ema_model, opt_state, batch, key)

    return step


def _unchecked_step(loss_fn, optimizer, ema_decay) -> Callable:
    # `make_step` without the aliasing check, for `train`, whose model, EMA and
    # optimiser state never share buffers (fresh copies, then the step's outputs).
    def step(model, ema_model, opt_state, batch, key):
        return _step((batch, key), model, ema_model, opt_state, loss_fn, optimizer,
                     ema_decay)  # fmt: skip

    return step


def _sharded_train_step(loss_fn, optimizer, ema_decay, mesh) -> Callable:
    try:
        return _cached_sharded_step(loss_fn, optimizer, ema_decay, mesh)
    except TypeError:  # an unhashable loss (e.g. a module holding arrays)
        return _new_sharded_step(loss_fn, optimizer, ema_decay, mesh)


def _new_sharded_step(loss_fn, optimizer, ema_decay, mesh) -> Callable:
    # The donation of the inner (jitted) step is ignored inside the outer jit of
    # `sharded_step`, hence `donate_argnums` here.
    step = _unchecked_step(loss_fn, optimizer, ema_decay)
    return sharded_step(step, mesh, donate_argnums=(0, 1, 2))


# The same loss, optimiser, decay and mesh give the same jitted step, so repeated
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


@eqx.filter_jit(donate="all-except-first")
def _step(batch_key, model, ema_model, opt_state, loss_fn, optimizer, ema_decay):
    # Module level, with the loss, optimiser and decay as static arguments, so that
    # repeated `train` calls with the same loss and config reuse the compilation.
    batch, key = batch_key
    loss, grads = eqx.filter_value_and_grad(loss_fn)(model, batch, key)
    params = eqx.filter(model, eqx.is_inexact_array)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    model = eqx.apply_updates(model, updates)
    if ema_decay is not None:
        ema_model = ema_update(ema_model, model, ema_decay)
    return model, ema_model, opt_state, loss


def _copy_arrays(tree: Any) -> Any:
    return jax.tree_util.tree_map(
        lambda x: jnp.array(x, copy=True) if eqx.is_array(x) else x, tree
    )


def _data_source(data: Any, batch_size: int, key) -> Callable[[int], Any]:
    """`batch(step)` for an array, an `(x, labels)` pair or a sampler `f(key, n)`."""
    if callable(data):
        draw = jax.jit(lambda k: jnp.asarray(data(k, batch_size)))
        return lambda s: draw(jr.fold_in(key, s))
    labels = None
    if isinstance(data, tuple):
        if len(data) != 2:
            raise ValueError(
                "`data` must be an array, an (x, labels) pair or a sampler "
                f"f(key, n); got a tuple of length {len(data)}."
            )
        data, labels = data
    n, _ = _check_batch_args(data, batch_size, labels)
    data = jnp.asarray(data)
    labels = None if labels is None else jnp.asarray(labels)
    per_epoch = n // batch_size
    cache: dict[int, Any] = {}

    def batch(s: int):
        epoch, i = divmod(s, per_epoch)
        if epoch not in cache:
            cache.clear()
            # The same permutation as `batch_indices`, gathered once per epoch.
            perm = jr.permutation(jr.fold_in(key, epoch), n)[: per_epoch * batch_size]
            xs = data[perm].reshape(per_epoch, batch_size, *data.shape[1:])
            ys = None if labels is None else labels[perm].reshape(per_epoch, batch_size)
            cache[epoch] = (xs, ys)
        xs, ys = cache[epoch]
        return xs[i] if ys is None else (xs[i], ys[i])

    return batch


def _progress(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)


def train(
    model: Any,
    loss_fn: Callable[[Any, Any, Any], Any],
    data: Any,
    cfg: TrainConfig,
    *,
    ckpt_dir: str | os.PathLike | None = None,
    resume: bool = True,
    hparams: dict[str, Any] | None = None,
    eval_fn: Callable[[TrainState], dict[str, Any]] | None = None,
    callback: Callable[[TrainState], None] | None = None,
    progress: bool = True,
    mesh: jax.sharding.Mesh | None = None,
) -> tuple[TrainState, dict[str, Any]]:
    r"""Train `model` by minimising `loss_fn` with [`sdegen.make_optimizer`][]`(cfg)`,
    keeping an EMA of the weights.

    Step $s$ (from 0) uses the key `fold_in(fold_in(key(seed), 0), s)` and the batch
    `data` gives for step $s$: for an array, the slice
    [`sdegen.data.batch_indices`][]`(fold_in(key(seed), 1), N, batch_size, s)` of a
    per-epoch permutation; for a sampler `f(key, n)`, `f(fold_in(key(seed) ⋯), n)`. A
    resumed run therefore repeats the uninterrupted one exactly.

    **Arguments:**

    - `model`: an equinox module (the initial weights).
    - `loss_fn`: `loss_fn(model, batch, key) -> scalar`.
    - `data`: an array `(N, ...)`, an `(x, labels)` pair (batches are then pairs), or
      a sampler `f(key, n) -> (n, ...)` drawing fresh data every step.
    - `cfg`: a [`sdegen.TrainConfig`][].
    - `ckpt_dir`: folder for checkpoints (`step_*.ckpt`) and `hparams.json`; `None`
      writes nothing.
    - `resume`: continue from the newest complete checkpoint in `ckpt_dir`. The
      saved hyper-parameters must match `cfg` except for `num_steps`, `log_every`,
      `eval_every`, `ckpt_every` and `keep_checkpoints`.
    - `hparams`: extra JSON-serialisable settings (model, SDE, ...) stored with the
      config in `hparams.json` and in every checkpoint.
    - `eval_fn`: called as `eval_fn(state)` every `cfg.eval_every` steps and at the
      end; returns a dict of metrics, collected in the history.
    - `callback`: called as `callback(state)` after every `cfg.log_every` steps (after
      any checkpoint of that step).
    - `progress`: show a tqdm progress bar with the loss and steps/s.
    - `mesh`: train data-parallel on the devices of this mesh (e.g.
      [`sdegen.make_mesh`][]`()`): every global batch of `cfg.batch_size` examples is
      split over the mesh's data axis, the model, EMA and optimiser state are
      replicated, and the step runs through [`sdegen.sharded_step`][]. The
      trajectory is that of the single-device run up to floating-point summation
      order, and checkpoints resume on any number of devices. With several
      processes (after [`sdegen.distributed_initialize`][]) every process calls
      `train` with the same arguments; process 0 alone writes files. `None`
      (default): the default device.

    **Returns:** `(state, history)`: the final [`sdegen.TrainState`][] (its arrays
    replicated over `mesh` when given) and a dict with `log` (per-log-interval
    records `{step, loss, steps_per_s, num_devices}`), `eval` (records of `eval_fn`),
    `wall_time_s` and `steps_per_s` (of this call, compile included).

    **Raises:** `ValueError` for bad data, a `cfg.batch_size` not divisible by the
    number of devices of `mesh`, or a checkpoint whose hyper-parameters differ;
    [`sdegen.CheckpointError`][] for a damaged checkpoint that cannot be skipped.
    """
    if not isinstance(cfg, TrainConfig):
        raise ValueError(
            f"`cfg` must be a sdegen.TrainConfig, got {type(cfg).__name__}."
        )
    if mesh is not None:
        _require_mesh(mesh)
        # Before anything is written or compiled.
        check_divisible(cfg.batch_size, mesh)
    num_devices = 1 if mesh is None else int(mesh.devices.size)
    root = jr.key(cfg.seed)
    step_root, data_root = jr.fold_in(root, 0), jr.fold_in(root, 1)
    optimizer = make_optimizer(cfg)
    opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
    # Copies, not aliases: the step donates the model's and the EMA's buffers, and
    # the caller's `model` must stay usable.
    model = _copy_arrays(model)
    ema = _copy_arrays(model)
    state = TrainState(model, ema, opt_state, 0, np.zeros((0,), np.float64))
    all_hparams = {"train": cfg.to_dict(), **(hparams or {})}
    history: dict[str, Any] = {"log": [], "eval": []}

    if ckpt_dir is not None:
        ckpt_dir = Path(ckpt_dir)
        if resume and (path := latest_checkpoint(ckpt_dir)) is not None:
            state, history = _resume(path, state, cfg, all_hparams)
        if is_main_process():
            atomic_write_json(ckpt_dir / "hparams.json", all_hparams)

    # Every process draws the same global batch (`_data_source` depends only on the
    # seed and the step), as `shard_batch` expects.
    batch_at = _data_source(data, cfg.batch_size, data_root)
    model, ema, opt_state = state.model, state.ema_model, state.opt_state
    if mesh is None:
        step_fn = _unchecked_step(loss_fn, optimizer, cfg.ema_decay)
    else:
        step_fn = _sharded_train_step(loss_fn, optimizer, cfg.ema_decay, mesh)
        model, ema, opt_state = replicate((model, ema, opt_state), mesh)
    start = state.step
    losses = list(state.losses)
    pending: list[Any] = []
    bar = _progress(cfg.num_steps, min(start, cfg.num_steps), progress)
    t_start = time.perf_counter()
    t_log, s_log = t_start, start

    def snapshot(s):
        # `to_host`, not `device_get`: replicated losses on several hosts.
        losses.extend(np.asarray(to_host(pending), np.float64).tolist())
        pending.clear()
        return TrainState(model, ema, opt_state, s, np.asarray(losses, np.float64))

    try:
        for s in range(start, cfg.num_steps):
            batch = batch_at(s)
            model, ema, opt_state, loss = step_fn(
                model, ema, opt_state, batch, jr.fold_in(step_root, s)
            )
            pending.append(loss)
            done = s + 1
            last = done == cfg.num_steps
            is_log = done % cfg.log_every == 0 or last
            is_ckpt = ckpt_dir is not None and (
                last or (cfg.ckpt_every is not None and done % cfg.ckpt_every == 0)
            )
            is_eval = eval_fn is not None and (
                last or (cfg.eval_every is not None and done % cfg.eval_every == 0)
            )
            if not (is_log or is_ckpt or is_eval):
                continue
            state = snapshot(done)
            if not np.isfinite(state.losses[-1]):
                raise FloatingPointError(
                    f"The training loss became non-finite ({state.losses[-1]}) at "
                    f"step {done}; lower `lr` or set `grad_clip`."
                )
            if is_eval:
                metrics = dict(eval_fn(state))
                history["eval"].append({"step": done, **metrics})
            if is_log:
                now = time.perf_counter()
                rate = (done - s_log) / max(now - t_log, 1e-12)
                mean = float(np.mean(state.losses[s_log:done]))
                history["log"].append({"step": done, "loss": mean, "steps_per_s": rate,
                                       "num_devices": num_devices})  # fmt: skip
                t_log, s_log = now, done
                if bar is not None:
                    bar.update(done - bar.n)
                    bar.set_postfix(loss=f"{mean:.4g}", steps_s=f"{rate:.1f}")
            if is_ckpt:
                _save(ckpt_dir, state, all_hparams, history, cfg.keep_checkpoints)
            if is_log and callback is not None:
                callback(state)
    finally:
        if bar is not None:
            bar.close()
    state = snapshot(max(start, cfg.num_steps))
    wall = time.perf_counter() - t_start
    history["wall_time_s"] = wall
    history["steps_per_s"] = (state.step - start) / wall if wall > 0 else 0.0
    return state, history


def _save(ckpt_dir: Path, state: TrainState, hparams, history, keep: int) -> None:
    extra = {"log": history["log"], "eval": history["eval"]}
    # Every process gathers the arrays; process 0 writes the file (and the others
    # wait for it).
    save_checkpoint_main(checkpoint_path(ckpt_dir, state.step), state, hparams,
                         step=state.step, extra=extra)  # fmt: skip
    if is_main_process():
        for old in list_checkpoints(ckpt_dir)[:-keep]:
            old.unlink(missing_ok=True)


def _resume(path: Path, like: TrainState, cfg: TrainConfig, hparams):
    meta = checkpoint_metadata(path)
    saved = meta.get("hparams", {})
    saved_cfg = saved.get("train", {})
    diffs = [
        f"{k}: {saved_cfg.get(k)!r} -> {v!r}"
        for k, v in cfg.to_dict().items()
        if k not in _RESUMABLE and saved_cfg.get(k) != v
    ]
    diffs += [
        f"{k}: {saved.get(k)!r} -> {v!r}"
        for k, v in hparams.items()
        if k != "train" and _jsonable(saved.get(k)) != _jsonable(v)
    ]
    if diffs:
        raise ValueError(
            f"Cannot resume from {str(path)!r}: its hyper-parameters differ "
            f"({'; '.join(diffs)}). Pass resume=False or use another ckpt_dir."
        )
    n = int(meta["step"])
    like = TrainState(like.model, like.ema_model, like.opt_state, n,
                      np.zeros((n,), np.float64))  # fmt: skip
    state = load_checkpoint(path, like)
    extra = meta.get("extra", {})
    history = {"log": list(extra.get("log", [])), "eval": list(extra.get("eval", []))}
    return state, history


def _jsonable(x):
    import json

    from ._checkpoint import _json_default

    return json.loads(json.dumps(x, sort_keys=True, default=_json_default))


def iterate_batches(data: Any, batch_size: int, seed: int = 0) -> Iterator[Any]:
    """The batches [`sdegen.train`][] uses with `seed`, in order (for inspection)."""
    source = _data_source(data, batch_size, jr.fold_in(jr.key(seed), 1))
    s = 0
    while True:
        yield source(s)
        s += 1
