r"""The default optimiser of [`sdegen.train`][]: Adam(W) with gradient clipping and a
learning-rate schedule (linear warm-up, then cosine decay or a constant rate), in
optax."""

import functools
import math
from collections.abc import Callable
from typing import Any

import optax


SCHEDULES = ("cosine", "constant")
"""Learning-rate schedules of [`sdegen.TrainConfig`][]: `"cosine"` (linear warm-up,
then a half cosine down to `final_lr_ratio * lr` at `num_steps`; Loshchilov & Hutter
2017, SGDR) and `"constant"` (linear warm-up, then `lr`)."""


def make_schedule(cfg: Any) -> Callable[[Any], Any]:
    r"""The learning rate $\eta_s$ at step $s$ of a [`sdegen.TrainConfig`][]: linear
    warm-up $\eta_s = \eta\,s/W$ for $s < W$ (`warmup`), then

    - `"cosine"`: $\eta_s = \eta_{\text{end}} + \tfrac12(\eta - \eta_{\text{end}})
      (1 + \cos(\pi\,(s - W)/(S - W)))$ up to $S$ = `num_steps` and
      $\eta_{\text{end}} = $ `final_lr_ratio` $\cdot\,\eta$ after it (optax's
      `warmup_cosine_decay_schedule`);
    - `"constant"`: $\eta_s = \eta$.
    """
    return _schedule(*_key(cfg)[:5])


def _key(cfg: Any) -> tuple:
    # What the optimiser depends on (the constant schedule not on num_steps), so that
    # equal optimisers are one cached object and steps built on them compile once.
    cosine = cfg.schedule == "cosine"
    return (cfg.schedule, float(cfg.lr), int(cfg.warmup),
            int(cfg.num_steps) if cosine else 0,
            float(cfg.final_lr_ratio) if cosine else 0.0,
            cfg.grad_clip, float(cfg.weight_decay))  # fmt: skip


@functools.lru_cache(maxsize=64)
def _schedule(kind, lr, warmup, num_steps, final_ratio):
    if kind == "constant":
        return optax.linear_schedule(0.0, lr, warmup) if warmup > 0 else (
            optax.constant_schedule(lr))  # fmt: skip
    decay = max(num_steps, warmup + 1)
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, decay,
                                              end_value=lr * final_ratio)  # fmt: skip


def make_optimizer(cfg: Any) -> optax.GradientTransformation:
    r"""The optax optimiser of a [`sdegen.TrainConfig`][]:
    `clip_by_global_norm(grad_clip)` (if set), then Adam (AdamW when
    `weight_decay > 0`; Kingma & Ba 2015; Loshchilov & Hutter 2019) with the
    learning rate of [`sdegen.make_schedule`][]. The same settings give the same
    (cached) object, so jitted steps built on it are compiled once."""
    return _optimizer(*_key(cfg))


@functools.lru_cache(maxsize=64)
def _optimizer(kind, lr, warmup, num_steps, final_ratio, grad_clip, weight_decay):
    schedule = _schedule(kind, lr, warmup, num_steps, final_ratio)
    if weight_decay > 0:
        opt = optax.adamw(schedule, weight_decay=weight_decay)
    else:
        opt = optax.adam(schedule)
    if grad_clip is not None:
        opt = optax.chain(optax.clip_by_global_norm(grad_clip), opt)
    return opt


def learning_rate_of(opt_state: Any) -> float | None:
    """The learning rate held in an optimiser state built with
    `optax.inject_hyperparams` (`None` when there is none)."""
    try:
        lr = optax.tree_utils.tree_get(opt_state, "learning_rate", None)
    except Exception:  # several matches
        return None
    if lr is None:
        return None
    try:
        v = float(lr)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None
