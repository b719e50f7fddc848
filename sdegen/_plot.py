"""PNG figures for the command line: image grids, 2-D scatter plots, loss curves.

matplotlib runs with the non-interactive Agg backend, so nothing needs a display.
Every function writes the file atomically and returns its path.
"""

import io
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ._checkpoint import atomic_write_bytes


def _figure(figsize):
    # A bare Figure renders with Agg through `savefig`; pyplot (and its global
    # backend state) is never imported.
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, dpi=100)


def _save(fig, path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return atomic_write_bytes(path, buf.getvalue())


def image_grid(images: Any, ncols: int | None = None, pad: int = 1) -> np.ndarray:
    r"""Tile images of shape `(N, C, H, W)` with values in $[-1, 1]$ into one
    `uint8` array of shape `(rows·(H+pad)+pad, cols·(W+pad)+pad[, C])` (grey when
    $C = 1$); values outside $[-1, 1]$ are clipped."""
    x = np.asarray(images, dtype=np.float64)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(
            f"`images` must have shape (N, C, H, W) with C in (1, 3), got {x.shape}."
        )
    n, c, h, w = x.shape
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    x = np.nan_to_num(x, nan=-1.0)
    x = np.round((np.clip(x, -1, 1) + 1) * 127.5).astype(np.uint8)
    grid = np.zeros(
        (nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), dtype=np.uint8
    )
    for i in range(n):
        r, q = divmod(i, ncols)
        y0, x0 = pad + r * (h + pad), pad + q * (w + pad)
        grid[y0 : y0 + h, x0 : x0 + w] = np.transpose(x[i], (1, 2, 0))
    return grid[..., 0] if c == 1 else grid


def save_image_grid(
    path: str | os.PathLike, images: Any, ncols: int | None = None, scale: int = 8
) -> Path:
    """Write images `(N, C, H, W)` in $[-1, 1]$ as one PNG grid, each pixel enlarged
    `scale` times (nearest neighbour) so 8×8 digits are visible."""
    import PIL.Image

    grid = image_grid(images, ncols)
    img = PIL.Image.fromarray(grid)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale),
                         PIL.Image.Resampling.NEAREST)  # fmt: skip
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())


def save_scatter(
    path: str | os.PathLike,
    samples: Any,
    reference: Any | None = None,
    title: str | None = None,
) -> Path:
    """Scatter plot of 2-D `samples` `(N, 2)`, next to `reference` data when given,
    on shared axes."""
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"`samples` must have shape (N, 2), got {x.shape}.")
    panels = [("samples", x)]
    if reference is not None:
        panels.insert(0, ("data", np.asarray(reference, dtype=np.float64)))
    fig = _figure((4 * len(panels), 4))
    finite = np.concatenate([p[np.all(np.isfinite(p), axis=1)] for _, p in panels])
    lo, hi = np.percentile(finite, [0.5, 99.5], axis=0) if len(finite) else (-1, 1)
    span = float(np.max(np.asarray(hi) - np.asarray(lo))) * 0.6 + 1e-6
    mid = (np.asarray(lo) + np.asarray(hi)) / 2
    for i, (name, p) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        ax.scatter(p[:, 0], p[:, 1], s=2, alpha=0.5, linewidths=0)
        ax.set_xlim(mid[0] - span, mid[0] + span)
        ax.set_ylim(mid[1] - span, mid[1] + span)
        ax.set_aspect("equal")
        ax.set_title(name)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def save_loss_curve(
    path: str | os.PathLike,
    losses: Any,
    eval_steps: Any = None,
    eval_losses: Any = None,
    title: str | None = None,
) -> Path:
    """Plot the per-step training loss (light) with its running mean over ~1% of the
    run (dark), and evaluation losses as markers, on a log scale when positive."""
    y = np.asarray(losses, dtype=np.float64)
    fig = _figure((6, 4))
    ax = fig.add_subplot(1, 1, 1)
    steps = np.arange(1, len(y) + 1)
    ax.plot(steps, y, alpha=0.3, lw=0.8, label="train (per step)")
    k = max(1, len(y) // 100)
    if len(y) >= k and k > 1:
        smooth = np.convolve(y, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1 :], smooth, lw=1.5, label=f"train (mean of {k})")
    if eval_steps is not None and len(eval_steps):
        ax.plot(eval_steps, eval_losses, "o-", ms=4, label="eval (EMA)")
    if len(y) and np.all(y[np.isfinite(y)] > 0):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    if title:
        ax.set_title(title)
    return _save(fig, path)
