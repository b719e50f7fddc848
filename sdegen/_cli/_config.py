"""The run configuration: flags and defaults -> `config.json` -> objects.

Names (SDE, network, parametrisation, loss) are resolved here, once, into objects;
the library below takes only objects. `config.json` has the sections `data` (the
data flags plus the shape, classes and scaling found), `sde`, `network`, `loss`,
`coupling`, `times`, `label_dropout`, `dtype`, `train` (a [`sdegen.TrainConfig`][]) and `sample` (the
default sampler of `sdegen sample`).
"""

import argparse
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._data import RunData, data_spec
from ._errors import CLIError


CONFIG_FORMAT = 2
"""The version of `config.json`'s layout; a run of another version cannot be read."""

# Defaults of `sdegen demo` (and of `train` where a flag is not given). Images: the
# recipe measured on the digits (docs/benchmarks.md, `sdegen advise`): DPM-Solver++(2M)
# with 20 steps on the log-SNR grid reaches the Fréchet floor of Heun with 100 steps.
DEFAULTS: dict[str, dict[str, Any]] = {
    "image": dict(steps=4000, batch_size=128, lr=1e-3, warmup=200, ema_decay=0.999,
                  net_width=512, net_depth=3, solver="dpmpp_2m", sampler="ode",
                  grid="logsnr", sample_steps=20, num_samples=100),
    "vector": dict(steps=4000, batch_size=256, lr=2e-3, warmup=200, ema_decay=0.995,
                   net_width=128, net_depth=3, solver="heun", sampler="ode",
                   sample_steps=100, num_samples=2000),
}  # fmt: skip
# `sdegen demo` draws enough samples for the metrics to mean something.
DEMO_NUM_SAMPLES = 500
QUICK: dict[str, Any] = dict(steps=30, batch_size=32, lr=1e-3, warmup=5,
                             ema_decay=0.9, net_width=16, net_depth=2, sample_steps=8,
                             num_samples=16, ckpt_every=15)  # fmt: skip
DEFAULT_LABEL_DROPOUT = 0.1


def _sde_dict(args: argparse.Namespace, held: np.ndarray) -> dict[str, Any]:
    if args.sde == "vp":
        return {"class": "VPSDE", "beta_min": 0.1, "beta_max": 20.0}
    if args.sde == "subvp":
        return {"class": "SubVPSDE", "beta_min": 0.1, "beta_max": 20.0}
    if args.sde in ("rectified", "cosine"):
        return {"class": "RectifiedFlow" if args.sde == "rectified" else
                "CosineInterpolant", "T": 1.0}  # fmt: skip
    sigma_max = args.sigma_max
    if sigma_max is None:
        flat = held.reshape(len(held), -1)[:500].astype(np.float64)
        sq = np.sum(flat**2, axis=1)
        d2 = np.maximum(sq[:, None] + sq[None] - 2 * flat @ flat.T, 0.0)
        sigma_max = max(float(np.sqrt(d2.max())), 0.02)
    return {"class": "VESDE", "sigma_min": 0.01, "sigma_max": round(sigma_max, 3)}


def run_config(args: argparse.Namespace, data: RunData, transform: Any, *,
               demo: bool) -> dict[str, Any]:  # fmt: skip
    """`config.json` of a new run from the flags, the defaults of the data's kind
    (`--quick`: tiny ones), the data found and the data transform (`None` or an
    [`sdegen.data.AffineTransform`][])."""
    import jax.numpy as jnp

    import sdegen as sg

    d = dict(DEFAULTS[data.kind])
    if demo:
        d["num_samples"] = max(d["num_samples"], DEMO_NUM_SAMPLES)
    if args.quick:
        d.update(QUICK)
    for k in list(d):
        v = getattr(args, k, None)
        if v is not None:
            d[k] = v
    # auto: an MLP on (flattened) small data, which trains on 2 CPU cores in
    # minutes; a small U-Net (base 16 channels, 2 levels) on larger images.
    big = data.kind == "image" and math.prod(data.shape) > 256
    net = args.net if args.net != "auto" else ("unet" if big else "mlp")
    if net == "unet" and data.kind != "image":
        raise CLIError(
            f"--net unet needs images (C, H, W), but the data set has shape "
            f"{data.shape}; use --net mlp."
        )
    if net == "plain" and data.num_classes is not None:
        raise CLIError("--net plain (sdegen.nn.PlainMLP) is not label-conditional; "
                       "use --net mlp with --label-column.")  # fmt: skip
    if net == "unet" and not args.quick:
        d["net_width"] = args.net_width or 16
        d["net_depth"] = args.net_depth or 2
    grid = getattr(args, "grid", None)
    if grid is None and getattr(args, "solver", None) is None:
        grid = d.get("grid")  # the default solver's grid
    sample = {"solver": d["solver"], "sampler": d["sampler"], "grid": grid,
              "sample_steps": d["sample_steps"], "num_samples": d["num_samples"]}  # fmt: skip
    from ._sampling import resolve_sampler

    resolve_sampler(sample)  # an unknown solver fails before anything is trained
    check_options_act(args, d)
    conditional = data.num_classes is not None
    objective = getattr(args, "objective", None) or "auto"
    if objective == "likelihood" and args.loss not in ("auto", "dsm_likelihood"):
        raise CLIError(f"--objective likelihood trains with --loss dsm_likelihood; got "
                       f"--loss {args.loss}.")  # fmt: skip
    if objective == "likelihood" and getattr(args, "times", None) not in (None, "importance"):
        raise CLIError(f"--objective likelihood draws its times by importance sampling; "
                       f"--times {args.times} would have no effect (drop it).")  # fmt: skip
    held = data.held_out if transform is None else transform.forward(data.held_out)
    if args.label_dropout is not None and not conditional:
        raise CLIError("--label-dropout needs --label-column (a conditional model).")
    steps = int(d["steps"])
    tcfg = sg.TrainConfig(
        num_steps=steps, batch_size=int(d["batch_size"]), lr=float(d["lr"]),
        warmup=int(d["warmup"]), ema_decay=float(d["ema_decay"]), seed=int(args.seed),
        log_every=max(1, min(100, steps // 10)),
        eval_every=steps if args.quick else max(1, steps // 4),
        ckpt_every=d.get("ckpt_every") or max(1, steps // 4),
    )  # fmt: skip
    return {
        "format": CONFIG_FORMAT,
        "data": {**data_spec(args), "kind": data.kind, "shape": list(data.shape),
                 "num_classes": data.num_classes, "format": data.format,
                 "levels": data.levels},  # fmt: skip
        "transform": None if transform is None else transform.to_dict(),
        "sde": _sde_dict(args, held),
        "network": {"net": net, "width": int(d["net_width"]),
                    "depth": int(d["net_depth"]), "param": args.param,
                    "sigma_data": round(max(float(np.std(held)), 1e-3), 4)},  # fmt: skip
        "loss": _loss_name(args.loss, args.param, objective),
        **_flow_flags(args, _loss_name(args.loss, args.param, objective)),
        "objective": objective,
        "dequantize": dequantize_half_width(data, args),
        "label_dropout": (DEFAULT_LABEL_DROPOUT if args.label_dropout is None
                          else args.label_dropout) if conditional else None,  # fmt: skip
        "dtype": str(jnp.zeros(()).dtype),
        "train": tcfg.to_dict(),
        "sample": sample,
    }


def check_options_act(args: argparse.Namespace, d: dict[str, Any]) -> None:
    """Every option given must act: a flag that the other flags make void is an error
    naming it (not silently ignored). `d`: the resolved settings."""
    if getattr(args, "sigma_max", None) is not None and getattr(args, "sde", "ve") != "ve":
        raise CLIError(
            f"--sigma-max sets the VE SDE's largest noise level; it has no effect with "
            f"--sde {args.sde}. Use --sde ve, or drop --sigma-max."
        )
    if getattr(args, "warmup", None) is not None and int(d["warmup"]) > int(d["steps"]):
        raise CLIError(
            f"--warmup {d['warmup']} is longer than the training ({d['steps']} steps, "
            "--steps): the learning rate would never reach --lr. Give a shorter "
            "--warmup or more --steps."
        )


def _loss_name(loss: str, param: str, objective: str = "auto") -> str:
    """`--loss auto`: EDM's weighting for the EDM parametrisation (its unit-weight
    loss on the raw network), sigma^2 otherwise; `--objective likelihood`: the
    likelihood weighting (with importance-sampled times, see `Loss`)."""
    if objective == "likelihood":
        return "dsm_likelihood"
    if loss != "auto":
        return loss
    return {"edm": "dsm_edm", "velocity": "cfm"}.get(param, "dsm")


def _flow_flags(args: argparse.Namespace, loss: str) -> dict[str, Any]:
    """`coupling` and `times` of the run (`--coupling` only with `--loss cfm`)."""
    coupling = getattr(args, "coupling", None)
    if coupling not in (None, "independent") and loss != "cfm":
        raise CLIError(f"--coupling {coupling} needs --loss cfm (flow matching pairs "
                       f"data and noise; the loss here is {loss}).")  # fmt: skip
    return {"coupling": coupling or "independent",
            "times": getattr(args, "times", None) or "uniform"}


def dequantize_half_width(data: RunData, args: Any = None) -> float | None:
    """Half the width of a quantisation bin of the data in $[-1, 1]$,
    $h = 1/(L - 1)$ for $L$ levels (the digits' 17, 8-bit images' 256), or `None`
    for continuous data or `--no-dequantize`: quantised data are trained on
    uniformly dequantised values, the density `sdegen likelihood` evaluates."""
    if data.levels is None or getattr(args, "no_dequantize", False):
        return None
    return 1.0 / (data.levels - 1)


def hparams(cfg: dict[str, Any]) -> dict[str, Any]:
    """What a resumed run must share with the checkpoint (not the sampler)."""
    return {k: v for k, v in cfg.items() if k not in ("sample", "train")}


def build_transform(cfg: dict[str, Any]):
    """The data transform of a run (`None` when it has none)."""
    import sdegen as sg

    d = cfg.get("transform")
    return None if d is None else sg.data.transform_from_dict(d)


def build_sde(cfg: dict[str, Any]):
    from .._runs._export import sde_from_dict

    return sde_from_dict(cfg["sde"])


def build_model(cfg: dict[str, Any], sde: Any):
    """The (initial) score model of a run: its weights are a function of the seed."""
    import jax.random as jr

    from .._runs._export import build_model as build

    key = jr.fold_in(jr.key(int(cfg["train"]["seed"])), 2)
    return build(sde, tuple(cfg["data"]["shape"]), cfg["network"],
                 num_classes=cfg["data"].get("num_classes"), key=key)  # fmt: skip


def split_batch(batch: Any) -> tuple[Any, Any]:
    """`(x, labels)` of a batch: an array, an `(x, labels)` pair or a row dict
    `{"x", "label"}` of a `datasets.Dataset`."""
    if isinstance(batch, dict):
        return batch["x"], batch.get("label")
    if isinstance(batch, tuple | list):
        return batch[0], batch[1]
    return batch, None


@dataclass(frozen=True)
class Loss:
    """`loss(model, batch, key)` of a run: denoising score matching with σ², EDM
    or likelihood weighting; for a conditional model, each label is replaced by the null
    label with probability `label_dropout` (classifier-free guidance training).
    Hashable by value, so the same run's loss reuses a compiled training step."""

    sde: Any
    weighting: Any
    p_drop: float
    null: int | None
    cfm: bool = False
    coupling: str = "independent"
    times: str = "uniform"
    importance: bool = False
    dequantize: str | None = None
    """JSON `{"transform", "half_width"}`: each batch (in the model's space) is mapped
    back to the data, given fresh uniform noise within its quantisation bin
    ± h and mapped forward again (training on dequantised data)."""

    @classmethod
    def of(cls, cfg: dict[str, Any], sde: Any) -> "Loss":
        import json

        import sdegen as sg

        weighting: Any = {"dsm": "sigma2", "dsm_likelihood": "likelihood"}.get(
            cfg["loss"])
        if cfg["loss"] == "dsm_edm":
            weighting = sg.EDMWeighting(float(cfg["network"]["sigma_data"]))
        half = cfg.get("dequantize")
        deq = None if not half else json.dumps({"transform": cfg.get("transform"),
                                                "half_width": half})  # fmt: skip
        return cls(sde, weighting, float(cfg.get("label_dropout") or 0.0),
                   cfg["data"].get("num_classes"), cfg["loss"] == "cfm",
                   cfg.get("coupling", "independent"), cfg.get("times", "uniform"),
                   cfg.get("objective") == "likelihood", deq)  # fmt: skip

    def _dequantized(self, x, key):
        import json

        import jax.random as jr

        import sdegen as sg

        d = json.loads(self.dequantize)
        t = None if d["transform"] is None else sg.data.transform_from_dict(d["transform"])
        h = float(d["half_width"])
        y = x if t is None else t.inverse(x)
        y = y + jr.uniform(key, y.shape, y.dtype, -h, h)
        return y if t is None else t.forward(y)

    def __call__(self, model, batch, key):
        import jax.numpy as jnp
        import jax.random as jr

        import sdegen as sg

        x, labels = split_batch(batch)
        x = jnp.asarray(x)
        if self.dequantize is not None:
            key, sub = jr.split(key)
            x = self._dequantized(x, sub)
        kw: dict[str, Any] = {}
        if labels is not None:
            kw.update(labels=jnp.asarray(labels), label_dropout=self.p_drop,
                      null_label=self.null)  # fmt: skip
        if self.cfm:
            return sg.cfm_loss(model, self.sde, x, key, coupling=self.coupling,
                               times=self.times, **kw)  # fmt: skip
        if self.importance:
            kw["importance_sampling"] = True
        else:
            kw["times"] = self.times
        return sg.dsm_loss(model, self.sde, x, key, weighting=self.weighting,
                           **kw)  # fmt: skip
