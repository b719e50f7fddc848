r"""The training loop [`sdegen.train`][]: steps, logs, evaluation, checkpoints, resume."""

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

from .._runs._checkpoint import (
    _json_default,
    atomic_write_json,
    checkpoint_metadata,
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    remove_stray_temp_files,
)
from .._runs._distributed import (
    _require_mesh,
    check_divisible,
    is_main_process,
    replicate,
    save_checkpoint_main,
    to_host,
)
from .._runs._logging import LogFn, MetricsLogger, Progress
from ._batches import checked_data, chunked_source, data_source
from ._ema import make_ema
from ._optim import learning_rate_of, make_optimizer, make_schedule
from ._pace import Interrupted, Pace, StopOnInterrupt
from ._train import (
    _RESUMABLE,
    TrainConfig,
    TrainState,
    _copy_arrays,
    _sharded_train_step,
    _steps,
)


def train(
    model: Any,
    loss_fn: Callable[[Any, Any, Any], Any],
    data: Any,
    cfg: TrainConfig,
    *,
    optimizer: Any = None,
    ckpt_dir: str | os.PathLike | None = None,
    log_dir: str | os.PathLike | None = None,
    tensorboard: bool | None = None,
    resume: bool = True,
    hparams: dict[str, Any] | None = None,
    eval_fn: Callable[[TrainState], dict[str, Any]] | None = None,
    callback: Callable[[TrainState], None] | None = None,
    on_log: LogFn | None = None,
    ema_loss: bool = True,
    progress: bool | str = True,
    mesh: jax.sharding.Mesh | None = None,
) -> tuple[TrainState, dict[str, Any]]:
    r"""Train `model` by minimising `loss_fn`, keeping an EMA of the weights.

    Step $s$ (from 0) uses the key `fold_in(fold_in(key(seed), 0), s)` and the batch
    `data` gives for step $s$: for an array or a [`sdegen.data.DatasetSource`][], the
    rows [`sdegen.data.batch_indices`][]`(fold_in(key(seed), 1), N, batch_size, s)` of
    a per-epoch permutation; for a sampler `f(key, n)`, `f(fold_in(key(seed) ⋯), n)`.
    The EMA decay of step $s$ is that of `cfg.ema` at $s$. A resumed run therefore
    repeats the uninterrupted one exactly.

    On one device the steps run in chunks, each one compiled loop (one dispatch for up
    to 1024 steps, not one per step, which makes small models several times faster),
    sized by time: a chunk ends at the next log record, checkpoint or evaluation and
    takes at most about half a second (measured from the step time), so the progress
    bar moves and Ctrl-C is answered that often. A sampler draws its batches inside the
    loop; array and `DatasetSource` batches are stacked for it (on the device or read
    on the host, at most 8 MiB per call), so both give the same run bit for bit. With
    `mesh`, every step is one call of [`sdegen.sharded_step`][].

    **Ctrl-C** (SIGINT, in the main thread of a one-process run) stops training after
    the running chunk: the checkpoint of the step reached is written to `ckpt_dir` and
    `KeyboardInterrupt` is raised, naming it (a second Ctrl-C interrupts at once);
    `train` with `resume=True` continues from it. A run whose steps will take over 10
    minutes on a CPU says so after its first second of steps, with what to change.

    Every `cfg.log_every` steps a record `{step, loss, ema_loss, lr, grad_norm,
    steps_per_s, num_devices}` is made: `loss` and `grad_norm` are means over the
    interval; `steps_per_s` is the steps' own rate over the interval (evaluations,
    checkpoints and the compilation left out); `ema_loss` is `loss_fn` of the EMA model on a fixed batch (the batch of
    step 0) and key (one forward pass per record, `ema_loss=False` to skip it); `lr`
    is the learning rate of the last step (of an `optax.inject_hyperparams` optimiser
    when `optimizer` is given, else left out). Records go to `history["log"]`, to
    `log_dir/metrics.jsonl`, to TensorBoard, to `on_log`, and to the screen.

    **Arguments:**

    - `model`: an equinox module (the initial weights).
    - `loss_fn`: `loss_fn(model, batch, key) -> scalar`.
    - `data`: an array `(N, ...)`, an `(x, labels)` pair (batches are then pairs), a
      [`sdegen.data.DatasetSource`][] (batches streamed from a `datasets.Dataset`,
      which is never loaded whole), or a sampler `f(key, n) -> (n, ...)` drawing fresh
      data every step.
    - `cfg`: a [`sdegen.TrainConfig`][].
    - `optimizer`: any optax gradient transformation to use instead of
      [`sdegen.make_optimizer`][]`(cfg)` (then `cfg.lr`, `warmup`, `schedule`,
      `final_lr_ratio`, `grad_clip` and `weight_decay` are not used; wrap it in
      `optax.inject_hyperparams` to have its learning rate logged). Resuming with
      another optimiser than the run's is the caller's responsibility.
    - `ckpt_dir`: folder for checkpoints (`step_*.ckpt`) and `hparams.json`; `None`
      writes nothing.
    - `log_dir`: folder for `metrics.jsonl` and TensorBoard event files (`None`: no
      log files).
    - `tensorboard`: write TensorBoard events to `log_dir` (`None`: when
      `tensorboardX` is installed; `True` raises when it is not).
    - `resume`: continue from the newest complete checkpoint in `ckpt_dir`. The
      saved hyper-parameters must match `cfg` except for `log_every`, `eval_every`,
      `ckpt_every`, `keep_checkpoints` and, unless the default optimiser's cosine
      schedule depends on it, `num_steps`.
    - `hparams`: extra JSON-serialisable settings (model, SDE, data transform, ...)
      stored with the config in `hparams.json` and in every checkpoint.
    - `eval_fn`: called as `eval_fn(state)` every `cfg.eval_every` steps and at the
      end; returns a dict of metrics, collected in the history and logged (prefix
      `eval/` in TensorBoard).
    - `callback`: called as `callback(state)` after every log record.
    - `on_log`: called as `on_log(record)` with every log record.
    - `ema_loss`: log the EMA model's loss on a fixed batch.
    - `progress`: `True`: a tqdm bar (it reads "compiling" until the first step has
      returned); `"lines"`: one line per log record on stderr; `False`: nothing on
      screen.
    - `mesh`: train data-parallel on the devices of this mesh (e.g.
      [`sdegen.make_mesh`][]`()`): every global batch of `cfg.batch_size` examples is
      split over the mesh's data axis, the model, EMA and optimiser state are
      replicated, and the step runs through [`sdegen.sharded_step`][]. The
      trajectory is that of the single-device run up to floating-point summation
      order, and checkpoints resume on any number of devices. With several
      processes (after [`sdegen.distributed_initialize`][]) every process calls
      `train` with the same arguments; process 0 alone writes files.

    **Returns:** `(state, history)`: the final [`sdegen.TrainState`][] (its arrays
    replicated over `mesh` when given) and a dict with `log` (the log records),
    `eval` (records of `eval_fn`), `compile_s` (wall time of the first step of this
    call), `wall_time_s` and `steps_per_s` (of this call, compile included) and
    `steady_steps_per_s` (the steps' own rate, as in the records, over the call;
    `None` when only the compiled first step ran).

    **Raises:** `ValueError` for bad data, a `cfg.batch_size` not divisible by the
    number of devices of `mesh`, or a checkpoint whose hyper-parameters differ;
    [`sdegen.CheckpointError`][] for a damaged checkpoint that cannot be skipped;
    `FloatingPointError` when the loss becomes non-finite.
    """
    if not isinstance(cfg, TrainConfig):
        raise ValueError(
            f"`cfg` must be a sdegen.TrainConfig, got {type(cfg).__name__}."
        )
    if optimizer is not None and not isinstance(optimizer, optax.GradientTransformation):
        raise ValueError(
            "`optimizer` must be an optax.GradientTransformation (e.g. "
            f"optax.adamw(1e-3)), got {type(optimizer).__name__}."
        )
    if mesh is not None:
        _require_mesh(mesh)
        check_divisible(cfg.batch_size, mesh)  # before anything is written or compiled
    num_devices = 1 if mesh is None else int(mesh.devices.size)
    root = jr.key(cfg.seed)
    step_root, data_root = jr.fold_in(root, 0), jr.fold_in(root, 1)
    checked = checked_data(data, cfg.batch_size)
    batch_at = data_source(checked, cfg.batch_size, data_root)
    custom = optimizer is not None
    schedule = None if custom else make_schedule(cfg)
    optimizer = optimizer if custom else make_optimizer(cfg)
    ema = make_ema(cfg.ema, cfg.ema_decay, cfg.ema_gamma)
    opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
    # Copies, not aliases: the step donates the model's and the EMA's buffers, and
    # the caller's `model` must stay usable.
    model = _copy_arrays(model)
    state = TrainState(model, _copy_arrays(model), opt_state, 0,
                       np.zeros((0,), np.float64))  # fmt: skip
    all_hparams = {"train": cfg.to_dict(), "optimizer": "custom" if custom else "cfg",
                   **(hparams or {})}  # fmt: skip
    history: dict[str, Any] = {"log": [], "eval": []}
    main = is_main_process()
    if ckpt_dir is not None:
        ckpt_dir = Path(ckpt_dir)
        if main:
            remove_stray_temp_files(ckpt_dir)
        if resume and (path := latest_checkpoint(ckpt_dir)) is not None:
            state, history = _resume(path, state, cfg, all_hparams, custom)
        if main:
            atomic_write_json(ckpt_dir / "hparams.json", all_hparams)
    start = state.step
    logger = None
    if log_dir is not None and main:
        logger = MetricsLogger(log_dir, tensorboard=tensorboard, start_step=start)

    model, ema_model, opt_state = state.model, state.ema_model, state.opt_state
    if mesh is None:
        run_steps, max_chunk = _chunk_runner(loss_fn, optimizer, ema, checked,
                                             cfg.batch_size, data_root, step_root)  # fmt: skip
    else:
        run_steps = _step_runner(_sharded_train_step(loss_fn, optimizer, ema, mesh),
                                 batch_at, step_root)  # fmt: skip
        max_chunk = cfg.num_steps
        model, ema_model, opt_state = replicate((model, ema_model, opt_state), mesh)
    ema_eval = _ema_evaluator(loss_fn, batch_at, root, mesh) if ema_loss else None
    losses = list(state.losses)
    pending: list[Any] = []  # (stats, number of steps) of the chunks not yet read
    screen = Progress(progress, cfg.num_steps, min(start, cfg.num_steps))
    t_start = time.perf_counter()
    t_log, s_log = t_start, start
    compile_s = None

    def snapshot(s):
        # `to_host`, not `device_get`: replicated values on several hosts.
        norms = []
        for stats, k in to_host(pending):
            losses.extend(float(v) for v in np.ravel(stats["loss"])[:k])
            norms.extend(float(v) for v in np.ravel(stats["grad_norm"])[:k])
        pending.clear()
        state = TrainState(model, ema_model, opt_state, s,
                           np.asarray(losses, np.float64))  # fmt: skip
        return state, norms

    events = [cfg.log_every]
    if ckpt_dir is not None and cfg.ckpt_every is not None:
        events.append(cfg.ckpt_every)
    if eval_fn is not None and cfg.eval_every is not None:
        events.append(cfg.eval_every)
    pace = Pace(max_chunk)
    stop = StopOnInterrupt()

    def interrupted(state, saved: bool):
        if ckpt_dir is not None and not saved:
            _save(ckpt_dir, state, all_hparams, history, cfg.keep_checkpoints)
        path = None if ckpt_dir is None else checkpoint_path(ckpt_dir, state.step)
        return Interrupted(state.step, path)

    try:
        s = start
        while s < cfg.num_steps:
            # The steps up to the next log, checkpoint, evaluation or the end, at most
            # about `_CHUNK_SECONDS` of them, run in one call (the first step alone:
            # its time is the compilation's).
            done = min([cfg.num_steps, s + pace.size(), *((s // e + 1) * e for e in events)])
            t0 = time.perf_counter()
            model, ema_model, opt_state, stats = run_steps(model, ema_model, opt_state, s,
                                                           done - s)  # fmt: skip
            pending.append((stats, done - s))
            jax.block_until_ready(stats)  # the bar, the chunk's timing and Ctrl-C
            k, s, seconds = done - s, done, time.perf_counter() - t0
            if compile_s is None:
                compile_s = time.perf_counter() - t_start
                pace.first()
                screen.compiled(compile_s, done)
            else:
                pace.add(k, seconds)
            screen.advance(done)
            if (eta := pace.long_run(cfg.num_steps - done)) is not None:
                screen.note(eta)
            last = done == cfg.num_steps
            is_log = done % cfg.log_every == 0 or last
            is_ckpt = ckpt_dir is not None and (
                last or (cfg.ckpt_every is not None and done % cfg.ckpt_every == 0)
            )
            is_eval = eval_fn is not None and (
                last or (cfg.eval_every is not None and done % cfg.eval_every == 0)
            )
            if not (is_log or is_ckpt or is_eval):
                if stop.requested:
                    raise interrupted(snapshot(done)[0], saved=False)
                continue
            state, norms = snapshot(done)
            if not np.isfinite(state.losses[-1]):
                raise FloatingPointError(
                    f"The training loss became non-finite ({state.losses[-1]}) at "
                    f"step {done}; lower `lr` or set `grad_clip`."
                )
            if is_eval:
                metrics = dict(eval_fn(state))
                history["eval"].append({"step": done, **metrics})
                if logger is not None:
                    logger.write({"step": done, **_scalars(metrics)}, prefix="eval")
            if is_log:
                now = time.perf_counter()
                rec = {"step": done,
                       "loss": float(np.mean(state.losses[s_log:done])),
                       "grad_norm": float(np.mean(norms)) if norms else float("nan")}  # fmt: skip
                if ema_eval is not None:
                    rec["ema_loss"] = ema_eval(ema_model)
                lr = (learning_rate_of(opt_state) if custom
                      else float(schedule(done - 1)))  # fmt: skip
                if lr is not None:
                    rec["lr"] = lr
                # the steps' own time: evaluations, checkpoints and the compilation
                # left out (the compilation counts only when nothing else ran)
                rec["steps_per_s"] = pace.interval_rate(done - s_log, now - t_log)
                rec["num_devices"] = num_devices
                history["log"].append(rec)
                t_log, s_log = now, done
                screen.log(rec)
                if logger is not None:
                    logger.write(rec)
                if on_log is not None:
                    on_log(rec)
            if is_ckpt:
                _save(ckpt_dir, state, all_hparams, history, cfg.keep_checkpoints)
            if is_log and callback is not None:
                callback(state)
            if stop.requested and not last:
                raise interrupted(state, saved=is_ckpt)
    finally:
        stop.restore()
        screen.close()
        if logger is not None:
            logger.close()
    state, _ = snapshot(max(start, cfg.num_steps))
    wall = time.perf_counter() - t_start
    history["compile_s"] = compile_s
    history["wall_time_s"] = wall
    history["steps_per_s"] = (state.step - start) / wall if wall > 0 else 0.0
    history["steady_steps_per_s"] = pace.steady_rate()
    return state, history


def _chunk_runner(loss_fn, optimizer, ema, data, batch_size, data_root, step_root):
    """`(run, size)`: `run(model, ema_model, opt_state, s0, k)` runs steps s0 .. s0+k-1
    in one compiled loop (`sdegen._training._train._steps`), for `k` up to `size`."""
    chunks = chunked_source(data, batch_size, data_root)

    def run(model, ema_model, opt_state, s0, k):
        chunk_in = (chunks.pick, chunks.stack(s0, k), step_root,
                    jnp.asarray(s0, jnp.int32), jnp.asarray(k, jnp.int32), chunks.size)  # fmt: skip
        return _steps(chunk_in, model, ema_model, opt_state, loss_fn, optimizer, ema)

    return run, chunks.size


def _step_runner(step_fn, batch_at, step_root):
    """`run(model, ema_model, opt_state, s0, k)` one step (one call of `step_fn`) at a
    time; the stats stacked."""

    def run(model, ema_model, opt_state, s0, k):
        stats = []
        for s in range(s0, s0 + k):
            model, ema_model, opt_state, st = step_fn(
                model, ema_model, opt_state, batch_at(s), jr.fold_in(step_root, s),
                jnp.asarray(s, jnp.int32),
            )
            stats.append(st)
        return model, ema_model, opt_state, {
            name: [st[name] for st in stats] for name in ("loss", "grad_norm")
        }

    return run


def _scalars(d: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, bool | int | float | str) or v is None:
            out[k] = v
        elif np.ndim(v) == 0:
            out[k] = float(np.asarray(v))
    return out


def _ema_evaluator(loss_fn, batch_at, root, mesh) -> Callable[[Any], float]:
    """`loss_fn` of the EMA model on the batch of step 0 with a fixed key."""
    batch, key = batch_at(0), jr.fold_in(root, 2)
    if mesh is not None:
        batch, key = replicate((batch, key), mesh)
    return lambda ema_model: float(np.asarray(to_host(
        _eval_loss(loss_fn, ema_model, batch, key))))  # fmt: skip


@eqx.filter_jit
def _eval_loss(loss_fn, model, batch, key):
    # Module level, the loss static: compiled once per loss, shape and dtype.
    return loss_fn(model, batch, key)


def _save(ckpt_dir: Path, state: TrainState, hparams, history, keep: int) -> None:
    extra = {"log": history["log"], "eval": _jsonable(history["eval"])}
    # Every process gathers the arrays; process 0 writes the file (and the others
    # wait for it).
    save_checkpoint_main(checkpoint_path(ckpt_dir, state.step), state, hparams,
                         step=state.step, extra=extra)  # fmt: skip
    if is_main_process():
        for old in list_checkpoints(ckpt_dir)[:-keep]:
            old.unlink(missing_ok=True)


# What TrainConfig fields added later meant before they existed: warm-up then a
# constant learning rate, and a constant EMA decay.
_LEGACY = {"schedule": "constant", "final_lr_ratio": 0.0, "ema": "constant",
           "ema_gamma": 6.94}  # fmt: skip


def _resume(path: Path, like: TrainState, cfg: TrainConfig, hparams, custom: bool):
    meta = checkpoint_metadata(path)
    saved = {"optimizer": "cfg", **meta.get("hparams", {})}
    saved_cfg = saved.get("train", {})
    free = _RESUMABLE
    if custom or cfg.schedule == "constant":
        free = free + ("num_steps",)
    # a checkpoint written before a field existed ran with the field's old behaviour
    saved_cfg = {**_LEGACY, **saved_cfg}
    diffs = [
        f"{k}: {saved_cfg.get(k)!r} -> {v!r}"
        for k, v in cfg.to_dict().items()
        if k not in free and saved_cfg.get(k) != v
    ]
    diffs += [
        f"{k}: {saved.get(k)!r} -> {v!r}"
        for k, v in hparams.items()
        if k != "train" and _jsonable(saved.get(k)) != _jsonable(v)
    ]
    if diffs:
        hint = ""
        if any(d.startswith("num_steps") for d in diffs):
            hint = (" The cosine schedule decays over num_steps, so a run extends only "
                    "with schedule='constant' or its own optimizer.")  # fmt: skip
        raise ValueError(
            f"Cannot resume from {str(path)!r}: its hyper-parameters differ "
            f"({'; '.join(diffs)}).{hint} Pass resume=False or use another ckpt_dir."
        )
    n = int(meta["step"])
    like = TrainState(like.model, like.ema_model, like.opt_state, n,
                      np.zeros((n,), np.float64))  # fmt: skip
    state = load_checkpoint(path, like)
    extra = meta.get("extra", {})
    history = {"log": list(extra.get("log", [])), "eval": list(extra.get("eval", []))}
    return state, history


def _jsonable(x):
    return json.loads(json.dumps(x, sort_keys=True, default=_json_default))
