"""The `sdegen` command line: the only place in sdegen that parses flags.

    sdegen train       train a score model; writes checkpoints, PNGs and metrics
    sdegen sample      draw samples from a trained run with a solver chosen by name
    sdegen likelihood  bits/dim of held-out data through the probability-flow ODE
    sdegen solvers     the table of solver names
    sdegen demo        train + sample on the embedded digits (or a 2-D toy set)

A run folder holds `config.json` (everything needed to rebuild the model),
`checkpoints/`, `samples.png`, `loss.png` and `metrics.json`. Names (data set, SDE,
network, parametrisation, loss, solver) are resolved here, once, into objects; the
library below takes only objects.

`--devices N` (train, demo, sample, likelihood) runs data-parallel on the first `N`
devices (`0`: all of them; several hosts after `--coordinator`, `--num-processes`
and `--process-id`, or on a cluster that `jax.distributed` detects by itself).
"""

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from . import data as sgdata, metrics
from ._checkpoint import (
    CheckpointError,
    atomic_write_json,
    checkpoint_metadata,
    latest_checkpoint,
    load_checkpoint,
)
from ._distributed import (
    check_divisible,
    distributed_initialize,
    is_main_process,
    make_mesh,
    sample_many,
)
from ._sde import VESDE, VPSDE, SubVPSDE
from ._solver_table import SOLVERS, _normalise, solver_table
from ._train import TrainConfig, TrainState, make_optimizer, train


# ---------------------------------------------------------------- named choices

SDES = ("vp", "subvp", "ve")
NETS = ("auto", "mlp", "unet")
PARAMS = ("noise", "score", "edm")
LOSSES = ("dsm", "dsm_likelihood")

# Defaults of `sdegen demo` (and of `train` where a flag is not given).
_DEFAULTS: dict[str, dict[str, Any]] = {
    "image": dict(steps=4000, batch_size=128, lr=1e-3, warmup=200, ema_decay=0.999,
                  net_width=512, net_depth=3, solver="heun", sampler="ode",
                  sample_steps=100, num_samples=100),
    "vector": dict(steps=4000, batch_size=256, lr=2e-3, warmup=200, ema_decay=0.995,
                   net_width=128, net_depth=3, solver="heun", sampler="ode",
                   sample_steps=100, num_samples=2000),
}  # fmt: skip
_QUICK: dict[str, Any] = dict(steps=30, batch_size=32, lr=1e-3, warmup=5,
                              ema_decay=0.9, net_width=16, net_depth=2, sample_steps=8,
                              num_samples=16, eval_every=15, ckpt_every=15)  # fmt: skip


def _build_sde(cfg: dict[str, Any]):
    name = cfg["sde"]
    if name == "vp":
        return VPSDE()
    if name == "subvp":
        return SubVPSDE()
    if name == "ve":
        return VESDE(sigma_min=0.01, sigma_max=float(cfg["sigma_max"]))
    raise ValueError(f"Unknown SDE {name!r}; choose from {', '.join(SDES)}.")


def _build_model(cfg: dict[str, Any], sde, key):
    from . import nn

    shape = tuple(cfg["data_shape"])
    width, depth = int(cfg["net_width"]), int(cfg["net_depth"])
    if cfg["net"] == "mlp":
        net = nn.MLP(math.prod(shape), width, depth, key=key)
        if len(shape) != 1:
            net = _Flattened(net, shape)
    elif cfg["net"] == "unet":
        if len(shape) != 3:
            raise ValueError(
                f"--net unet needs images (C, H, W), but the data set has shape "
                f"{shape}; use --net mlp."
            )
        levels = max(1, depth)
        while levels > 1 and any(s % 2 ** (levels - 1) for s in shape[1:]):
            levels -= 1
        mults = (1,) + (2,) * (levels - 1)
        net = nn.UNet(
            shape[0],
            key=key,
            base_channels=width,
            channel_mults=mults,
            num_groups=math.gcd(width, 8),
            attention_resolutions=(),
        )
    else:
        raise ValueError(f"Unknown network {cfg['net']!r}; choose mlp or unet.")
    if cfg["param"] == "noise":
        return nn.NoiseParam(net, sde)
    if cfg["param"] == "score":
        return nn.ScoreParam(net, sde)
    if cfg["param"] == "edm":
        return nn.EDMPreconditioner(net, sde, float(cfg["sigma_data"]))
    raise ValueError(
        f"Unknown parametrisation {cfg['param']!r}; choose from {', '.join(PARAMS)}."
    )


class _Flattened(eqx.Module):
    """Runs a network for vectors on flattened examples (an MLP on images)."""

    net: eqx.Module
    shape: tuple[int, ...] = eqx.field(static=True)

    def __call__(self, t, x, *, label=None, key=None):
        y = self.net(t, jnp.reshape(x, (-1,)), label=label, key=key)
        return jnp.reshape(y, self.shape)


def _build_loss(cfg: dict[str, Any], sde) -> Callable:
    import sdegen

    name = cfg["loss"]
    if name not in LOSSES:
        raise ValueError(f"Unknown loss {name!r}; choose from {', '.join(LOSSES)}.")
    weighting = "likelihood" if name == "dsm_likelihood" else "sigma2"

    def loss_fn(model, batch, key):
        return sdegen.dsm_loss(model, sde, batch, key, weighting=weighting)

    return loss_fn


def _load_data(name: str, seed: int):
    """`(train, held_out, kind)`: `train` is an array or a sampler `f(key, n)`,
    `held_out` an array; `kind` is "image" or "vector"."""
    if name == "digits":
        x, _ = sgdata.load_digits(dtype=jnp.zeros(()).dtype)
        perm = np.asarray(jr.permutation(jr.key(0), x.shape[0]))
        n_val = x.shape[0] // 10
        return x[perm[n_val:]], x[perm[:n_val]], "image"
    if name.startswith("hf:"):
        x, _ = sgdata.load_hf(name[3:])
        perm = np.asarray(jr.permutation(jr.key(0), x.shape[0]))
        n_val = max(1, x.shape[0] // 10)
        kind = "image" if x.ndim == 4 else "vector"
        return x[perm[n_val:]], x[perm[:n_val]], kind
    sampler = sgdata.toy(name)
    held_out = sampler(jr.key(10_000 + seed), 2000)
    return sampler, held_out, "vector"


def _solver_kind(solver: str, sampler: str) -> str:
    info = SOLVERS.get(_normalise(solver))
    if info is None:
        raise ValueError(
            f"Unknown solver {solver!r}. Known names: {', '.join(SOLVERS)} "
            "(see `sdegen solvers`)."
        )
    if sampler == "auto":
        return "ode" if info.ode else "sde"
    if not getattr(info, sampler):
        what = "probability-flow ODE" if sampler == "ode" else "reverse SDE"
        other = "sde" if sampler == "ode" else "ode"
        raise ValueError(
            f"Solver {solver!r} cannot solve the {what}; choose --sampler {other} or "
            "another solver."
        )
    return sampler


def _sample_one(sde, shape, solver, kind, num_steps, model, key):
    import sdegen

    if kind == "ode":
        return sdegen.sample_ode(key, sde, model, shape, solver, num_steps=num_steps,
                                 denoise=True)  # fmt: skip
    return sdegen.sample_sde(key, sde, model, shape, solver, num_steps=num_steps,
                             denoise=True)  # fmt: skip


def _num_devices(mesh) -> int:
    return 1 if mesh is None else int(mesh.devices.size)


def _round_up(n: int, d: int) -> int:
    return -(-int(n) // d) * d


def draw_samples(key, sde, model, shape, *, solver, sampler, num_steps, num, chunk=500,
                 mesh=None):  # fmt: skip
    """`num` samples with the EMA/raw `model`: [`sdegen.sample_many`][] of
    [`sdegen.sample_ode`][] or [`sdegen.sample_sde`][] with the keys
    `jax.random.split(key, num)`, in chunks of `chunk` (rounded up to a multiple of
    the number of devices of `mesh`) sharded over `mesh`. The samples do not depend
    on the mesh or the chunk size."""
    kind = _solver_kind(solver, sampler)
    one = eqx.Partial(_sample_one, sde, tuple(shape), solver, kind, int(num_steps),
                      model)  # fmt: skip
    size = _round_up(chunk, _num_devices(mesh))
    return sample_many(key, num, one, chunk_size=size, mesh=mesh)


def _draw(key, sde, model, shape, scfg, num=None, mesh=None):
    return draw_samples(
        key,
        sde,
        model,
        shape,
        solver=scfg["solver"],
        sampler=scfg["sampler"],
        num_steps=scfg["sample_steps"],
        num=scfg["num_samples"] if num is None else num,
        mesh=mesh,
    )


# ---------------------------------------------------------------- metrics


def _sample_metrics(samples: np.ndarray, held_out: np.ndarray, kind: str, name: str):
    finite = bool(np.all(np.isfinite(samples)))
    out: dict[str, Any] = {"num_samples": int(samples.shape[0]),
                           "samples_finite": finite}  # fmt: skip
    if not finite:
        return out
    if kind == "vector":
        n = min(len(samples), len(held_out), 2000)
        x = jnp.asarray(samples[:n])
        y = jnp.asarray(held_out[:n])
        out["mmd"] = float(metrics.mmd(x, y))
        out["sliced_wasserstein"] = float(metrics.sliced_wasserstein(jr.key(0), x, y))
        if len(held_out) >= 2 * n:
            # the same statistic between two independent data sets: the noise floor
            y2 = jnp.asarray(held_out[n : 2 * n])
            out["mmd_data_vs_data"] = float(metrics.mmd(y2, y))
        if name in ("8gaussians", "eight_gaussians"):
            frac = metrics.component_fractions(sgdata.eight_gaussians(), x)
            out["component_fractions"] = np.asarray(frac).tolist()
    elif name == "digits":
        out.update(_digit_scores(samples))
    out["sample_mean"] = float(np.mean(samples))
    out["sample_std"] = float(np.std(samples))
    return out


def _digit_scores(samples: np.ndarray) -> dict[str, Any]:
    """How digit-like samples are: a logistic-regression classifier trained on the
    real digits gives each sample a class and a confidence."""
    from sklearn.linear_model import LogisticRegression

    x, y = sgdata.load_digits()
    clf = LogisticRegression(max_iter=5000, C=0.1)
    clf.fit(np.asarray(x).reshape(len(x), -1), np.asarray(y))
    p = clf.predict_proba(samples.reshape(len(samples), -1).astype(np.float64))
    p_real = clf.predict_proba(np.asarray(x).reshape(len(x), -1))
    counts = np.bincount(np.argmax(p, axis=1), minlength=10)
    return {
        "classifier_confidence": float(np.mean(np.max(p, axis=1))),
        "classifier_confidence_real_digits": float(np.mean(np.max(p_real, axis=1))),
        "fraction_confident_0.9": float(np.mean(np.max(p, axis=1) > 0.9)),
        "class_counts": counts.tolist(),
    }


def _write_samples(path: Path, samples: np.ndarray, held_out: np.ndarray, kind: str,
                   title: str) -> None:  # fmt: skip
    from ._plot import save_image_grid, save_scatter

    if kind == "image" and samples.ndim == 4:
        save_image_grid(path, samples[:100], scale=6)
    elif samples.ndim == 2 and samples.shape[1] == 2:
        save_scatter(path, samples, held_out, title=title)
    else:
        np.save(path.with_suffix(".npy"), samples)


# ---------------------------------------------------------------- commands


def _run_config(args: argparse.Namespace) -> dict[str, Any]:
    train_x, held_out, kind = _load_data(args.dataset, args.seed)
    d = dict(_DEFAULTS[kind])
    if args.quick:
        d.update(_QUICK)
    for k in list(d):
        v = getattr(args, k, None)
        if v is not None:
            d[k] = v
    shape = tuple(np.shape(held_out)[1:])
    # auto: an MLP on (flattened) small data, which trains on 2 CPU cores in
    # minutes; a U-Net for larger images.
    big = kind == "image" and math.prod(shape) > 256
    net = args.net if args.net != "auto" else ("unet" if big else "mlp")
    if net == "unet" and not args.quick:
        # a small U-Net unless sizes are given: base 16 channels, 2 levels
        d["net_width"] = args.net_width or 16
        d["net_depth"] = args.net_depth or 2
    sigma_data = float(np.std(np.asarray(held_out)))
    sigma_max = args.sigma_max
    if sigma_max is None:
        flat = np.asarray(held_out).reshape(len(held_out), -1)[:500]
        sigma_max = float(np.max(np.linalg.norm(flat[:, None] - flat[None], axis=-1)))
    cfg = {
        "dataset": args.dataset,
        "kind": kind,
        "data_shape": list(shape),
        "sde": args.sde,
        "sigma_max": round(sigma_max, 3),
        "net": net,
        "net_width": d["net_width"],
        "net_depth": d["net_depth"],
        "param": args.param,
        "sigma_data": round(sigma_data, 4),
        "loss": args.loss,
        "dtype": str(jnp.zeros(()).dtype),
        "train": TrainConfig(
            num_steps=int(d["steps"]), batch_size=int(d["batch_size"]),
            lr=float(d["lr"]), warmup=int(d["warmup"]),
            ema_decay=float(d["ema_decay"]), seed=int(args.seed),
            log_every=max(1, min(100, int(d["steps"]) // 10)),
            eval_every=d.get("eval_every") or max(1, int(d["steps"]) // 4),
            ckpt_every=d.get("ckpt_every") or max(1, int(d["steps"]) // 4),
        ).to_dict(),
    }  # fmt: skip
    sample_cfg = {k: d[k] for k in ("solver", "sampler", "sample_steps", "num_samples")}
    _solver_kind(sample_cfg["solver"], sample_cfg["sampler"])
    return {"run": cfg, "sample": sample_cfg, "data": (train_x, held_out, kind)}


def cmd_train(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out)
    mesh = getattr(args, "mesh", None)
    main_process = is_main_process()  # the only process that writes files
    built = _run_config(args)
    cfg, scfg = built["run"], built["sample"]
    train_x, held_out, kind = built["data"]
    tcfg = TrainConfig.from_dict(cfg["train"])
    if mesh is not None:
        check_divisible(tcfg.batch_size, mesh)  # before anything is written
    sde = _build_sde(cfg)
    model = _build_model(cfg, sde, jr.fold_in(jr.key(tcfg.seed), 2))
    loss_fn = _build_loss(cfg, sde)
    out.mkdir(parents=True, exist_ok=True)
    if main_process:
        atomic_write_json(out / "config.json", {**cfg, "sample": scfg})
    eval_batch = jnp.asarray(held_out[: min(len(held_out), 512)])
    eval_loss = eqx.filter_jit(loss_fn)
    shape = tuple(cfg["data_shape"])
    n_eval_samples = min(scfg["num_samples"], 64 if kind == "image" else 1000)

    def eval_fn(state: TrainState) -> dict[str, Any]:
        res = {"eval_loss": float(eval_loss(state.ema_model, eval_batch, jr.key(7)))}
        samples = _draw(jr.key(11), sde, state.ema_model, shape, scfg, n_eval_samples,
                        mesh)  # fmt: skip
        if main_process:
            _write_samples(out / "samples" / f"step_{state.step:07d}.png", samples,
                           np.asarray(held_out), kind, f"step {state.step}")  # fmt: skip
        if kind == "vector":
            m = _sample_metrics(samples, np.asarray(held_out), kind, cfg["dataset"])
            res.update({k: m[k] for k in ("mmd", "sliced_wasserstein") if k in m})
        return res

    print(f"sdegen: training on {cfg['dataset']} {shape} with {cfg['sde']} SDE, "
          f"{cfg['net']} ({_num_params(model):,} parameters, {cfg['param']} "
          f"parametrisation), {tcfg.num_steps} steps of batch {tcfg.batch_size} "
          f"on {_num_devices(mesh)} device(s); writing to {out}/",
          file=sys.stderr)  # fmt: skip
    t_start = time.perf_counter()

    def report(state: TrainState) -> None:
        if args.no_progress:  # one line per log interval instead of a progress bar
            rec = f"loss {float(np.mean(state.losses[-tcfg.log_every :])):.4g}"
            wall = time.perf_counter() - t_start
            print(f"sdegen: step {state.step}/{tcfg.num_steps}, {rec}, "
                  f"{wall:.0f} s", file=sys.stderr)  # fmt: skip

    state, history = train(model, loss_fn, train_x, tcfg, ckpt_dir=out / "checkpoints",
                           resume=not args.no_resume, hparams=cfg, eval_fn=eval_fn,
                           callback=report, progress=not args.no_progress,
                           mesh=mesh)  # fmt: skip
    from ._plot import save_loss_curve

    ev = history["eval"]
    if main_process:
        save_loss_curve(out / "loss.png", state.losses, [e["step"] for e in ev],
                        [e["eval_loss"] for e in ev],
                        title=f"{cfg['dataset']}: {cfg['loss']} loss")  # fmt: skip
    t0 = time.perf_counter()
    samples = _draw(jr.key(tcfg.seed + 1), sde, state.ema_model, shape, scfg,
                    mesh=mesh)  # fmt: skip
    t_sample = time.perf_counter() - t0
    if main_process:
        _write_samples(out / "samples.png", samples, np.asarray(held_out), kind,
                       f"{cfg['dataset']}: {scfg['solver']} ({scfg['sampler']}), "
                       f"{scfg['sample_steps']} steps")  # fmt: skip
        np.save(out / "samples.npy", samples)
    logs = history["log"]
    tail = state.losses[-max(1, len(state.losses) // 10) :]
    result = {
        "dataset": cfg["dataset"],
        "steps": int(state.step),
        "final_loss": float(np.mean(tail)) if len(tail) else None,
        "eval_loss": ev[-1]["eval_loss"] if ev else None,
        "train_wall_time_s": history["wall_time_s"],
        "train_steps_per_s": history["steps_per_s"],
        "steady_steps_per_s": logs[-1]["steps_per_s"] if logs else None,
        "num_params": _num_params(model),
        "solver": scfg["solver"],
        "sampler": scfg["sampler"],
        "sample_steps": scfg["sample_steps"],
        "sample_wall_time_s": t_sample,
        "num_devices": _num_devices(mesh),
        **_sample_metrics(samples, np.asarray(held_out), kind, cfg["dataset"]),
        "eval_history": ev,
    }
    if main_process:
        atomic_write_json(out / "metrics.json", result)
        print(_summary(result, out), file=sys.stderr)
    return result


def _summary(m: dict[str, Any], out: Path) -> str:
    keys = ("steps", "final_loss", "eval_loss", "train_wall_time_s",
            "steady_steps_per_s", "mmd", "mmd_data_vs_data", "sliced_wasserstein",
            "classifier_confidence", "fraction_confident_0.9")  # fmt: skip
    parts = [f"{k}={m[k]:.4g}" if isinstance(m[k], float) else f"{k}={m[k]}"
             for k in keys if m.get(k) is not None]  # fmt: skip
    return ("sdegen: " + ", ".join(parts) + f"\nsdegen: wrote {out}/samples.png, "
            f"{out}/loss.png, {out}/metrics.json, {out}/checkpoints/")  # fmt: skip


def _num_params(model) -> int:
    leaves = jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array))
    return int(sum(x.size for x in leaves))


def _load_run(out: Path):
    cfg_path = out / "config.json"
    if not cfg_path.is_file():
        raise ValueError(
            f"{str(cfg_path)!r} not found: `--out` must be a folder written by "
            "`sdegen train` or `sdegen demo`."
        )
    cfg = json.loads(cfg_path.read_text())
    sde = _build_sde(cfg)
    tcfg = TrainConfig.from_dict(cfg["train"])
    model = _build_model(cfg, sde, jr.fold_in(jr.key(tcfg.seed), 2))
    opt_state = make_optimizer(tcfg).init(eqx.filter(model, eqx.is_inexact_array))
    path = latest_checkpoint(out / "checkpoints")
    if path is None:
        where = str(out / "checkpoints")
        raise CheckpointError(f"No complete checkpoint in {where!r}.")
    n = int(checkpoint_metadata(path)["step"])
    like = TrainState(model, model, opt_state, n, np.zeros((n,), np.float64))
    state = load_checkpoint(path, like)
    return cfg, sde, state


def cmd_sample(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out)
    mesh = getattr(args, "mesh", None)
    cfg, sde, state = _load_run(out)
    scfg = dict(cfg.get("sample", {}))
    for k in ("solver", "sampler", "sample_steps", "num_samples"):
        if getattr(args, k, None) is not None:
            scfg[k] = getattr(args, k)
    scfg.setdefault("sampler", "auto")
    _solver_kind(scfg["solver"], scfg["sampler"])
    _, held_out, kind = _load_data(cfg["dataset"], int(cfg["train"]["seed"]))
    model = state.model if args.no_ema else state.ema_model
    t0 = time.perf_counter()
    samples = _draw(jr.key(args.seed), sde, model, tuple(cfg["data_shape"]), scfg,
                    mesh=mesh)  # fmt: skip
    wall = time.perf_counter() - t0
    name = args.name or f"samples_{_normalise(scfg['solver'])}_{scfg['sample_steps']}"
    png = out / f"{name}.png"
    title = f"{scfg['solver']} ({scfg['sampler']}), {scfg['sample_steps']} steps"
    result = {
        "step": int(state.step),
        **scfg,
        "wall_time_s": wall,
        "num_devices": _num_devices(mesh),
        **_sample_metrics(samples, np.asarray(held_out), kind, cfg["dataset"]),
    }
    if is_main_process():
        _write_samples(png, samples, np.asarray(held_out), kind, title)
        np.save(out / f"{name}.npy", samples)
        atomic_write_json(out / f"{name}.json", result)
        print(f"sdegen: wrote {png} ({len(samples)} samples in {wall:.1f} s)",
              file=sys.stderr)  # fmt: skip
    return result


def cmd_likelihood(args: argparse.Namespace) -> dict[str, Any]:
    import sdegen

    out = Path(args.out)
    mesh = getattr(args, "mesh", None)
    cfg, sde, state = _load_run(out)
    _, held_out, kind = _load_data(cfg["dataset"], int(cfg["train"]["seed"]))
    n = min(args.num_points, len(held_out))
    x = jnp.asarray(held_out[:n])
    num_dims = int(np.prod(cfg["data_shape"]))
    trace = args.trace or ("exact" if num_dims <= 16 else "hutchinson")
    dequantised = cfg["dataset"] == "digits"
    if dequantised:
        # Digits take the 17 values v/8 - 1; dequantise uniformly within each bin
        # of width 1/8 centred on the value.
        levels = jnp.round((x + 1) * 8).astype(jnp.int32)
        lo = -1.0 - 1.0 / 16
        x = sdegen.dequantize(jr.key(args.seed), levels, (lo, lo + 17 / 8),
                              num_bins=17, dtype=x.dtype)  # fmt: skip
    model = state.ema_model
    t0 = time.perf_counter()
    # Probe keys fold_in(key, i), as in `log_likelihood_batch`; chunks of
    # --batch-size (rounded up to a multiple of the device count) over the mesh.
    chunk = _round_up(args.batch_size, _num_devices(mesh))
    logp, _ = sdegen.log_likelihood_many(
        sde, model, x, jr.key(args.seed + 1), chunk_size=chunk, mesh=mesh,
        solver=args.solver, rtol=args.rtol, atol=args.atol, trace=trace,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    logp = np.asarray(logp, np.float64)
    if dequantised:
        lo = -1.0 - 1.0 / 16
        bpd = np.asarray(sdegen.bits_per_dim(jnp.asarray(logp), num_dims,
                                             data_range=(lo, lo + 17 / 8),
                                             num_bins=17))  # fmt: skip
        what = "bits/dim (17-level dequantised digits)"
    else:
        bpd = -logp / (num_dims * math.log(2.0))
        what = "bits/dim (continuous density, -log2 p / D)"
    mean = float(np.mean(bpd))
    half = float(1.96 * np.std(bpd, ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    result = {"num_points": n, "bits_per_dim": mean, "ci95_half_width": half,
              "nll_nats": float(-np.mean(logp)), "trace": trace,
              "solver": args.solver, "rtol": args.rtol, "atol": args.atol,
              "wall_time_s": wall, "what": what,
              "num_devices": _num_devices(mesh)}  # fmt: skip
    if is_main_process():
        atomic_write_json(out / "likelihood.json", result)
        print(f"{what}: {mean:.4f} ± {half:.4f} (95% CI over {n} held-out points; "
              f"NLL {-np.mean(logp):.4f} nats)")  # fmt: skip
    return result


def cmd_solvers(args: argparse.Namespace) -> str:
    table = solver_table()
    print(table)
    return table


def cmd_demo(args: argparse.Namespace) -> dict[str, Any]:
    return cmd_train(args)


# ---------------------------------------------------------------- parser


def _add_run_args(p: argparse.ArgumentParser, *, demo: bool) -> None:
    toys = ", ".join(sgdata.TOY_DATASETS)
    p.add_argument("--dataset", default="digits",
                   help=f"'digits' (embedded 8x8 digits), a 2-D toy set ({toys}), "
                        "or 'hf:NAME_OR_PATH' for a Hugging Face data set "
                        "(default: digits)")  # fmt: skip
    p.add_argument("--out", default="out" if demo else None, required=not demo,
                   help="output folder" + (" (default: out)" if demo else ""))
    p.add_argument("--sde", choices=SDES, default="vp", help="forward SDE (default vp)")
    p.add_argument("--sigma-max", type=float, default=None,
                   help="sigma_max of the VE SDE (default: largest distance "
                        "between held-out points)")  # fmt: skip
    p.add_argument("--net", choices=NETS, default="auto",
                   help="network (default auto: mlp for vectors and images of at most "
                        "256 values such as the 8x8 digits, unet for larger images; "
                        "an MLP on images works on the flattened pixels)")
    p.add_argument("--net-width", type=int, default=None,
                   help="MLP width / U-Net base channels")
    p.add_argument("--net-depth", type=int, default=None,
                   help="MLP hidden layers / U-Net levels")
    p.add_argument("--param", choices=PARAMS, default="noise",
                   help="parametrisation of the score (default noise)")
    p.add_argument("--loss", choices=LOSSES, default="dsm",
                   help="dsm (sigma^2 weighting) or dsm_likelihood (default dsm)")
    p.add_argument("--steps", type=int, default=None, help="training steps")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None, help="peak learning rate")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps")
    p.add_argument("--ema-decay", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    _add_sample_args(p)
    p.add_argument("--quick", action="store_true",
                   help="a tiny configuration that runs in seconds (for tests)")
    p.add_argument("--no-resume", action="store_true",
                   help="start afresh even if --out holds checkpoints")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_device_args(p)


def _add_device_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("devices (data parallelism)")
    g.add_argument("--devices", type=int, default=None, metavar="N",
                   help="run data-parallel on the first N devices, 0 for all of "
                        "them (of every host in a multi-host job); the batch size "
                        "must be a multiple of N (default: one device, no mesh)")  # fmt: skip
    g.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                   help="multi-host: address of process 0 (jax.distributed)")  # fmt: skip
    g.add_argument("--num-processes", type=int, default=None,
                   help="multi-host: total number of processes")  # fmt: skip
    g.add_argument("--process-id", type=int, default=None,
                   help="multi-host: index of this process in [0, num_processes)")  # fmt: skip


def _add_sample_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--solver", default=None,
                   help="solver name from `sdegen solvers` (default heun)")
    p.add_argument("--sampler", choices=("ode", "sde", "auto"), default=None,
                   help="probability-flow ODE or reverse SDE (default ode; auto: "
                        "the ODE when the solver can)")  # fmt: skip
    p.add_argument("--sample-steps", type=int, default=None,
                   help="fixed solver steps from T to eps")
    p.add_argument("--num-samples", type=int, default=None)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sdegen",
        description="Score-based generative modelling with SDEs (JAX, diffrax, "
        "equinox).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train a score model")
    _add_run_args(p, demo=False)
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("demo", help="train and sample on digits (or a 2-D toy set)")
    _add_run_args(p, demo=True)
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("sample", help="sample from a trained run")
    p.add_argument("--out", required=True, help="run folder (from train/demo)")
    _add_sample_args(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-ema", action="store_true", help="use the raw weights")
    p.add_argument("--name", default=None, help="base name of the output files")
    _add_device_args(p)
    p.set_defaults(func=cmd_sample)
    p = sub.add_parser("likelihood", help="bits/dim of held-out data")
    p.add_argument("--out", required=True, help="run folder (from train/demo)")
    p.add_argument("--num-points", type=int, default=64)
    p.add_argument("--solver", default="tsit5", help="adaptive ODE solver name")
    p.add_argument("--rtol", type=float, default=1e-5)
    p.add_argument("--atol", type=float, default=1e-5)
    p.add_argument("--trace", choices=("exact", "hutchinson"), default=None,
                   help="divergence estimator (default exact when D <= 16)")
    p.add_argument("--batch-size", type=int, default=64,
                   help="examples per chunk (rounded up to a multiple of --devices)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    _add_device_args(p)
    p.set_defaults(func=cmd_likelihood)
    p = sub.add_parser("solvers", help="print the table of solver names")
    p.set_defaults(func=cmd_solvers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `sdegen` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.mesh = _setup_devices(args)
        args.func(args)
    except (ValueError, CheckpointError) as e:
        print(f"sdegen {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


def _setup_devices(args: argparse.Namespace):
    """Connect the processes of a multi-host job (when any of its options is given;
    before any other JAX call), then the mesh of `--devices` (`None` without it)."""
    multi = (getattr(args, "coordinator", None), getattr(args, "num_processes", None),
             getattr(args, "process_id", None))  # fmt: skip
    if any(v is not None for v in multi):
        distributed_initialize(coordinator_address=multi[0], num_processes=multi[1],
                               process_id=multi[2])  # fmt: skip
    devices = getattr(args, "devices", None)
    if devices is None:
        return None
    available = jax.device_count()
    if not 0 <= devices <= available:
        raise ValueError(
            f"--devices must be in [0, {available}] (0: all {available} available "
            f"devices), got {devices}."
        )
    return make_mesh(devices or None)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
