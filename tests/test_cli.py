"""The `sdegen` command line, end to end on tiny configurations."""

import json

import numpy as np
import pytest

import sdegen as sg
from sdegen._cli import main


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
