"""`sdegen inpaint` and `sdegen colorize`: controllable generation with a trained run
([`sdegen.inpaint`][], [`sdegen.colorize`][]) on image files or held-out examples.

Writes `NAME.png` (rows: the observation, the result, the original when known),
`NAME.npy` (the results) and `NAME.json` (settings, and for held-out examples the
mean squared error of the filled-in values against the originals).
"""

import argparse
import inspect
import time
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

import sdegen as sg

from .._runs._checkpoint import atomic_write_json
from ._errors import CLIError, flag_names
from ._progress import chunked_map
from ._report import save_npy, say
from ._run import Run, load_run, prepare_out
from ._sample_cmd import held_out_data
from ._sampling import check_label, guided


def read_images(paths: list[str], shape: tuple[int, ...]) -> np.ndarray:
    """Image files as an array `(N, C, H, W)` in $[-1, 1]$: converted to the model's
    channels (grey or RGB) and resized to its size (bilinear)."""
    try:
        import PIL.Image
    except ImportError:
        raise ImportError(
            "reading image files needs pillow; install it with pip install "
            "'sdegen[plot]'."
        ) from None
    c, h, w = shape
    out = []
    for p in paths:
        try:
            with PIL.Image.open(p) as img:
                img = img.convert("L" if c == 1 else "RGB")
                if img.size != (w, h):
                    img = img.resize((w, h), PIL.Image.Resampling.BILINEAR)
                a = np.asarray(img, np.float64) / 127.5 - 1.0
        except (OSError, ValueError) as e:
            raise CLIError(f"--input {p!r}: not a readable image ({e}).") from None
        out.append(a[None] if a.ndim == 2 else np.transpose(a, (2, 0, 1)))
    return np.stack(out)


def mask_of(kind: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """The observed pixels (`True`) of `--mask`: `right` means the right half is
    unknown, and so on; `centre` hides the central half-size square, `random` half
    the pixels at random. The same mask for every channel."""
    c, h, w = shape
    m = np.ones((h, w), bool)
    if kind == "right":
        m[:, w // 2 :] = False
    elif kind == "left":
        m[:, : w - w // 2] = False
    elif kind == "top":
        m[: h - h // 2] = False
    elif kind == "bottom":
        m[h // 2 :] = False
    elif kind == "centre":
        m[h // 4 : h // 4 + max(1, h // 2), w // 4 : w // 4 + max(1, w // 2)] = False
    elif kind == "random":
        m = np.random.default_rng(seed).random((h, w)) < 0.5
    else:
        raise CLIError(f"--mask {kind!r} is unknown.")
    return np.broadcast_to(m, shape).copy()


def _inputs(args: argparse.Namespace, run: Run) -> tuple[np.ndarray, bool]:
    """The images to work on, and whether they are held-out examples (with known
    originals)."""
    if run.cfg["data"]["kind"] != "image":
        raise CLIError(
            f"--out {str(run.out)!r} holds a model of vectors {run.shape}; "
            f"`sdegen {args.command}` needs a model of images."
        )
    if args.input:
        return read_images(args.input, run.shape), False
    data = held_out_data(run.cfg, int(run.cfg["train"]["seed"]))
    if data is None:
        raise CLIError("--input is needed: the run's data set cannot be loaded.")
    return np.asarray(data.held_out[: args.examples], np.float64), True


def _options(fn: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The sampler flags as keyword options of `fn`, each checked to exist there."""
    flags = {"solver": ("--solver", args.solver),
             "num_steps": ("--sample-steps", args.sample_steps or 1000),
             "corrector_steps": ("--corrector-steps", args.corrector_steps),
             "snr": ("--snr", args.snr), "denoise": (None, True)}  # fmt: skip
    params = inspect.signature(fn).parameters
    out = {}
    for name, (flag, value) in flags.items():
        if name in params:
            out[name] = value
        elif flag is not None:
            raise CLIError(f"{flag}: this version of sdegen.{fn.__name__} has no "
                           f"`{name}` option.")  # fmt: skip
    return out


def _one(task, sde, model, conditional, guidance, options, inputs):
    key_data, y, label = inputs
    score = guided(model, label, guidance) if conditional else model
    key = jr.wrap_key_data(key_data)
    if task == "inpaint":
        obs, mask = y
        return sg.inpaint(key, sde, score, obs, jnp.asarray(mask), **options)
    return sg.colorize(key, sde, score, y, num_channels=3, **options)


def _run_task(task: str, args: argparse.Namespace) -> dict[str, Any]:
    out = prepare_out(args.out, writer=False)
    run = load_run(out, ema=not args.no_ema)
    check_label(run.num_classes, args.label, args.guidance)
    x, known = _inputs(args, run)
    n = len(x)
    if task == "colorize" and run.shape[0] != 3:
        raise CLIError(
            f"--out {str(out)!r}: colorize needs a model of colour images (3 "
            f"channels); this run's images have {run.shape[0]}."
        )
    fn = sg.inpaint if task == "inpaint" else sg.colorize
    options = _options(fn, args)
    y = np.asarray(run.to_model(x))  # the inputs in the model's space
    if task == "inpaint":
        mask = mask_of(args.mask, run.shape, args.seed)
        masks = np.broadcast_to(mask, x.shape).copy()
        obs: Any = (y, masks)
        shown = np.where(masks, x, 0.0)
    else:
        obs = np.mean(y, axis=1)  # the grey value is the channel mean
        shown = np.repeat(np.mean(x, axis=1, keepdims=True), 3, axis=1)
    keys = np.asarray(jax.device_get(jr.key_data(jr.split(jr.key(args.seed), n))))
    label = np.full(n, -1 if args.label is None else args.label, np.int32)
    guidance = None if args.guidance is None else float(args.guidance)
    fn_one = eqx.Partial(_one, task, run.sde, run.model, args.label is not None,
                         guidance, options)  # fmt: skip
    t0 = time.perf_counter()
    with flag_names({"solver": "--solver", "num_steps": "--sample-steps",
                     "corrector_steps": "--corrector-steps", "snr": "--snr"}):  # fmt: skip
        result_x = chunked_map(fn_one, (keys, obs, label), chunk=64,
                               mesh=getattr(args, "mesh", None), desc=task,
                               progress=not args.no_progress)  # fmt: skip
    result_x = np.asarray(run.to_data(result_x))
    wall = time.perf_counter() - t0
    name = args.name or f"{task}" + (f"_{args.mask}" if task == "inpaint" else "")
    res: dict[str, Any] = {"task": task, "num_images": n, "wall_time_s": wall,
                           "step": run.step, "label": args.label,
                           "guidance": args.guidance,
                           **options}  # fmt: skip
    if task == "inpaint":
        res["mask"] = args.mask
    if known:
        unknown = ~masks if task == "inpaint" else np.ones_like(x, bool)
        err = (np.asarray(result_x, np.float64) - x) ** 2
        res["mse_unobserved"] = float(np.sum(err * unknown) / max(1, unknown.sum()))
    rows = [shown, result_x] + ([x] if known else [])
    panel = np.concatenate(rows)
    if sg.is_main_process():
        from .._runs._plot import save_image_grid

        save_npy(out / f"{name}.npy", result_x)
        save_image_grid(out / f"{name}.png", panel, ncols=n, scale=6,
                        title=f"{task}: observation / result" +
                              (" / original" if known else ""))  # fmt: skip
        atomic_write_json(out / f"{name}.json", res)
        say(f"wrote {Path(out) / name}.png, .npy and .json ({n} images in {wall:.1f} s)")
    return res


def cmd_inpaint(args: argparse.Namespace) -> dict[str, Any]:
    return _run_task("inpaint", args)


def cmd_colorize(args: argparse.Namespace) -> dict[str, Any]:
    return _run_task("colorize", args)
