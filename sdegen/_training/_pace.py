r"""The pace of [`sdegen.train`][]'s loop: how many steps one compiled call runs, the
steady rate of the steps, the estimate of a long run, and Ctrl-C.

The steps run in chunks, one compiled call each (`sdegen._training._train._steps`,
whose trip count $k$ is traced: one compilation serves every $k$). A chunk is sized
by time, not by a count of steps: after the first step (the compilation) the next
chunk has one step; then, from the measured time $\tau$ of a step, $k = 2^{\lfloor
\log_2 (T/\tau)\rfloor}$ with $T$ = `_CHUNK_SECONDS`, at most 8 times the previous
chunk and at most the data's chunk size. So a chunk takes about $T/2 \ldots T$
seconds: the progress bar moves, and Ctrl-C is answered, after each chunk.

The *steady* rate counts the steps of the timed chunks over their time only: the
compilation, evaluations, checkpoints and log records are left out.
"""

import math
import signal
import threading
from typing import Any


_CHUNK_SECONDS = 0.5
_LONG_RUN_S = 600.0  # say so at start when the steps alone will take longer
_ESTIMATE_AFTER_S = 1.0  # of timed steps before the estimate is made


class Interrupted(KeyboardInterrupt):
    """Ctrl-C stopped [`sdegen.train`][] at `step`; `checkpoint` is the path of the
    checkpoint of that step (`None` without `ckpt_dir`)."""

    def __init__(self, step: int, checkpoint: Any):
        self.step, self.checkpoint = step, checkpoint
        where = (f"; its checkpoint is {str(checkpoint)!r}: call train again with the "
                 "same ckpt_dir (resume=True) to continue from it"
                 if checkpoint is not None else " (no ckpt_dir: nothing was saved)")  # fmt: skip
        super().__init__(f"training interrupted at step {step}{where}")


class Pace:
    """Chunk sizes, measured step times and rates of one `train` call."""

    def __init__(self, max_chunk: int):
        self.max_chunk = max(1, int(max_chunk))
        self.k = 0  # the last chunk's steps (0: the compilation has not run)
        self.step_s: float | None = None  # seconds per step, of the last chunk
        self.steps = self.seconds = 0  # timed steps and their time, in all
        self.interval_steps = self.interval_seconds = 0  # since the last log record
        self.estimated = False

    def size(self) -> int:
        """Steps of the next chunk."""
        if self.k == 0 or self.step_s is None:
            return 1
        k = _CHUNK_SECONDS / max(self.step_s, 1e-9)
        k = 2 ** int(math.floor(math.log2(max(k, 1.0))))
        return int(max(1, min(k, 8 * self.k, self.max_chunk)))

    def add(self, k: int, seconds: float) -> None:
        """A timed chunk of `k` steps took `seconds`."""
        self.k, self.step_s = k, seconds / k
        self.steps += k
        self.seconds += seconds
        self.interval_steps += k
        self.interval_seconds += seconds

    def first(self) -> None:
        self.k = 1

    def interval_rate(self, steps: int, wall: float) -> float:
        """Steps per second since the last record: of the timed chunks when there
        were any, else `steps / wall` (the compilation's interval)."""
        if self.interval_steps:
            rate = self.interval_steps / max(self.interval_seconds, 1e-12)
        else:
            rate = steps / max(wall, 1e-12)
        self.interval_steps = self.interval_seconds = 0
        return rate

    def steady_rate(self) -> float | None:
        """Steps per second of all timed chunks (`None`: none was timed)."""
        return self.steps / self.seconds if self.seconds > 0 else None

    def long_run(self, remaining: int) -> str | None:
        """Once, after `_ESTIMATE_AFTER_S` of timed steps: a note when the remaining
        steps will take more than `_LONG_RUN_S` on a CPU, else `None`."""
        if self.estimated or self.seconds < _ESTIMATE_AFTER_S or not remaining:
            return None
        self.estimated = True
        rate = self.steps / self.seconds
        eta = remaining / rate
        import jax

        platform = jax.default_backend()
        if eta <= _LONG_RUN_S or platform != "cpu":
            return None
        return (f"at {rate:.3g} steps/s the remaining {remaining} steps will take about "
                f"{duration(eta)} on the CPU (evaluations and sampling not counted); "
                "for a shorter run use fewer steps, a smaller batch, a narrower network "
                "or a GPU")  # fmt: skip


def duration(seconds: float) -> str:
    """`1 h 05 min`, `12 min 30 s` or `45 s`."""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    if s >= 60:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s} s"


class StopOnInterrupt:
    """While it is installed, the first Ctrl-C (SIGINT) only sets `requested` (the
    loop stops after the running chunk and saves a checkpoint); a second one
    interrupts at once. Installed only in the main thread and over Python's default
    handler (a caller's own handler is left alone), and with one process only (the
    processes of a multi-host run must stop at the same step)."""

    def __init__(self):
        import jax

        self.requested = False
        self._old = None
        if threading.current_thread() is not threading.main_thread():
            return
        if jax.process_count() > 1:
            return
        if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            return
        self._old = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def restore(self) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
            self._old = None
