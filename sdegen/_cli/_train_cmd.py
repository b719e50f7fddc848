"""`sdegen train` and `sdegen demo`: train a score model, evaluate it while training,
sample from it at the end, and write the run folder."""

import argparse
import contextlib
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
from ._config import Loss, build_model, build_sde, hparams, run_config
from ._data import (
    HF_FLAGS,
    RunData,
    data_spec,
    fit_transform,
    load_data,
    reference_pool,
    training_source,
)
from ._devices import num_devices
from ._errors import CLIError, flag_names
from ._report import sample_metrics, say, summary, write_samples
from ._run import CONFIG, prepare_out, read_config
from ._sampling import draw_samples, resolve_sampler


def _num_params(model: Any) -> int:
    leaves = jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array))
    return int(sum(x.size for x in leaves))


def _check_resume(out: Path, cfg: dict[str, Any], resume: bool) -> None:
    """A run folder with checkpoints is resumed only with the same settings; with
    `--no-resume` its old checkpoints are deleted (training starts afresh)."""
    ckpts = sg.latest_checkpoint(out / "checkpoints") if resume else None
    if not resume:
        if sg.is_main_process():
            _remove_old_run(out)
        return
    if ckpts is None or not (out / CONFIG).is_file():
        return
    try:
        old = read_config(out)
    except CLIError:
        old = None
    if old is None or hparams(old) != hparams(cfg):
        diff = sorted(k for k in hparams(cfg) if old is None
                      or hparams(old).get(k) != hparams(cfg).get(k))  # fmt: skip
        raise CLIError(
            f"--out {str(out)!r} holds a run with other settings ({', '.join(diff)} "
            "differ); choose another --out, or --no-resume to start afresh there."
        )


# What a run writes beside config.json and checkpoints/ (and what `advise` and
# `likelihood` measured on its model): removed by --no-resume, so that the new run's
# logs, figures and metrics do not mix with the old run's.
_RUN_OUTPUTS = ("events.out.tfevents.*", "metrics.jsonl", "metrics.json", "loss.png",
                "samples.png", "samples.npy", "samples/step_*.png",
                "samples/step_*.npy", "advise.json", "advise.md",
                "likelihood.json")  # fmt: skip


def _remove_old_run(out: Path) -> None:
    for old in (out / "checkpoints").glob("step_*.ckpt"):
        old.unlink()
    for pattern in _RUN_OUTPUTS:
        for old in out.glob(pattern):
            old.unlink()


def _resume_hint(out: Path, e: BaseException) -> None:
    """After Ctrl-C: the step reached, its checkpoint and the command that resumes."""
    import shlex
    import sys

    from .._training._pace import Interrupted

    if not isinstance(e, Interrupted) or e.checkpoint is None:
        return
    argv = [a for a in sys.argv[1:] if a != "--no-resume"]
    cmd = " ".join(shlex.quote(a) for a in ["sdegen", *argv]) if argv else (
        f"sdegen train --out {shlex.quote(str(out))} (with the same flags)")  # fmt: skip
    say(f"interrupted at step {e.step}; saved {e.checkpoint}; the same command "
        f"without --no-resume continues from it: {cmd}")  # fmt: skip


def _eval_fn(cfg, data: RunData, transform, sde, out: Path, mesh, progress: bool,
             main: bool):  # fmt: skip
    shape = tuple(data.shape)
    conditional = data.num_classes is not None
    to_data = (lambda x: x) if transform is None else transform.inverse
    eval_loss = eqx.filter_jit(Loss.of({**cfg, "label_dropout": 0.0}, sde))
    n = min(len(data.held_out), 512)
    held = data.held_out[:n] if transform is None else transform.forward(data.held_out[:n])
    batch: Any = jnp.asarray(held)
    if conditional:
        batch = (batch, jnp.asarray(data.held_out_labels[:n]))
    spec = resolve_sampler(cfg["sample"])
    n_samples = min(cfg["sample"]["num_samples"], 64 if data.kind == "image" else 1000)
    labels = np.arange(n_samples) % data.num_classes if conditional else None

    def eval_fn(state) -> dict[str, Any]:
        res = {"eval_loss": float(eval_loss(state.ema_model, batch, jr.key(7)))}
        samples = draw_samples(jr.key(11), sde, state.ema_model, shape, spec,
                               n_samples, labels=labels, mesh=mesh, progress=progress,
                               desc=f"eval samples (step {state.step})",
                               leave=False)  # fmt: skip
        samples = to_data(samples)
        if main:
            write_samples(out / "samples" / f"step_{state.step:07d}.png", samples,
                          data.held_out, data.kind, f"step {state.step}",
                          data.levels)  # fmt: skip
        m = sample_metrics(samples, data.held_out, kind=data.kind,
                           dataset=data.name)  # fmt: skip
        keep = ("mmd", "sliced_wasserstein", "frechet_distance", "frechet_floor",
                "frac_outside_range", "samples_finite")  # fmt: skip
        res.update({k: m[k] for k in keep if k in m})
        return res

    return eval_fn


def cmd_train(args: argparse.Namespace, *, demo: bool = False) -> dict[str, Any]:
    out = prepare_out(args.out, writer=True)
    mesh = getattr(args, "mesh", None)
    main = sg.is_main_process()  # the only process that writes files
    progress = not args.no_progress
    with flag_names(HF_FLAGS):
        data = load_data(data_spec(args), args.seed)
    transform = fit_transform(args.transform, data)
    cfg = run_config(args, data, transform, demo=demo)
    tcfg = sg.TrainConfig.from_dict(cfg["train"])
    if mesh is not None:
        with flag_names({"batch_size": "--batch-size"}):
            sg.check_divisible(tcfg.batch_size, mesh)  # before anything is written
    sde = build_sde(cfg)
    model = build_model(cfg, sde)
    loss = Loss.of(cfg, sde)
    _check_resume(out, cfg, not args.no_resume)
    if main:
        atomic_write_json(out / CONFIG, cfg)
    shape = tuple(data.shape)
    net = cfg["network"]
    cond = f", {data.num_classes} classes" if data.num_classes else ""
    say(f"training on {data.name} {shape}{cond} with the {cfg['sde']['class']}, "
        f"{net['net']} ({_num_params(model)} parameters, {net['param']} "
        f"parametrisation), {tcfg.num_steps} steps of {tcfg.batch_size} on "
        f"{num_devices(mesh)} device(s); writing to {out}/; the first step "
        "compiles")  # fmt: skip
    with flag_names({**HF_FLAGS, "batch_size": "--batch-size"}), _on_interrupt(out):
        state, history = sg.train(
            model, loss, training_source(data, transform), tcfg,
            ckpt_dir=out / "checkpoints", log_dir=out if main else None,
            tensorboard=False if args.no_tensorboard else None,
            resume=not args.no_resume, hparams=hparams(cfg),
            eval_fn=_eval_fn(cfg, data, transform, sde, out, mesh, progress, main),
            ema_loss=not args.quick, progress=progress, mesh=mesh,
        )  # fmt: skip
    ev = history["eval"]
    if main:
        from .._runs._plot import save_loss_curve

        save_loss_curve(out / "loss.png", state.losses, [e["step"] for e in ev],
                        [e["eval_loss"] for e in ev],
                        title=f"{data.name}: {cfg['loss']} loss")  # fmt: skip
    scfg = cfg["sample"]
    spec = resolve_sampler(scfg)
    num = int(scfg["num_samples"])
    labels = np.arange(num) % data.num_classes if data.num_classes else None
    t0 = time.perf_counter()
    samples = draw_samples(jr.key(tcfg.seed + 1), sde, state.ema_model, shape, spec,
                           num, labels=labels, mesh=mesh, progress=progress,
                           desc="final samples")  # fmt: skip
    if transform is not None:
        samples = transform.inverse(samples)
    t_sample = time.perf_counter() - t0
    tail = np.asarray(state.losses)[-max(1, len(state.losses) // 10) :]
    metrics = sample_metrics(samples, data.held_out, kind=data.kind, dataset=data.name,
                             labels=labels, reference=reference_pool(data))  # fmt: skip
    result = {
        "dataset": data.name,
        "steps": int(state.step),
        "final_loss": float(np.mean(tail)) if len(tail) else None,
        "eval_loss": ev[-1]["eval_loss"] if ev else None,
        "train_wall_time_s": history["wall_time_s"],
        "train_steps_per_s": history["steps_per_s"],
        "steady_steps_per_s": history["steady_steps_per_s"],
        "num_params": _num_params(model),
        "sampler": spec.describe(),
        "sample_wall_time_s": t_sample,
        "num_devices": num_devices(mesh),
        **metrics,
        "eval_history": ev,
    }
    if main:
        write_samples(out / "samples.png", samples, data.held_out, data.kind,
                      f"{data.name}: {spec.describe()}", data.levels)  # fmt: skip
        atomic_write_json(out / "metrics.json", result)
        say(summary(result))
        say(f"wrote {out}/samples.png, samples.npy, loss.png, metrics.json, "
            "metrics.jsonl, checkpoints/")  # fmt: skip
    return result


@contextlib.contextmanager
def _on_interrupt(out: Path):
    try:
        yield
    except KeyboardInterrupt as e:
        if sg.is_main_process():
            _resume_hint(out, e)
        raise


def cmd_demo(args: argparse.Namespace) -> dict[str, Any]:
    return cmd_train(args, demo=True)
