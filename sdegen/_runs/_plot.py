"""PNG figures for the command line: image grids, 2-D scatter plots, loss curves.

matplotlib runs with the non-interactive Agg backend, so nothing needs a display.
Every function writes the file atomically and returns its path. matplotlib and
pillow come with the `plot` extra (`pip install 'sdegen[plot]'`) and are imported
only when a figure is written.
"""

import io
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ._checkpoint import atomic_write_bytes


def _require(module: str, package: str) -> Any:
    """Import an optional plotting dependency, or say which extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(
            f"writing figures needs {package}, which is not installed; install the "
            "plotting extra: pip install 'sdegen[plot]'."
        ) from None


def _figure(figsize):
    # A bare Figure renders with Agg through `savefig`; pyplot (and its global
    # backend state) is never imported.
    Figure = _require("matplotlib.figure", "matplotlib").Figure

    return Figure(figsize=figsize, dpi=100)


def _save(fig, path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return atomic_write_bytes(path, buf.getvalue())


RED = (255, 0, 0)
ABOVE = (255, 150, 150)  # a value > 1: light red
BELOW = (120, 0, 0)  # a value < -1: dark red
NONFINITE = (255, 0, 255)  # NaN or inf: magenta


def out_of_range(images: Any, lo: float = -1.0, hi: float = 1.0) -> np.ndarray:
    """Boolean mask of the values outside $[lo, hi]$ or not finite."""
    x = np.asarray(images, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return ~np.isfinite(x) | (x < lo) | (x > hi)


def image_grid(images: Any, ncols: int | None = None, pad: int = 1, *,
               mark: bool = True, tolerance: float = 0.0) -> np.ndarray:  # fmt: skip
    r"""Tile images of shape `(N, C, H, W)` with values in $[-1, 1]$ into one
    `uint8` array of shape `(rows·(H+pad)+pad, cols·(W+pad)+pad[, 3])`.

    Values outside $[-1 - \delta, 1 + \delta]$ ($\delta$ = `tolerance`, e.g. the
    data's quantisation step: round-off at the boundary is not marked) are not
    hidden by the clipping: with `mark`, a pixel with a value above $1 + \delta$ is
    drawn light red, below $-1 - \delta$ dark red, not finite magenta
    (so the image stays readable, bright and dark where it was), the padding frame
    around an image with any such pixel is red, and the grid is RGB. Otherwise a grey
    data set ($C = 1$) gives a 2-D grey grid."""
    x = np.asarray(images, dtype=np.float64)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(
            f"`images` must have shape (N, C, H, W) with C in (1, 3), got {x.shape}."
        )
    n, c, h, w = x.shape
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    with np.errstate(invalid="ignore"):
        above = np.any(x > 1 + tolerance, axis=1)
        below = np.any(x < -1 - tolerance, axis=1)
    nonfinite = np.any(~np.isfinite(x), axis=1)
    bad = (above | below | nonfinite) if mark else np.zeros((n, h, w), bool)
    rgb = c == 3 or bool(bad.any())
    x = np.nan_to_num(x, nan=-1.0, posinf=1.0, neginf=-1.0)
    x = np.round((np.clip(x, -1, 1) + 1) * 127.5).astype(np.uint8)
    x = np.transpose(x, (0, 2, 3, 1))
    if rgb and c == 1:
        x = np.repeat(x, 3, axis=-1)
    depth = 3 if rgb else 1
    grid = np.zeros(
        (nrows * (h + pad) + pad, ncols * (w + pad) + pad, depth), dtype=np.uint8
    )
    for i in range(n):
        r, q = divmod(i, ncols)
        y0, x0 = pad + r * (h + pad), pad + q * (w + pad)
        tile = x[i].copy()
        if bad[i].any():
            tile[above[i]] = ABOVE
            tile[below[i]] = BELOW
            tile[nonfinite[i]] = NONFINITE
            if pad:
                grid[y0 - pad : y0 + h + pad, x0 - pad : x0 + w + pad] = RED
        grid[y0 : y0 + h, x0 : x0 + w] = tile
    return grid if rgb else grid[..., 0]


def save_image_grid(
    path: str | os.PathLike,
    images: Any,
    ncols: int | None = None,
    scale: int = 8,
    title: str | None = None,
    tolerance: float = 0.0,
) -> Path:
    r"""Write images `(N, C, H, W)` in $[-1, 1]$ as one PNG grid, each pixel enlarged
    `scale` times (nearest neighbour) so 8×8 digits are visible. Values beyond
    $[-1, 1]$ by more than `tolerance` $\delta$ (the data's quantisation step, $2 /
    (L - 1)$ for $L$ levels: less is round-off, which rounding to the data's values
    removes) are marked in red (see `image_grid`); the caption under the grid, after
    `title`, says what is marked and the fraction of such values, and the fraction
    outside $[-1, 1]$ at all."""
    PIL = _require("PIL.Image", "pillow")
    draw = _require("PIL.ImageDraw", "pillow")

    frac = float(np.mean(out_of_range(images)))
    far = float(np.mean(out_of_range(images, -1 - tolerance, 1 + tolerance)))
    grid = image_grid(images, ncols, tolerance=tolerance)
    img = PIL.fromarray(grid)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale),
                         PIL.Resampling.NEAREST)  # fmt: skip
    beyond = (f"beyond [-1, 1] by more than the quantisation step {tolerance:.3g}"
              if tolerance else "outside [-1, 1]")  # fmt: skip
    caption = f"red: {100 * far:.2f}% of values {beyond} (light above, dark below)"
    note = (f"{100 * (frac - far):.2f}% outside [-1, 1] by less: round-off, not marked"
            if tolerance else None)  # fmt: skip
    lines = [t for t in (title, caption, note) if t]
    strip = 12 * len(lines) + 4
    canvas = PIL.new("RGB", (max(img.width, 6 * max(map(len, lines)) + 8),
                             img.height + strip), "white")  # fmt: skip
    canvas.paste(img.convert("RGB"), (0, 0))
    pen = draw.Draw(canvas)
    for i, line in enumerate(lines):
        pen.text((4, img.height + 2 + 12 * i), line,
                 fill=(200, 0, 0) if line is caption and far else (0, 0, 0))  # fmt: skip
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
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
