"""Checkpoints: bit-exact round trips, atomic writes, and clear errors for damage."""

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sdegen as sg


def _state(key):
    model = eqx.nn.MLP(3, 3, 8, 2, key=key)
    cfg = sg.TrainConfig(num_steps=5, warmup=2)
    opt_state = sg.make_optimizer(cfg).init(eqx.filter(model, eqx.is_inexact_array))
    ema = jax.tree_util.tree_map(lambda x: x * 0.5 if eqx.is_array(x) else x, model)
    losses = np.array([1.5, np.pi, 1e-300, -0.0], np.float64)
    return sg.TrainState(model, ema, opt_state, 4, losses)


def _like(key):
    s = _state(key)
    zero = lambda x: jnp.zeros_like(x) if eqx.is_array(x) else x
    return sg.TrainState(jax.tree_util.tree_map(zero, s.model),
                         jax.tree_util.tree_map(zero, s.ema_model),
                         jax.tree_util.tree_map(zero, s.opt_state), 0,
                         np.zeros(4))  # fmt: skip


def _assert_bit_equal(a, b):
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        if hasattr(x, "dtype"):
            assert x.dtype == y.dtype and x.shape == y.shape
            assert np.asarray(x).tobytes() == np.asarray(y).tobytes()
        else:
            assert x == y and type(x) is type(y)


def test_round_trip_bit_exact(tmp_path, getkey):
    key = getkey()
    state = _state(key)
    path = sg.save_checkpoint(tmp_path / "a" / "c.ckpt", state, {"lr": 1e-3},
                              extra={"note": "x"})  # fmt: skip
    loaded = sg.load_checkpoint(path, _like(key))
    _assert_bit_equal(loaded, state)
    assert loaded.step == 4
    meta = sg.checkpoint_metadata(path)
    assert meta["step"] == 4 and meta["hparams"] == {"lr": 1e-3}
    assert meta["extra"] == {"note": "x"} and meta["format_version"] == 2
    # atomic write leaves no temporary files behind
    assert sorted(p.name for p in path.parent.iterdir()) == ["c.ckpt"]


def test_truncated_and_corrupt_files(tmp_path, getkey):
    key = getkey()
    path = sg.save_checkpoint(tmp_path / "c.ckpt", _state(key))
    data = path.read_bytes()
    like = _like(key)
    cases = {
        "trunc_payload": (data[:-7], "truncated or padded"),
        "trunc_header": (data[:20], "truncated inside its header"),
        "trunc_magic": (data[:5], "truncated"),
        "flipped": (data[:-40] + bytes([data[-40] ^ 1]) + data[-39:], "SHA-256"),
        "not_ckpt": (b"PK\x03\x04" + data[4:], "not an sdegen checkpoint"),
    }
    for name, (blob, msg) in cases.items():
        p = tmp_path / f"{name}.ckpt"
        p.write_bytes(blob)
        with pytest.raises(sg.CheckpointError, match=msg) as e:
            sg.load_checkpoint(p, like)
        assert str(p) in str(e.value)  # names the file
        assert isinstance(e.value, ValueError)
    # a header that says a future format version
    n = int.from_bytes(data[12:20], "little")
    head = json.loads(data[20 : 20 + n])
    head["format_version"] = 99
    new = json.dumps(head).encode()
    p = tmp_path / "future.ckpt"
    p.write_bytes(data[:12] + len(new).to_bytes(8, "little") + new + data[20 + n :])
    with pytest.raises(sg.CheckpointError, match="format version 99"):
        sg.load_checkpoint(p, like)
    with pytest.raises(sg.CheckpointError, match="does not exist"):
        sg.load_checkpoint(tmp_path / "missing.ckpt", like)


def test_structure_mismatch(tmp_path, getkey):
    key = getkey()
    path = sg.save_checkpoint(tmp_path / "c.ckpt", _state(key))
    other = eqx.nn.MLP(3, 3, 9, 2, key=key)  # different width
    s = _like(key)
    bad = sg.TrainState(other, other, s.opt_state, 0, np.zeros(4))
    with pytest.raises(sg.CheckpointError, match="does not match the structure"):
        sg.load_checkpoint(path, bad)
    f32 = jax.tree_util.tree_map(
        lambda x: x.astype(jnp.float32) if eqx.is_inexact_array(x) else x, s
    )
    with pytest.raises(sg.CheckpointError, match="float64 on disk"):
        sg.load_checkpoint(path, f32)


def test_latest_checkpoint_skips_damaged(tmp_path, getkey):
    key = getkey()
    assert sg.latest_checkpoint(tmp_path / "none") is None
    state = _state(key)
    for step in (5, 10, 20):
        sg.save_checkpoint(tmp_path / f"step_{step:09d}.ckpt", state, step=step)
    assert sg.latest_checkpoint(tmp_path).name == "step_000000020.ckpt"
    newest = tmp_path / "step_000000020.ckpt"
    newest.write_bytes(newest.read_bytes()[:-100])
    with pytest.warns(UserWarning, match="Skipping damaged checkpoint"):
        assert sg.latest_checkpoint(tmp_path).name == "step_000000010.ckpt"
    # unrelated files are ignored
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / ".step_000000030.ckpt.abc.tmp").write_bytes(b"partial")
    with pytest.warns(UserWarning):
        assert sg.latest_checkpoint(tmp_path).name == "step_000000010.ckpt"


_KILLED_WRITER = r"""
import importlib.util, os, sys, time
import numpy as np
spec = importlib.util.spec_from_file_location("ckpt", sys.argv[1])
ckpt = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ckpt)

def stall(fd):  # the bytes are written; stop before fsync and os.replace
    print("WRITING", flush=True)
    time.sleep(120)

os.fsync = stall
ckpt.save_checkpoint(sys.argv[2], {"w": np.arange(3.0)}, step=3)
"""


def test_kill_during_write_leaves_a_temp_file_that_is_removed(tmp_path):
    # A process killed (SIGKILL) inside the atomic write: the destination does not
    # exist, the temporary file does; latest_checkpoint ignores it and
    # remove_stray_temp_files deletes it (and nothing else).
    import subprocess
    import sys

    import sdegen._runs._checkpoint as module

    target = tmp_path / "step_000000003.ckpt"
    sg.save_checkpoint(tmp_path / "step_000000001.ckpt", {"w": jnp.zeros(3)}, step=1)
    cmd = [sys.executable, "-c", _KILLED_WRITER, module.__file__, str(target)]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout.readline().strip() == "WRITING"
        finally:
            proc.kill()
    strays = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(strays) == 1 and strays[0].name.startswith(".step_000000003.ckpt.")
    assert not target.exists()
    assert sg.latest_checkpoint(tmp_path).name == "step_000000001.ckpt"
    assert sg.remove_stray_temp_files(tmp_path) == strays
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_000000001.ckpt"]
    assert sg.remove_stray_temp_files(tmp_path / "missing") == []
