"""The `sdegen` command line, end to end on tiny configurations."""

import json

import jax
import jax.random as jr
import numpy as np
import pytest

import sdegen as sg
import sdegen._cli as cli
from sdegen._cli import build_parser, draw_samples, main


def _png(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 500
    return data


def test_solvers_table(capsys):
    assert main(["solvers"]) == 0
    out = capsys.readouterr().out
    for name in sg.SOLVERS:
        assert f"`{name}`" in out


def test_train_sample_likelihood_on_toy(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--dataset", "moons", "--quick", "--out", str(out),
                 "--no-progress"]) == 0  # fmt: skip
    for name in ("samples.png", "loss.png"):
        _png(out / name)
    assert sorted(p.name for p in (out / "samples").iterdir()) == [
        "step_0000015.png", "step_0000030.png"]  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 30 and metrics["num_samples"] == 16
    for key in ("final_loss", "eval_loss", "train_steps_per_s", "train_wall_time_s",
                "mmd", "sliced_wasserstein", "mmd_data_vs_data"):  # fmt: skip
        assert np.isfinite(metrics[key]), key
    config = json.loads((out / "config.json").read_text())
    assert config["net"] == "mlp" and config["data_shape"] == [2]
    assert sg.latest_checkpoint(out / "checkpoints").name == "step_000000030.ckpt"
    samples = np.load(out / "samples.npy")
    assert samples.shape == (16, 2)

    # sample again with another solver on the reverse SDE
    assert main(["sample", "--out", str(out), "--solver", "euler_maruyama",
                 "--sampler", "sde", "--sample-steps", "5", "--num-samples",
                 "6"]) == 0  # fmt: skip
    _png(out / "samples_euler_maruyama_5.png")
    assert np.load(out / "samples_euler_maruyama_5.npy").shape == (6, 2)

    capsys.readouterr()
    assert main(["likelihood", "--out", str(out), "--num-points", "3",
                 "--rtol", "1e-3", "--atol", "1e-3"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "bits/dim" in printed and "95% CI over 3" in printed
    lik = json.loads((out / "likelihood.json").read_text())
    assert np.isfinite(lik["bits_per_dim"]) and lik["ci95_half_width"] >= 0

    # re-running resumes from the last checkpoint: nothing left to train
    assert main(["train", "--dataset", "moons", "--quick", "--out", str(out),
                 "--no-progress"]) == 0  # fmt: skip
    assert json.loads((out / "metrics.json").read_text())["steps"] == 30


def test_cli_errors(tmp_path, capsys):
    assert main(["train", "--dataset", "moons", "--quick", "--out", str(tmp_path),
                 "--solver", "rk99"]) == 2  # fmt: skip
    assert "Unknown solver 'rk99'" in capsys.readouterr().err
    assert main(["train", "--dataset", "moons", "--quick", "--out", str(tmp_path),
                 "--solver", "tsit5", "--sampler", "sde"]) == 2  # fmt: skip
    assert "cannot solve the reverse SDE" in capsys.readouterr().err
    assert main(["train", "--dataset", "spiral", "--out", str(tmp_path)]) == 2
    assert "Unknown toy data set 'spiral'" in capsys.readouterr().err
    assert main(["sample", "--out", str(tmp_path / "nothing")]) == 2
    assert "config.json" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--dataset", "moons", "--out", str(tmp_path), "--sde", "xx"])


def test_draw_samples_are_those_of_split_keys():
    # Sample i uses jr.split(key, num)[i], whatever the chunk size and mesh: the
    # chunked, sharded draw equals one vmap over all keys (1e-9 allows for batched
    # rounding; the samples are O(1)).
    sde = sg.VPSDE()
    model = sg.nn.NoiseParam(sg.nn.MLP(2, 8, 1, key=jr.key(0)), sde)
    key = jr.key(3)
    ref = jax.vmap(lambda k: sg.sample_ode(k, sde, model, (2,), "heun", num_steps=4,
                                           denoise=True))(jr.split(key, 7))  # fmt: skip
    opts = dict(solver="heun", sampler="ode", num_steps=4, num=7, chunk=3)
    for mesh in (None, sg.make_mesh(1)):
        x = draw_samples(key, sde, model, (2,), mesh=mesh, **opts)
        assert isinstance(x, np.ndarray) and x.shape == (7, 2)
        np.testing.assert_allclose(x, np.asarray(ref), rtol=0, atol=1e-9)
    assert np.max(np.abs(x[0] - x[1])) > 1e-3


def test_device_options(tmp_path, capsys, monkeypatch):
    calls = []
    monkeypatch.setattr(cli, "distributed_initialize",
                        lambda **kw: calls.append(kw) or (0, 1))  # fmt: skip
    n = jax.device_count()
    # The multi-host options initialise jax.distributed first; then --devices is
    # checked against the devices there are (before anything is trained).
    assert main(["train", "--dataset", "moons", "--quick", "--out", str(tmp_path),
                 "--coordinator", "localhost:1234", "--num-processes", "1",
                 "--process-id", "0", "--devices", str(n + 1)]) == 2  # fmt: skip
    assert calls == [{"coordinator_address": "localhost:1234", "num_processes": 1,
                      "process_id": 0}]  # fmt: skip
    assert f"--devices must be in [0, {n}]" in capsys.readouterr().err
    assert not (tmp_path / "config.json").exists()
    # Without them: no initialisation; --devices on sample and likelihood too.
    for command in ("sample", "likelihood"):
        assert main([command, "--out", str(tmp_path / "nothing"), "--devices",
                     "-1"]) == 2  # fmt: skip
        assert "--devices must be in" in capsys.readouterr().err
    assert len(calls) == 1
    # --devices 0 is every device; no --devices keeps the single-device path.
    parse = build_parser().parse_args
    mesh = cli._setup_devices(parse(["sample", "--out", "x", "--devices", "0"]))
    assert mesh.shape["data"] == n
    assert cli._setup_devices(parse(["sample", "--out", "x"])) is None


@pytest.mark.slow
def test_demo_digits_quick(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--net-width", "8",
                 "--no-progress"]) == 0  # fmt: skip
    _png(out / "samples.png")
    _png(out / "loss.png")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == "digits" and metrics["samples_finite"]
    assert 0 < metrics["classifier_confidence"] <= 1
    assert len(metrics["class_counts"]) == 10
    assert np.load(out / "samples.npy").shape == (16, 1, 8, 8)
