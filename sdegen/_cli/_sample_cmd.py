"""`sdegen sample`: draw samples from a trained run with a sampler chosen by name,
optionally of one class with classifier-free guidance; writes `NAME.png`,
`NAME.npy` and `NAME.json` in the run folder."""

import argparse
import time
from typing import Any

import jax.random as jr
import numpy as np

import sdegen as sg

from .._runs._checkpoint import atomic_write_json
from ._data import load_data, reference_pool
from ._devices import num_devices
from ._errors import CLIError
from ._report import sample_metrics, say, summary, write_samples
from ._run import load_run, prepare_out
from ._sampling import check_label, draw_samples, resolve_sampler


def held_out_data(cfg: dict[str, Any], seed: int):
    """The run's held-out data, or `None` (with a note) when the data set cannot be
    loaded any more (e.g. a hub data set without network access)."""
    try:
        return load_data(cfg["data"], seed)
    except (ValueError, OSError) as e:
        say(f"note: the data set {cfg['data']['dataset']!r} cannot be loaded ({e}); "
            "no metrics against held-out data.")  # fmt: skip
        return None


def cmd_sample(args: argparse.Namespace) -> dict[str, Any]:
    out = prepare_out(args.out, writer=False)
    mesh = getattr(args, "mesh", None)
    run = load_run(out, ema=not args.no_ema)
    scfg = dict(run.cfg["sample"])
    for k in ("solver", "sampler", "grid", "sample_steps", "num_samples"):
        if getattr(args, k, None) is not None:
            scfg[k] = getattr(args, k)
    spec = resolve_sampler(scfg)
    check_label(run.num_classes, args.label, args.guidance)
    num = int(scfg["num_samples"])
    labels = None if args.label is None else np.full(num, args.label)
    data = held_out_data(run.cfg, int(run.cfg["train"]["seed"]))
    t0 = time.perf_counter()
    samples = draw_samples(jr.key(args.seed), run.sde, run.model, run.shape, spec, num,
                           labels=labels, guidance=args.guidance,
                           chunk=args.chunk_size, mesh=mesh,
                           progress=not args.no_progress)  # fmt: skip
    samples = run.to_data(samples)
    wall = time.perf_counter() - t0
    if args.name is not None and ("/" in args.name or args.name in ("", ".", "..")):
        raise CLIError(f"--name {args.name!r} must be a plain file name, not a path.")
    cls = "" if args.label is None else f"_label{args.label}_w{args.guidance or 0:g}"
    name = args.name or f"samples_{spec.solver}_{spec.num_steps}{cls}"
    result: dict[str, Any] = {
        "step": run.step,
        **scfg,
        "sampler": spec.kind,
        "label": args.label,
        "guidance": args.guidance,
        "wall_time_s": wall,
        "num_devices": num_devices(mesh),
    }
    if data is not None:
        # scored against all the real examples, a conditional sample against its
        # class's (on the features of all of them)
        pool = reference_pool(data)
        feats = None
        if args.label is not None and np.prod(data.shape) > 16:
            flat = pool[0].reshape(len(pool[0]), -1)
            feats = sg.metrics.PCAFeatures.fit(flat, min(16, *flat.shape))
            pool = reference_pool(data, args.label)
        result.update(sample_metrics(samples, data.held_out, kind=data.kind,
                                     dataset=data.name, labels=args.label,
                                     reference=pool, features=feats))  # fmt: skip
    if sg.is_main_process():
        title = spec.describe()
        if args.label is not None:
            title += f", label {args.label}, W = {args.guidance or 0:g}"
        held = data.held_out if data is not None else samples[:0]
        kind = data.kind if data is not None else run.cfg["data"]["kind"]
        write_samples(out / f"{name}.png", samples, held, kind, title,
                      run.cfg["data"].get("levels"))  # fmt: skip
        atomic_write_json(out / f"{name}.json", result)
        say(f"wrote {out / name}.png, .npy and .json ({num} samples in {wall:.1f} s)")
        line = summary(result)
        if line:
            say(line)
    return result
