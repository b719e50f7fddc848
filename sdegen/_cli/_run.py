"""The run folder: checking `--out`, removing stray temporary files, `config.json`,
and rebuilding a trained model from a run.

A run folder holds `config.json` (everything needed to rebuild the model and reload
the data), `checkpoints/` (atomic, checksummed `step_*.ckpt`), figures, `.npy`
samples and JSON metrics. Every file is written atomically: a temporary
`.NAME.*.tmp` in the same folder, then renamed; a process killed mid-write leaves
that temporary file behind, and the next `train` (or `demo`) in the folder removes
it.
"""

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._config import CONFIG_FORMAT
from ._errors import CLIError


CONFIG = "config.json"


def prepare_out(path: str | os.PathLike, *, writer: bool) -> Path:
    """Check `--out`; a `writer` (train, demo: the only commands that write
    `config.json` and checkpoints) takes the folder's lock (a second writer is
    refused, naming the first: `_runs/_owner.py`), then removes the temporary files an interrupted
    write left in the folder and in `checkpoints/`."""
    from sdegen_cli import FlagError, writable_folder

    try:
        p = writable_folder(path)
    except FlagError as e:
        raise CLIError(str(e)) from None
    if writer:
        import sdegen as sg

        from .._runs._checkpoint import remove_stray_temp_files
        from .._runs._owner import RunFolderBusy, claim_run_folder

        try:  # one owner per run folder, before anything in it is touched
            if sg.is_main_process():
                claim_run_folder(p)
        except RunFolderBusy as e:
            raise CLIError(f"--out {str(p)!r}: {e}") from None
        for d in (p, p / "checkpoints"):
            for f in remove_stray_temp_files(d):
                print(f"sdegen: removed {f}, left by an interrupted write",
                      file=sys.stderr)  # fmt: skip
    return p


def read_config(out: Path) -> dict[str, Any]:
    path = out / CONFIG
    if not out.is_dir():
        raise CLIError(
            f"--out {str(out)!r} is not a folder; expected a run folder written by "
            "`sdegen train` or `sdegen demo`."
        )
    if not path.is_file():
        raise CLIError(
            f"--out {str(out)!r} has no {CONFIG}; expected a run folder written by "
            "`sdegen train` or `sdegen demo`."
        )
    try:
        cfg = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CLIError(f"--out {str(out)!r}: {CONFIG} is corrupt ({e}).") from None
    if not isinstance(cfg, dict) or cfg.get("format") != CONFIG_FORMAT:
        raise CLIError(
            f"--out {str(out)!r}: {CONFIG} is from another version of sdegen (format "
            f"{cfg.get('format') if isinstance(cfg, dict) else None!r}, expected "
            f"{CONFIG_FORMAT}); train the run again."
        )
    return cfg


@dataclass
class Run:
    """A trained run, rebuilt: its config, SDE, model (EMA or raw) and step."""

    out: Path
    cfg: dict[str, Any]
    sde: Any
    model: Any
    step: int
    transform: Any = None
    """The data transform of the run (`None`: none): samples are mapped back by its
    `inverse`, inputs into the model's space by its `forward`."""

    def to_data(self, x: Any) -> Any:
        return x if self.transform is None else self.transform.inverse(x)

    def to_model(self, x: Any) -> Any:
        return x if self.transform is None else self.transform.forward(x)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.cfg["data"]["shape"])

    @property
    def num_classes(self) -> int | None:
        return self.cfg["data"].get("num_classes")


def load_run(out: str | os.PathLike, *, ema: bool = True) -> Run:
    """Rebuild the model of a run from `config.json` and its newest complete
    checkpoint."""
    import equinox as eqx
    import numpy as np

    import sdegen as sg

    from ._config import build_model, build_sde, build_transform

    out = Path(out)
    cfg = read_config(out)
    sde = build_sde(cfg)
    tcfg = sg.TrainConfig.from_dict(cfg["train"])
    model = build_model(cfg, sde)
    opt_state = sg.make_optimizer(tcfg).init(eqx.filter(model, eqx.is_inexact_array))
    path = sg.latest_checkpoint(out / "checkpoints")
    if path is None:
        raise sg.CheckpointError(
            f"--out {str(out)!r} has no complete checkpoint in checkpoints/ (was the "
            "training interrupted before its first checkpoint?)."
        )
    n = int(sg.checkpoint_metadata(path)["step"])
    like = sg.TrainState(model, model, opt_state, n, np.zeros((n,), np.float64))
    state = sg.load_checkpoint(path, like)
    return Run(out, cfg, sde, state.ema_model if ema else state.model, n,
               build_transform(cfg))
