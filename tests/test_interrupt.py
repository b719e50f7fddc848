"""Ctrl-C during `sdegen train`: a child process training a U-Net on the digits gets
SIGINT once training runs; it ends within 2 s with the checkpoint of the step it
reached, and the same command resumes from that step. The progress bar moves every
chunk of steps (about half a second each), never more than 3 s apart."""

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import sdegen as sg


ROOT = Path(__file__).resolve().parent.parent
BAR = re.compile(r"training \(compiled in \d+ s\)[^\r\n]*?(\d+)/100000")


def _train_until_interrupted(out: Path, cache: Path, run_for: float):
    """Start `sdegen train`, send SIGINT `run_for` s after the compiled steps began;
    return (exit status, seconds from SIGINT to exit, stderr, [(time, step) of the
    bar])."""
    cmd = [sys.executable, str(ROOT / "sdegen_cli.py"), "train", "--out", str(out),
           "--dataset", "digits", "--net", "unet", "--net-width", "4",
           "--net-depth", "2", "--batch-size", "32", "--steps", "100000",
           "--no-tensorboard", "--quick"]  # fmt: skip
    # XLA's optimisations on (the suite turns them off): a step of this U-Net takes
    # seconds without them, and a step is the least that can run after Ctrl-C.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_DISABLE_MOST_OPTIMIZATIONS": "0",
           "JAX_COMPILATION_CACHE_DIR": str(cache),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
           "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}  # fmt: skip
    began = time.perf_counter()
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, env=env)
    text, bar = [], []

    def read():
        while chunk := proc.stderr.read1(4096):
            now = time.perf_counter()
            text.append(chunk.decode(errors="replace"))
            bar.extend((now, int(m)) for m in BAR.findall(text[-1]))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.perf_counter() + 240
    while not bar and proc.poll() is None and time.perf_counter() < deadline:
        time.sleep(0.05)
    assert bar, "".join(text)
    print(f"training began {time.perf_counter() - began:.1f} s after the start")
    time.sleep(run_for)
    sent = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    try:
        rc = proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.stderr.close()
    stop = time.perf_counter() - sent
    reader.join(5)
    return rc, stop, "".join(text), [(t, s) for t, s in bar if t < sent]


@pytest.mark.long
def test_ctrl_c_stops_training_with_a_checkpoint_and_resumes(tmp_path):
    out, cache = tmp_path / "run", tmp_path / "cache"
    rc, stop, err, bar = _train_until_interrupted(out, cache, run_for=4.0)
    assert rc == 130, err
    print(f"stopped {stop:.2f} s after SIGINT")
    assert stop < 2.0, (stop, err)
    step = int(re.search(r"interrupted at step (\d+); saved", err).group(1))
    ckpt = sg.latest_checkpoint(out / "checkpoints")
    assert ckpt is not None and ckpt.name == f"step_{step:09d}.ckpt"
    assert "the same command without --no-resume continues from it: sdegen train" in err
    # the bar moved at least every 3 s, and the checkpoint holds every step it showed
    times = [t for t, _ in bar]
    assert len(bar) >= 2 and max(np.diff(times)) < 3.0, bar
    assert bar[-1][1] <= step
    assert int(sg.checkpoint_metadata(ckpt)["step"]) == step
    # the same command resumes from that step (the bar starts there) and goes on
    rc2, stop2, err2, bar2 = _train_until_interrupted(out, cache, run_for=1.0)
    print(f"resumed run stopped {stop2:.2f} s after SIGINT")
    assert rc2 == 130 and stop2 < 2.0, (stop2, err2)
    assert bar2[0][1] == step + 1, (step, bar2)  # its first step is the compiled one
    step2 = int(re.search(r"interrupted at step (\d+); saved", err2).group(1))
    assert step2 > step
