"""The `sdegen` command's flags: parsed before JAX (or sdegen) is imported.

This module is the console script's entry point and imports only the standard
library, so `sdegen --help` and flag errors answer at once; importing `sdegen` (and
with it JAX) takes seconds. The commands themselves live in `sdegen._cli`, imported
after the flags are parsed and checked.

    sdegen train       train a score model; writes checkpoints, figures and metrics
    sdegen demo        train + sample on the embedded digits (or a 2-D toy set)
    sdegen sample      draw samples from a trained run (optionally one class, guided)
    sdegen inpaint     fill in masked parts of images with a trained run
    sdegen colorize    colour grey images with a trained run
    sdegen likelihood  bits/dim of held-out data through the probability-flow ODE
    sdegen export      write a run's EMA model to one portable file (sg.load_model)
    sdegen solvers     the table of solver names
    sdegen advise      measure every sampler on a run's model; recommend the cheapest

Every error is one line, `sdegen COMMAND: error: ...`, naming the flag at fault, and
the exit status is 2.
"""

import argparse
import importlib
import math
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path


# The built-in data sets (`sdegen.data.TOY_DATASETS` plus the digits; a test keeps
# this list in sync without importing sdegen here).
BUILTIN_DATASETS = ("digits", "8gaussians", "moons", "swiss_roll", "checkerboard",
                    "rings")  # fmt: skip
SDES = ("vp", "subvp", "ve", "rectified", "cosine")
NETS = ("auto", "mlp", "unet", "plain")
PARAMS = ("noise", "score", "edm", "velocity")
LOSSES = ("auto", "dsm", "dsm_edm", "dsm_likelihood", "cfm")
COUPLINGS = ("independent", "ot", "sb")
TIMES = ("uniform", "importance", "lognormal", "logit_normal")
TRANSFORMS = ("auto", "logit", "pixel", "mean", "none")
GRIDS = ("uniform", "logsnr", "karras")
MASKS = ("right", "left", "top", "bottom", "centre", "random")

# Which module of `sdegen._cli` runs each command, and its function.
COMMANDS = {
    "train": ("_train_cmd", "cmd_train"),
    "demo": ("_train_cmd", "cmd_demo"),
    "sample": ("_sample_cmd", "cmd_sample"),
    "inpaint": ("_edit_cmd", "cmd_inpaint"),
    "colorize": ("_edit_cmd", "cmd_colorize"),
    "likelihood": ("_likelihood_cmd", "cmd_likelihood"),
    "export": ("_export_cmd", "cmd_export"),
    "solvers": ("_export_cmd", "cmd_solvers"),
    "advise": ("_advise_cmd", "cmd_advise"),
}

GUIDANCE_HELP = (
    "classifier-free guidance weight W >= 0 in the convention of Ho & Salimans "
    "(2021): score = (1 + W) s(x, label) - W s(x, null). W = 0 is plain conditional "
    "sampling; diffusers' guidance_scale is W + 1 (its 1.0 is our 0, its 7.5 our "
    "6.5). Needs --label and a model trained with --label-column (default 0)"
)


class FlagError(Exception):
    """A bad command line: one line naming the flag."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are exceptions (turned into one line by
    `main`), not a usage dump and `sys.exit`."""

    def error(self, message: str):  # type: ignore[override]
        raise FlagError(message)


# ---------------------------------------------------------------- flag types


def _number(kind: type, what: str, ok: Callable[[float], bool]) -> Callable[[str], float]:
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not (math.isfinite(v) and ok(v)):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return v

    parse.__name__ = what
    return parse


positive_int = _number(int, "a positive int", lambda v: v >= 1)
nonneg_int = _number(int, "an int >= 0", lambda v: v >= 0)
positive_float = _number(float, "a number > 0", lambda v: v > 0)
nonneg_float = _number(float, "a number >= 0", lambda v: v >= 0)
probability = _number(float, "a number in [0, 1)", lambda v: 0 <= v < 1)


def image_size(text: str) -> tuple[int, int]:
    """`32` or `32x28` (height x width)."""
    parts = text.lower().split("x")
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        size = ()
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or min(size) < 1:
        raise argparse.ArgumentTypeError(
            f"expected a size such as 32 or 32x28 (height x width), got {text!r}"
        )
    return size  # type: ignore[return-value]


# ---------------------------------------------------------------- flag groups


def _add_out(p: argparse.ArgumentParser, *, demo: bool = False, run: bool = False):
    if demo:
        p.add_argument("--out", default="out", help="output folder (default: out)")
    elif run:
        p.add_argument("--out", required=True, metavar="RUN",
                       help="run folder written by `sdegen train` or `sdegen demo`")
    else:
        p.add_argument("--out", required=True, help="output folder (a run folder)")


def _add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="digits",
                   help="a built-in set (digits: the embedded 8x8 digits; 2-D toy "
                        "sets: 8gaussians, moons, swiss_roll, checkerboard, rings), a "
                        "folder written by datasets' save_to_disk, a local data "
                        "folder or file, or a Hugging Face hub name (hf:NAME forces "
                        "the hub) (default: digits)")  # fmt: skip
    g.add_argument("--split", default=None,
                   help="split of a hub data set or a saved DatasetDict (default "
                        "train)")  # fmt: skip
    g.add_argument("--image-column", default=None,
                   help="the image (or numeric array) column (default: the first "
                        "image column)")  # fmt: skip
    g.add_argument("--label-column", default=None,
                   help="integer class labels: trains a class-conditional model with "
                        "label dropout, for `sample --label N --guidance W` ('auto': "
                        "the data set's ClassLabel column; for digits: label)")  # fmt: skip
    g.add_argument("--image-size", type=image_size, default=None, metavar="HxW",
                   help="resize images to this size, e.g. 32 or 32x28")
    g.add_argument("--channels", type=int, choices=(1, 3), default=None,
                   help="convert images to 1 (grey) or 3 (RGB) channels (default: "
                        "those of the first image)")  # fmt: skip
    g.add_argument("--max-examples", type=positive_int, default=None,
                   help="use only the first N examples")
    g.add_argument("--transform", choices=TRANSFORMS, default="auto",
                   help="how the data are mapped to the model's space; recorded in the "
                        "run and undone on every output. logit: images in [-1, 1] "
                        "through logit(0.05 + 0.9 u), then centred by the mean example "
                        "and scaled to unit std (samples stay within [-1.11, 1.11]); "
                        "pixel / mean: centre by the mean example / mean value and "
                        "scale to unit std; none: the data as loaded (default auto: "
                        "logit for images, none for vectors)")  # fmt: skip


def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model and training")
    g.add_argument("--sde", choices=SDES, default="vp",
                   help="forward SDE (default vp); rectified: the straight path "
                        "x_t = (1 - t) x_0 + t eps, cosine: cos/sin path")  # fmt: skip
    g.add_argument("--sigma-max", type=positive_float, default=None,
                   help="sigma_max of the VE SDE (default: the largest distance "
                        "between held-out examples)")  # fmt: skip
    g.add_argument("--net", choices=NETS, default="auto",
                   help="network (default auto: an MLP on vectors and on images of at "
                        "most 256 values such as the 8x8 digits, a U-Net on larger "
                        "images; plain: sdegen.nn.PlainMLP, ReLU on [x, t - 1/2, "
                        "cos 2 pi t], not label-conditional)")  # fmt: skip
    g.add_argument("--net-width", type=positive_int, default=None,
                   help="MLP (or plain MLP) width / U-Net base channels")
    g.add_argument("--net-depth", type=positive_int, default=None,
                   help="MLP hidden layers / U-Net levels")
    g.add_argument("--param", choices=PARAMS, default="edm",
                   help="parametrisation of the score: edm (Karras et al. 2022 "
                        "preconditioning, default), noise (epsilon prediction), score "
                        "or velocity (flow matching's v)")  # fmt: skip
    g.add_argument("--loss", choices=LOSSES, default="auto",
                   help="denoising score matching weighted by sigma^2 (dsm), by EDM's "
                        "lambda (dsm_edm) or for likelihood (dsm_likelihood); default "
                        "auto: dsm_edm with --param edm, cfm with --param velocity, else "
                        "dsm); cfm: flow matching, ||v - (alpha' x0 + sigma' eps)||^2")
    g.add_argument("--coupling", choices=COUPLINGS, default=None,
                   help="pairing of data and noise for --loss cfm: independent "
                        "(default), ot (exact minibatch optimal transport) or sb "
                        "(entropic Schroedinger-bridge plan)")
    g.add_argument("--times", choices=TIMES, default=None,
                   help="how training times are drawn (default uniform; logit_normal: "
                        "SD3's logit(t/T) ~ N(0, 1))")  # fmt: skip
    g.add_argument("--objective", choices=("auto", "likelihood"), default="auto",
                   help="likelihood: train for bits/dim, the likelihood weighting "
                        "g^2 with importance-sampled times (Song et al. 2021), i.e. "
                        "--loss dsm_likelihood with times drawn in proportion to the "
                        "weight (default auto: the --loss weighting, uniform times)")  # fmt: skip
    g.add_argument("--no-dequantize", action="store_true",
                   help="train on the quantised values as they are (default: data "
                        "with a known number of levels, such as the digits' 17 or "
                        "8-bit images, are dequantised uniformly within each level's "
                        "bin at every step, the density `sdegen likelihood` scores)")  # fmt: skip
    g.add_argument("--label-dropout", type=probability, default=None,
                   help="probability of replacing a label by the null label while "
                        "training a conditional model, for classifier-free guidance "
                        "(default 0.1)")  # fmt: skip
    g.add_argument("--steps", type=positive_int, default=None, help="training steps")
    g.add_argument("--batch-size", type=positive_int, default=None)
    g.add_argument("--lr", type=positive_float, default=None, help="peak learning rate")
    g.add_argument("--warmup", type=nonneg_int, default=None, help="warm-up steps")
    g.add_argument("--ema-decay", type=probability, default=None)
    g.add_argument("--seed", type=nonneg_int, default=0)
    g.add_argument("--quick", action="store_true",
                   help="a tiny configuration that runs in seconds (for tests)")
    g.add_argument("--no-resume", action="store_true",
                   help="start afresh even if --out holds checkpoints (they are "
                        "deleted)")  # fmt: skip
    g.add_argument("--no-tensorboard", action="store_true",
                   help="no TensorBoard event files (written to --out when "
                        "tensorboardX is installed: the tensorboard extra); "
                        "metrics.jsonl is always written")  # fmt: skip


def _add_sample_args(p: argparse.ArgumentParser, *, sde_only: bool = False) -> None:
    g = p.add_argument_group("sampler")
    if sde_only:
        g.add_argument("--solver", default="euler_maruyama",
                       help="predictor: a reverse-SDE solver from `sdegen solvers` "
                            "(default euler_maruyama)")  # fmt: skip
    else:
        g.add_argument("--solver", default=None,
                       help="solver name from `sdegen solvers` (default: dpmpp_2m with 20 "
                            "steps on the logsnr grid for images, heun with 100 "
                            "steps for vectors)")  # fmt: skip
        g.add_argument("--sampler", choices=("ode", "sde", "auto"), default=None,
                       help="probability-flow ODE or reverse SDE (default ode; auto: "
                            "the ODE when the solver can)")  # fmt: skip
        g.add_argument("--grid", choices=GRIDS, default=None,
                       help="time grid of the fixed steps: uniform in t, in log-SNR, "
                            "or Karras et al.'s rho = 7 grid (default: the sampler's)")  # fmt: skip
    g.add_argument("--sample-steps", type=positive_int, default=None,
                   help="fixed solver steps from T to eps")
    if not sde_only:
        g.add_argument("--num-samples", type=positive_int, default=None)


def _add_condition_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("class-conditional sampling")
    g.add_argument("--label", type=nonneg_int, default=None,
                   help="sample this class (a model trained with --label-column)")
    g.add_argument("--guidance", type=nonneg_float, default=None, metavar="W",
                   help=GUIDANCE_HELP)


def _add_device_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("devices (data parallelism)")
    g.add_argument("--devices", type=int, default=None, metavar="N",
                   help="run data-parallel on the first N devices, 0 for all of "
                        "them (of every host in a multi-host job); the batch size "
                        "must be a multiple of N (default: one device, no mesh)")  # fmt: skip
    g.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                   help="multi-host: address of process 0 (jax.distributed)")
    g.add_argument("--num-processes", type=positive_int, default=None,
                   help="multi-host: total number of processes")
    g.add_argument("--process-id", type=nonneg_int, default=None,
                   help="multi-host: index of this process in [0, num_processes)")


def _add_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _add_run_args(p: argparse.ArgumentParser, *, demo: bool) -> None:
    _add_out(p, demo=demo)
    _add_data_args(p)
    _add_model_args(p)
    _add_sample_args(p)
    _add_progress(p)
    _add_device_args(p)


def _add_edit_args(p: argparse.ArgumentParser, what: str) -> None:
    _add_out(p, run=True)
    g = p.add_argument_group("inputs")
    g.add_argument("--input", nargs="+", default=None, metavar="FILE",
                   help=f"image files to {what} (resized to the model's size); by "
                        "default held-out examples of the run's data set")  # fmt: skip
    g.add_argument("--examples", type=positive_int, default=8,
                   help="number of held-out examples without --input (default 8)")
    _add_sample_args(p, sde_only=True)
    g = p.add_argument_group("corrector")
    g.add_argument("--corrector-steps", type=nonneg_int, default=1,
                   help="Langevin corrector steps per step (default 1)")
    g.add_argument("--snr", type=positive_float, default=0.16,
                   help="corrector signal-to-noise ratio (default 0.16)")
    _add_condition_args(p)
    p.add_argument("--seed", type=nonneg_int, default=0)
    p.add_argument("--no-ema", action="store_true", help="use the raw weights")
    p.add_argument("--name", default=None, help="base name of the output files")
    _add_progress(p)


def build_parser() -> argparse.ArgumentParser:
    """The parser of the `sdegen` command (standard library only)."""
    parser = _Parser(
        prog="sdegen",
        description="Score-based generative modelling with SDEs (JAX, diffrax, "
        "equinox).",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("train", help="train a score model")
    _add_run_args(p, demo=False)
    p = sub.add_parser("demo", help="train and sample on digits (or a 2-D toy set)")
    _add_run_args(p, demo=True)

    p = sub.add_parser("sample", help="sample from a trained run",
                       description="Draw samples from a trained run; writes NAME.png, "
                                   "NAME.npy and NAME.json in the run folder.")  # fmt: skip
    _add_out(p, run=True)
    _add_sample_args(p)
    _add_condition_args(p)
    p.add_argument("--seed", type=nonneg_int, default=0)
    p.add_argument("--no-ema", action="store_true", help="use the raw weights")
    p.add_argument("--name", default=None, help="base name of the output files")
    p.add_argument("--chunk-size", type=positive_int, default=500,
                   help="samples per compiled batch (default 500)")
    _add_progress(p)
    _add_device_args(p)

    p = sub.add_parser("inpaint", help="fill in masked parts of images")
    _add_edit_args(p, "inpaint")
    p.add_argument("--mask", choices=MASKS, default="right",
                   help="the part to fill in (default right: the right half is "
                        "unknown); random: half the pixels at random")  # fmt: skip
    p = sub.add_parser("colorize", help="colour grey images (a model of RGB images)")
    _add_edit_args(p, "colorize")

    p = sub.add_parser("likelihood", help="bits/dim of held-out data")
    _add_out(p, run=True)
    p.add_argument("--num-points", type=positive_int, default=64)
    p.add_argument("--solver", default="tsit5", help="adaptive ODE solver name")
    p.add_argument("--rtol", type=positive_float, default=1e-5)
    p.add_argument("--atol", type=positive_float, default=1e-5)
    p.add_argument("--trace", choices=("exact", "hutchinson"), default=None,
                   help="divergence estimator (default exact when D <= 16)")
    p.add_argument("--batch-size", type=positive_int, default=64,
                   help="examples per chunk (rounded up to a multiple of --devices)")
    p.add_argument("--seed", type=nonneg_int, default=0)
    _add_progress(p)
    _add_device_args(p)

    p = sub.add_parser("export", help="write a run's EMA model to one file",
                       description="Write the EMA model of a run (weights and a JSON "
                                   "header: SDE, network, data shape, labels, data "
                                   "scaling) to one file; load it in Python with "
                                   "`model, meta = sdegen.load_model(FILE)`.")  # fmt: skip
    _add_out(p, run=True)
    p.add_argument("--to", required=True, metavar="FILE", help="the file to write")
    p.add_argument("--no-ema", action="store_true", help="export the raw weights")

    sub.add_parser("solvers", help="print the table of solver names")

    p = sub.add_parser("advise", help="which sampler to use: measure them on a run",
                       description="Sample with every solver by name at several "
                                   "budgets of score evaluations (NFE), measure the "
                                   "Fréchet distance to held-out data over its "
                                   "data-vs-data floor, and recommend the cheapest "
                                   "solver that reaches --target; writes advise.json "
                                   "and advise.md in the run folder.")  # fmt: skip
    _add_out(p, run=True)
    p.add_argument("--solvers", nargs="+", default=None, metavar="NAME",
                   help="solver names (default: every fixed-step sampler)")
    p.add_argument("--nfe", type=positive_int, nargs="+", default=[5, 10, 20, 35, 50, 100],
                   help="budgets of score evaluations (default 5 10 20 35 50 100)")
    p.add_argument("--num-samples", type=positive_int, default=500,
                   help="samples per measurement (default 500)")
    p.add_argument("--quick", action="store_true",
                   help="measure a few samplers only (euler, ddim, dpmpp_2m at 10 and "
                        "20 score evaluations), in about a minute")
    p.add_argument("--target", type=positive_float, default=1.2,
                   help="the Fréchet distance / floor to reach (default 1.2)")
    p.add_argument("--seed", type=nonneg_int, default=0)
    _add_progress(p)
    return parser


# ---------------------------------------------------------------- --out


def writable_folder(path: str | os.PathLike, flag: str = "--out") -> Path:
    """`path` as a folder that exists (created if needed) and can be written, or a
    `FlagError` naming `flag`."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise FlagError(f"{flag} {str(p)!r} is a file; expected a folder.")
    try:
        p.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=p, prefix=".sdegen-write-test.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        what = "create the folder" if not p.is_dir() else "write in the folder"
        raise FlagError(
            f"{flag} {str(p)!r}: cannot {what} ({e.strerror or type(e).__name__})."
        ) from None
    return p


def check_out(args: argparse.Namespace) -> None:
    """`--out` before anything heavy is imported: a folder that can be written, and
    for the commands that read a run, one with a `config.json`."""
    out = getattr(args, "out", None)
    if out is None:
        return
    if args.command not in ("train", "demo"):
        p = Path(out)
        if not (p / "config.json").is_file():
            what = "is not a folder" if not p.is_dir() else "has no config.json"
            raise FlagError(
                f"--out {str(p)!r} {what}; expected a run folder written by `sdegen "
                "train` or `sdegen demo`."
            )
    writable_folder(out)
    if args.command in ("train", "demo"):
        _probe_owner(out)


def _probe_owner(out: str) -> None:
    """Refuse a run folder that another process trains into, before importing JAX:
    `sdegen/_runs/_owner.py` (standard library only) loaded on its own."""
    import importlib.util

    spec = importlib.util.find_spec("sdegen")
    if spec is None or spec.origin is None:  # pragma: no cover
        return
    path = Path(spec.origin).parent / "_runs" / "_owner.py"
    owner_spec = importlib.util.spec_from_file_location("_sdegen_owner_probe", path)
    if owner_spec is None or owner_spec.loader is None:  # pragma: no cover
        return
    owner = importlib.util.module_from_spec(owner_spec)
    owner_spec.loader.exec_module(owner)
    try:
        owner.probe_run_folder(out)
    except ValueError as e:
        raise FlagError(f"--out {str(out)!r}: {e}") from None


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `sdegen` command: parse (standard library only), then run
    the command. Returns the exit status: 0, 2 after a one-line error, or 130 after
    Ctrl-C (called as the process's entry, `argv=None`, it then exits at once)."""
    entry = argv is None  # the process's own command line
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    command = next((a for a in argv if a in COMMANDS), None)
    prefix = f"sdegen {command}" if command else "sdegen"
    try:
        args = parser.parse_args(argv)
        check_out(args)
    except FlagError as e:
        print(f"{prefix}: error: {_one_line(e)} (see `{prefix} --help`)", file=sys.stderr)
        return 2
    except SystemExit as e:  # --help
        return int(e.code or 0)
    module, func = COMMANDS[args.command]
    from sdegen._cli._command import run_command

    rc = run_command(importlib.import_module(f"sdegen._cli.{module}"), func, args)
    if rc == 130 and entry:
        # Ctrl-C in the `sdegen` process: its files are closed; end now, not after
        # the seconds XLA takes to tear down its compiled programs.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    return rc


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
