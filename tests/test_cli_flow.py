"""The command line's flow-matching flags: `--sde rectified|cosine --param velocity
--loss cfm --coupling independent|ot|sb --times ...` round trip through config.json
into the loss, invalid combinations fail naming the flag, and a tiny run trains,
samples, computes likelihoods and exports with its settings recorded."""

import json

import jax.numpy as jnp
import jax.random as jr
import numpy as np

import sdegen as sg
from sdegen._cli import build_parser, main
from sdegen._cli._config import Loss, build_model, build_sde, run_config
from sdegen._cli._data import data_spec, load_data


def _error(capsys, argv, *expected):
    capsys.readouterr()
    assert main(argv) == 2, argv
    lines = [s for s in capsys.readouterr().err.splitlines() if s.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"sdegen {argv[0]}: error: "), lines
    for text in expected:
        assert text in lines[0], (text, lines[0])


def test_flow_flags_round_trip_into_the_loss():
    args = build_parser().parse_args([
        "train", "--out", "x", "--dataset", "8gaussians", "--sde", "rectified",
        "--param", "velocity", "--coupling", "ot", "--times", "logit_normal", "--quick"])  # fmt: skip
    data = load_data(data_spec(args))
    cfg = json.loads(json.dumps(run_config(args, data, None, demo=False)))
    assert cfg["sde"] == {"class": "RectifiedFlow", "T": 1.0}
    assert cfg["loss"] == "cfm"  # --loss auto with --param velocity
    assert (cfg["coupling"], cfg["times"]) == ("ot", "logit_normal")
    sde = build_sde(cfg)
    model = build_model(cfg, sde)
    assert isinstance(sde, sg.RectifiedFlow) and isinstance(model, sg.nn.VelocityParam)
    loss = Loss.of(cfg, sde)
    batch = jnp.asarray(data.held_out[:16])
    want = sg.cfm_loss(model, sde, batch, jr.key(0), coupling="ot", times="logit_normal")
    assert np.isclose(loss(model, batch, jr.key(0)), want, rtol=1e-12)
    # the defaults of other runs are unchanged: dsm, independent, uniform
    args = build_parser().parse_args(["train", "--out", "x", "--dataset", "8gaussians",
                                      "--sde", "cosine", "--param", "noise"])  # fmt: skip
    cfg = run_config(args, data, None, demo=False)
    assert (cfg["loss"], cfg["coupling"], cfg["times"]) == ("dsm", "independent", "uniform")
    assert cfg["sde"]["class"] == "CosineInterpolant"
    assert not Loss.of(cfg, build_sde(cfg)).cfm


def test_flow_flag_errors_name_the_flag(capsys, tmp_path):
    run = str(tmp_path / "r")
    base = ["train", "--out", run, "--dataset", "8gaussians", "--quick"]
    _error(capsys, [*base, "--coupling", "ot", "--loss", "dsm"], "--coupling ot",
           "--loss cfm")  # fmt: skip
    _error(capsys, [*base, "--coupling", "ot", "--param", "edm"], "--coupling")
    _error(capsys, [*base, "--coupling", "emd"], "--coupling", "invalid choice")
    _error(capsys, [*base, "--times", "logitnormal"], "--times", "invalid choice")
    _error(capsys, [*base, "--sde", "straight"], "--sde", "invalid choice")
    _error(capsys, [*base, "--param", "v"], "--param", "invalid choice")
    _error(capsys, [*base, "--objective", "likelihood", "--times", "logit_normal"],
           "--times logit_normal", "--objective likelihood")  # fmt: skip


def test_tiny_flow_run_trains_samples_likelihood_export(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--out", str(out), "--dataset", "8gaussians", "--sde", "rectified",
            "--param", "velocity", "--loss", "cfm", "--coupling", "ot", "--times",
            "logit_normal", "--quick", "--steps", "40", "--solver", "euler",
            "--sample-steps", "4", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["frac_nonfinite"] == 0
    assert np.isfinite(m["final_loss"])  # the loss decreases: tests/test_cfm.py
    assert main(["sample", "--out", str(out), "--num-samples", "16", "--solver", "heun",
                 "--sample-steps", "4", "--no-progress"]) == 0  # fmt: skip
    assert main(["likelihood", "--out", str(out), "--num-points", "8",
                 "--no-progress"]) == 0  # fmt: skip
    assert main(["export", "--out", str(out), "--to", str(tmp_path / "m.eqx")]) == 0
    model, meta = sg.load_model(tmp_path / "m.eqx")
    assert isinstance(model, sg.nn.VelocityParam) and isinstance(meta.sde, sg.RectifiedFlow)
    header = sg.checkpoint_metadata(sg.latest_checkpoint(out / "checkpoints"))["hparams"]
    assert (header["coupling"], header["times"], header["loss"]) == (
        "ot", "logit_normal", "cfm")
