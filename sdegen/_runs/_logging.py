r"""Training logs: scalars per log interval to `metrics.jsonl` and (optionally) to
TensorBoard event files, and the progress report on screen.

`metrics.jsonl` holds one JSON object per line, `{"step": s, "loss": ..., ...}`;
TensorBoard gets the same scalars under `train/<name>` (and `eval/<name>` for the
evaluation function's metrics) through `tensorboardX`, imported only when used (the
`tensorboard` extra), so `tensorboard --logdir runs/` shows every run under `runs/`.
"""

import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._checkpoint import _json_default, remove_stray_temp_files


METRICS_FILE = "metrics.jsonl"


def tensorboard_available() -> bool:
    """Whether `tensorboardX` can be imported."""
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        return False
    return True


class MetricsLogger:
    """Appends log records to `log_dir/metrics.jsonl` and to TensorBoard.

    **Arguments:**

    - `log_dir`: the run folder (created if needed).
    - `tensorboard`: `True` (raise when `tensorboardX` is missing), `False`, or
      `None` (write events when `tensorboardX` is installed).
    - `start_step`: the step the run (re)starts from: records of later steps, left
      by an interrupted run, are dropped from `metrics.jsonl` and from TensorBoard
      (its `purge_step`), since the resumed run logs them again.
    """

    def __init__(self, log_dir: str | os.PathLike, *, tensorboard: bool | None = None,
                 start_step: int = 0):  # fmt: skip
        self.dir = Path(log_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        remove_stray_temp_files(self.dir)
        self.path = self.dir / METRICS_FILE
        self._truncate(start_step)
        self._file = open(self.path, "a")
        self._tb = None
        if tensorboard is None:
            tensorboard = tensorboard_available()
        if tensorboard:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:
                raise ValueError(
                    "`tensorboard=True` needs the `tensorboardX` package (pip install "
                    "'sdegen[tensorboard]' or pip install tensorboardX)."
                ) from None
            self._tb = SummaryWriter(str(self.dir), purge_step=start_step or None)

    def _truncate(self, start_step: int) -> None:
        if not self.path.exists():
            return
        keep = []
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a kill
                continue
            if int(rec.get("step", 0)) <= start_step:
                keep.append(line)
        self.path.write_text("".join(k + "\n" for k in keep))

    def write(self, record: dict[str, Any], prefix: str = "train") -> None:
        """Append one record (with a `step`); numbers also go to TensorBoard as
        `prefix/<name>`."""
        line = json.dumps({"kind": prefix, **record}, default=_json_default)
        self._file.write(line + "\n")
        self._file.flush()
        if self._tb is not None:
            step = int(record["step"])
            for k, v in record.items():
                if k == "step" or isinstance(v, bool):
                    continue
                if isinstance(v, int | float) and math.isfinite(v):
                    self._tb.add_scalar(f"{prefix}/{k}", v, step)
            self._tb.flush()

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def format_record(rec: dict[str, Any]) -> str:
    """One line for a log record: `step 100 | loss 0.512 | lr 0.001 | ...`."""
    parts = [f"step {rec['step']}"]
    for k, v in rec.items():
        if k in ("step", "num_devices"):
            continue
        if isinstance(v, float):
            parts.append(f"{k} {v:.4g}")
        elif isinstance(v, int) and not isinstance(v, bool):
            parts.append(f"{k} {v}")
    return " | ".join(parts)


class Progress:
    """The screen report of [`sdegen.train`][]: a tqdm bar (`mode=True`) whose
    description reads "compiling" until the first step has returned and which then
    moves after every chunk of steps (its rate and ETA those of the compiled steps),
    one printed line per log interval (`mode="lines"`), or nothing (`mode=False`)."""

    def __init__(self, mode: bool | str, total: int, initial: int):
        if mode not in (True, False, "lines"):
            raise ValueError(f"`progress` must be True, False or 'lines', got {mode!r}.")
        self.mode = mode
        self.bar = None
        if mode is True:
            from tqdm.auto import tqdm

            self.total = total
            self.bar = tqdm(total=total, initial=initial, unit="step", leave=False,
                            dynamic_ncols=True, desc="compiling")  # fmt: skip
        elif mode == "lines" and initial < total:
            print(f"sdegen.train: compiling the step (from step {initial})",
                  file=sys.stderr, flush=True)  # fmt: skip

    def compiled(self, seconds: float, step: int | None = None) -> None:
        """The first step (compilation included) took `seconds`; a new bar starts at
        `step`, so its rate and ETA leave the compilation out."""
        if self.bar is not None:
            from tqdm.auto import tqdm

            step = self.bar.n + 1 if step is None else step
            self.bar.close()
            self.bar = tqdm(total=self.total, initial=step, unit="step",
                            dynamic_ncols=True,
                            desc=f"training (compiled in {seconds:.0f} s)")  # fmt: skip
        elif self.mode == "lines":
            print(f"sdegen.train: first step done in {seconds:.1f} s (compilation "
                  "included)", file=sys.stderr, flush=True)  # fmt: skip

    def advance(self, step: int) -> None:
        """`step` steps are done (after every chunk)."""
        if self.bar is not None and step > self.bar.n:
            self.bar.update(step - self.bar.n)

    def note(self, message: str) -> None:
        """A line on stderr, above the bar."""
        if self.bar is not None:
            self.bar.write(f"sdegen.train: {message}", file=sys.stderr)
        elif self.mode == "lines":
            print(f"sdegen.train: {message}", file=sys.stderr, flush=True)

    def log(self, rec: dict[str, Any]) -> None:
        if self.bar is not None:
            self.advance(rec["step"])
            post = {"loss": f"{rec['loss']:.4g}"}
            if "lr" in rec:
                post["lr"] = f"{rec['lr']:.3g}"
            self.bar.set_postfix(post)
        elif self.mode == "lines":
            print(format_record(rec), file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


LogFn = Callable[[dict[str, Any]], None]
