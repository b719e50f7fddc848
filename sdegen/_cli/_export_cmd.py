"""`sdegen export` (a run's EMA model to one portable file) and `sdegen solvers` (the
table of solver names)."""

import argparse
from pathlib import Path
from typing import Any

from .._engine._solver_table import solver_table
from .._runs._export import check_destination, export_model
from ._errors import CLIError, flag_names
from ._report import say
from ._run import load_run, prepare_out


def _data_facts(data: dict[str, Any]) -> dict[str, Any] | None:
    """The data format of a run, with its number of quantisation levels (so that
    `meta.to_data` rounds to the data's values: 0..255 for 8-bit images)."""
    fmt = data.get("format")
    if fmt is None or data.get("levels") is None:
        return fmt
    return {**fmt, "levels": int(data["levels"])}


def cmd_export(args: argparse.Namespace) -> Path:
    out = prepare_out(args.out, writer=False)
    to = Path(args.to)
    if to.is_dir():
        raise CLIError(f"--to {str(to)!r} is a folder; expected a file name.")
    if to.parent.exists() and not to.parent.is_dir():
        raise CLIError(f"--to {str(to)!r}: {str(to.parent)!r} is a file, not a folder.")
    with flag_names({"path": "--to"}):
        check_destination(to)  # not over a checkpoint or run file; stray temp removed
    run = load_run(out, ema=not args.no_ema)
    cfg = run.cfg
    info: dict[str, Any] = {"step": run.step, "dataset": cfg["data"]["dataset"],
                            "loss": cfg["loss"], "ema": not args.no_ema,
                            "label_dropout": cfg.get("label_dropout"),
                            "sample": cfg["sample"]}  # fmt: skip
    try:
        path = export_model(to, run.model, sde=run.sde, shape=run.shape,
                            network=cfg["network"], num_classes=run.num_classes,
                            data=_data_facts(cfg["data"]),
                            transform=cfg.get("transform"), info=info)  # fmt: skip
    except OSError as e:
        raise CLIError(f"--to {str(to)!r}: cannot write it ({e.strerror or e}).") from None
    size = path.stat().st_size
    say(f"wrote {path} ({size / 1e6:.2f} MB: the {'EMA' if not args.no_ema else 'raw'} "
        f"model of step {run.step}); load it with `model, meta = "
        f"sdegen.load_model({str(path)!r})`")  # fmt: skip
    return path


def cmd_solvers(args: argparse.Namespace) -> str:
    table = solver_table()
    print(table)
    return table
