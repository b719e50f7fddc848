"""Shared helpers of the digit examples (not part of sdegen): flags, the digits split,
a small score model, train-or-load with a checkpoint cache, a reference classifier and
the three-panel figure (observation | samples | ground truth).

The score model is the one `sdegen demo` trains on the digits: an MLP on the flattened
pixels with the noise parametrisation under the VP SDE, which trains in a few minutes on
two CPU cores.
"""

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

import sdegen as sg


def parser(description: str, *, steps: int, sample_steps: int) -> argparse.ArgumentParser:
    """The flags every example shares; a script adds its own."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true",
                   help="tiny configuration that runs in seconds (what the tests run; "
                        "also set by SDEGEN_QUICK=1)")  # fmt: skip
    p.add_argument("--out", default="out/examples",
                   help="folder for the figure and cached weights (default "
                        "out/examples)")  # fmt: skip
    p.add_argument("--steps", type=int, default=None,
                   help=f"training steps of the score model (default {steps})")
    p.add_argument("--sample-steps", type=int, default=None,
                   help=f"sampler steps from T to eps (default {sample_steps})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=None, help="MLP width (default 512)")
    p.add_argument("--checkpoint", default=None,
                   help="load the score model's weights from this file (written by "
                        "this script, under --out) instead of training")  # fmt: skip
    p.add_argument("--retrain", action="store_true",
                   help="train even if --out holds cached weights")
    return p


def is_quick(args: argparse.Namespace) -> bool:
    return bool(args.quick) or os.environ.get("SDEGEN_QUICK", "") == "1"


def resolve(args: argparse.Namespace, full: dict[str, Any], quick: dict[str, Any]):
    """Fill unset flags (`None`) from the full or the quick defaults."""
    d = dict(full)
    if is_quick(args):
        d.update(quick)
    for k, v in d.items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)
    return args


def log(msg: str) -> None:
    print(msg, flush=True)


# ---------------------------------------------------------------- data


def digits_split(dtype: Any = None):
    """The embedded digits `(x, labels)`, split 90 / 10 into train and held-out test
    sets by a fixed permutation (the split `sdegen demo` uses)."""
    x, y = sg.data.load_digits(dtype=dtype)
    perm = np.asarray(jr.permutation(jr.key(0), x.shape[0]))
    n_test = x.shape[0] // 10
    test, train = perm[:n_test], perm[n_test:]
    return (x[train], y[train]), (x[test], y[test])


def digit_classifier(x: Any, y: Any):
    """A logistic-regression classifier (scikit-learn) of flattened grey digits."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(max_iter=5000, C=0.1)
    clf.fit(np.asarray(x, np.float64).reshape(len(x), -1), np.asarray(y))
    return clf


def predict(clf, x: Any) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return clf.predict(np.clip(x, -1, 1).reshape(len(x), -1))


# ---------------------------------------------------------------- model


class Flattened(eqx.Module):
    """Run a network for vectors on flattened examples (an MLP on images)."""

    net: eqx.Module
    shape: tuple[int, ...] = eqx.field(static=True)

    def __call__(self, t, x, *, label=None, key=None):
        y = self.net(t, jnp.reshape(x, (-1,)), label=label, key=key)
        return jnp.reshape(y, self.shape)


def score_model(key, shape: tuple[int, ...], sde, *, width: int, depth: int = 3,
                num_classes: int | None = None):  # fmt: skip
    """`NoiseParam(MLP)` on flattened images of shape `shape`."""
    net = sg.nn.MLP(math.prod(shape), width, depth, key=key, num_classes=num_classes)
    return sg.nn.NoiseParam(Flattened(net, tuple(shape)), sde)


def cached(path: Path, like, meta: dict[str, Any], fit, *,
           checkpoint: str | None = None, retrain: bool = False):  # fmt: skip
    """`fit()`'s result, cached at `path` with [`sdegen.save_checkpoint`][].

    With `checkpoint`, load that file into the structure of `like`. Otherwise reuse
    `path` when it exists and was written with the same `meta`; else call `fit()` and
    save what it returns there.
    """
    if checkpoint is not None:
        log(f"loading weights from {checkpoint}")
        return sg.load_checkpoint(checkpoint, like)
    if path.is_file() and not retrain:
        try:
            saved = sg.checkpoint_metadata(path)["hparams"]
        except sg.CheckpointError:
            saved = None
        if saved == _jsonable(meta):
            log(f"reusing cached weights {path} (--retrain to train afresh)")
            return sg.load_checkpoint(path, like)
    model = fit()
    sg.save_checkpoint(path, model, meta, step=0)
    return model


def num_params(model) -> int:
    leaves = jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array))
    return int(sum(x.size for x in leaves))


def train_or_load(model, loss_fn, data, cfg: sg.TrainConfig, *, path: Path,
                  hparams: dict[str, Any], checkpoint: str | None = None,
                  retrain: bool = False):  # fmt: skip
    """The EMA weights of `model` trained by [`sdegen.train`][] on `data`, cached at
    `path` (see `cached`)."""

    def fit():
        log(f"training a score model ({num_params(model):,} parameters) for "
            f"{cfg.num_steps} steps of batch {cfg.batch_size}")  # fmt: skip
        t0 = time.perf_counter()
        state, _ = sg.train(model, loss_fn, data, cfg, progress=False)
        tail = state.losses[-max(1, len(state.losses) // 10) :]
        log(f"trained in {time.perf_counter() - t0:.0f} s; final loss "
            f"{float(np.mean(tail)):.4f}")  # fmt: skip
        return state.ema_model

    meta = {**hparams, "train": cfg.to_dict()}
    return cached(path, model, meta, fit, checkpoint=checkpoint, retrain=retrain)


def _jsonable(d):
    import json

    return json.loads(json.dumps(d))


def train_config(args, *, batch_size: int, lr: float = 1e-3) -> sg.TrainConfig:
    steps = int(args.steps)
    return sg.TrainConfig(
        num_steps=steps, batch_size=batch_size, lr=lr, warmup=min(200, steps // 10),
        ema_decay=0.999 if steps >= 2000 else 0.9, seed=int(args.seed),
        log_every=max(1, steps), ckpt_every=None,
    )  # fmt: skip


# ---------------------------------------------------------------- figure


def save_panels(path: str | os.PathLike, panels: list[tuple], *,
                title: str | None = None, scale: float = 0.33) -> Path:  # fmt: skip
    """Write image panels side by side. Each panel is `(title, images, ncols)` or
    `(title, images, ncols, texts)`: the images `(N, C, H, W)` in $[-1, 1]$ are tiled
    into a grid (`sdegen._runs._plot.image_grid`) drawn under the title, and `texts` (one
    string per image) are written over the images."""
    import io

    from matplotlib.figure import Figure

    from sdegen._runs._checkpoint import atomic_write_bytes
    from sdegen._runs._plot import image_grid

    grids = [image_grid(np.asarray(p[1], np.float64), p[2]) for p in panels]
    widths = [g.shape[1] for g in grids]
    height = max(g.shape[0] for g in grids)
    fig = Figure(figsize=(scale * sum(widths) / 8 + 0.3 * len(grids),
                          scale * height / 8 + 0.9), dpi=100)  # fmt: skip
    axes = np.atleast_1d(fig.subplots(1, len(grids),
                                      gridspec_kw={"width_ratios": widths}))  # fmt: skip
    for ax, panel, g in zip(axes, panels, grids):
        ax.imshow(g, cmap="gray" if g.ndim == 2 else None, vmin=0, vmax=255,
                  interpolation="nearest")  # fmt: skip
        ax.set_title(panel[0], fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        if len(panel) > 3:
            h, w = np.shape(panel[1])[2:]
            for i, text in enumerate(panel[3]):
                r, q = divmod(i, panel[2])
                ax.text(1 + q * (w + 1) + (w - 1) / 2, 1 + r * (h + 1) + (h - 1) / 2,
                        text, color="white", ha="center", va="center",
                        fontsize=10)  # fmt: skip
    if title:
        fig.suptitle(title, fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    out = atomic_write_bytes(path, buf.getvalue())
    log(f"wrote {out}")
    return out


def check_finite(name: str, x: Any) -> None:
    if not np.all(np.isfinite(np.asarray(x))):
        sys.exit(f"{name}: the samples are not finite")
