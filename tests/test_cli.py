"""The `sdegen` command line, in process (`sdegen._cli.main([...])`), on tiny
configurations: one class-conditional run on a small labelled image data set built
with `datasets` is trained once (module fixture) and then sampled, guided, exported,
inpainted, colorized and measured; every error is checked to be one line naming the
flag."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import sdegen as sg
import sdegen._cli._config as cli_config
import sdegen._cli._devices as devices
import sdegen_cli
from sdegen._cli import build_parser, main
from sdegen._cli._sampling import draw_samples, guided, resolve_sampler


ROOT = Path(__file__).resolve().parent.parent


def _png(path):
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 200
    return data


def _error(capsys, argv, *expected):
    """Run `argv`, expect exit status 2 and one stderr line holding `expected`."""
    capsys.readouterr()
    assert main(argv) == 2, argv
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"sdegen {argv[0]}: error: "), lines[0]
    for text in expected:
        assert text in lines[0], (text, lines[0])
    return lines[0]


def _image_dataset(path, n=40, size=6):
    """40 RGB images of 6x6 in 4 classes (class k has a bright colour channel k % 3,
    class 3 a white top half), with a ClassLabel column and a text column."""
    import datasets
    import PIL.Image

    rng = np.random.default_rng(0)
    labels = np.arange(n) % 4
    images = []
    for y in labels:
        a = rng.integers(0, 60, size=(size, size, 3)).astype(np.uint8)
        a[..., y % 3] += 150
        if y == 3:
            a[: size // 2] = 255
        images.append(PIL.Image.fromarray(a, mode="RGB"))
    ds = datasets.Dataset.from_dict(
        {"picture": images, "digit": labels.tolist(), "note": ["x"] * n},
        features=datasets.Features({"picture": datasets.Image(),
                                    "digit": datasets.ClassLabel(num_classes=4),
                                    "note": datasets.Value("string")}),
    )  # fmt: skip
    ds.save_to_disk(str(path))
    return path


TRAIN = ["--image-column", "picture", "--label-column", "digit", "--image-size", "4",
         "--quick", "--steps", "20", "--solver", "euler", "--sample-steps", "2",
         "--no-progress"]  # fmt: skip


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    data = _image_dataset(tmp / "pictures")
    out = tmp / "run"
    out.mkdir()
    # A temporary file that a kill during config.json's write would leave behind.
    stray = out / ".config.json.k1ll3d00.tmp"
    stray.write_text("{")
    t0 = time.perf_counter()
    code = main(["train", "--dataset", str(data), "--out", str(out), *TRAIN])
    assert code == 0
    return {"out": out, "data": data, "stray": stray,
            "train_s": time.perf_counter() - t0}  # fmt: skip


# ---------------------------------------------------------------- the main path


def test_train_conditional_images_from_a_saved_dataset(image_run):
    out = image_run["out"]
    assert not image_run["stray"].exists()
    cfg = json.loads((out / "config.json").read_text())
    d = cfg["data"]
    assert d["shape"] == [3, 4, 4] and d["num_classes"] == 4 and d["kind"] == "image"
    assert d["image_column"] == "picture" and d["label_column"] == "digit"
    assert d["format"]["value_range"] == [0.0, 255.0] and d["levels"] == 256
    assert cfg["network"]["net"] == "mlp" and cfg["label_dropout"] == 0.1
    assert sg.latest_checkpoint(out / "checkpoints").name == "step_000000020.ckpt"
    for name in ("samples.png", "loss.png", "samples/step_0000020.png"):
        _png(out / name)
    samples = np.load(out / "samples.npy")
    assert samples.shape == (16, 3, 4, 4)
    assert np.load(out / "samples" / "step_0000020.npy").shape == (16, 3, 4, 4)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 20 and metrics["num_samples"] == 16
    for key in ("final_loss", "eval_loss", "frechet_distance", "frechet_floor",
                "frac_outside_range", "mean", "data_mean"):  # fmt: skip
        assert np.isfinite(metrics[key]), key
    logs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert logs and logs[-1]["step"] == 20


def test_sample_one_class_with_guidance_export_and_load_model(image_run, capsys):
    out = image_run["out"]
    assert main(["sample", "--out", str(out), "--label", "3", "--guidance", "2.0",
                 "--num-samples", "3", "--no-progress"]) == 0  # fmt: skip
    name = "samples_euler_2_label3_w2"
    _png(out / f"{name}.png")
    x = np.load(out / f"{name}.npy")
    info = json.loads((out / f"{name}.json").read_text())
    assert x.shape == (3, 3, 4, 4) and info["label"] == 3 and info["guidance"] == 2.0

    model_file = out / "exported" / "model.sdegen"
    assert main(["export", "--out", str(out), "--to", str(model_file)]) == 0
    model, meta = sg.load_model(model_file)
    assert isinstance(meta.sde, sg.VPSDE) and meta.shape == (3, 4, 4)
    assert meta.num_classes == 4 and meta.info["step"] == 20
    assert meta.data["value_range"] == [0.0, 255.0]
    # The CLI's guided samples are those of the exported model, key for key (sample i
    # uses jax.random.split(key, n)[i]) ...
    spec = resolve_sampler({"solver": "euler", "sampler": "ode", "sample_steps": 2})
    # ... mapped back to the data's space by the run's default transform (logit, then
    # centred and scaled), which the exported file carries.
    kinds = [t["kind"] for t in meta.transform.to_dict()["transforms"]]
    assert kinds == ["logit", "affine"]
    again = draw_samples(jr.key(0), meta.sde, model, meta.shape, spec, 3,
                         labels=np.full(3, 3), guidance=2.0)  # fmt: skip
    np.testing.assert_allclose(x, meta.transform.inverse(again), rtol=1e-6, atol=1e-6)
    # the logit transform's range: the dequantised [-1 - h, 1 + h], h = 1/255,
    # widened by alpha / (1 - 2 alpha) of its width
    assert np.all(np.abs(x) < (1 + 1 / 255) * (1 + 0.1 / 0.9))
    # scored against the real examples of its class, and saying so
    assert "class 3" in info["reference"] and info["verdict"]
    # The guided score is classifier-free guidance, (1 + W) s(x, y) - W s(x, null).
    t, z = 0.5, jnp.asarray(x[0])
    s = guided(model, 3, 2.0)(t, z)
    np.testing.assert_allclose(s, 3 * model(t, z, label=3) - 2 * model(t, z),
                               rtol=1e-6, atol=1e-6)  # fmt: skip
    # ... and `meta` is all sample_ode needs.
    y = sg.sample_ode(jr.key(1), meta.sde, model, meta.shape, "euler", num_steps=2)
    assert y.shape == (3, 4, 4) and bool(np.all(np.isfinite(y)))


def _held_out(out):
    from sdegen._cli._data import load_data

    return load_data(json.loads((out / "config.json").read_text())["data"]).held_out


def test_inpaint_and_colorize_pass_observations_and_options(image_run, monkeypatch):
    # The command's plumbing, with the library's samplers replaced by closed forms of
    # the same signature (the samplers themselves are tested in test_inverse.py; a
    # compile of each here would cost tens of seconds): inpaint returns the
    # observation where observed and -0.5 elsewhere, colorize the grey value in every
    # channel. The run's transform is replaced by the identity, so that these values
    # are also those in the data's space.
    import functools

    import PIL.Image

    seen = []

    @functools.wraps(sg.inpaint)
    def inpaint(key, sde, score, y, mask, **options):
        seen.append(("inpaint", options))
        return jnp.where(mask, y, -0.5)

    @functools.wraps(sg.colorize)
    def colorize(key, sde, score, grey, *, num_channels=3, **options):
        seen.append(("colorize", options))
        return jnp.broadcast_to(grey, (num_channels, *grey.shape))

    monkeypatch.setattr(sg, "inpaint", inpaint)
    monkeypatch.setattr(sg, "colorize", colorize)
    monkeypatch.setattr(cli_config, "build_transform", lambda cfg: None)
    out = image_run["out"]
    held = _held_out(out)[:2]
    common = ["--out", str(out), "--examples", "2", "--sample-steps", "3",
              "--corrector-steps", "0", "--snr", "0.2", "--no-progress"]  # fmt: skip
    assert main(["inpaint", *common, "--mask", "right", "--label", "1",
                 "--guidance", "1.5"]) == 0  # fmt: skip
    assert seen[0] == ("inpaint", {"solver": "euler_maruyama", "num_steps": 3,
                                   "corrector_steps": 0, "snr": 0.2,
                                   "denoise": True})  # fmt: skip
    _png(out / "inpaint_right.png")
    res = np.load(out / "inpaint_right.npy")
    np.testing.assert_allclose(res[..., :2], held[..., :2], atol=1e-6)
    np.testing.assert_allclose(res[..., 2:], -0.5)
    info = json.loads((out / "inpaint_right.json").read_text())
    assert info["label"] == 1 and info["guidance"] == 1.5 and info["mask"] == "right"
    mse = np.mean((held[..., 2:] + 0.5) ** 2)
    np.testing.assert_allclose(info["mse_unobserved"], mse, rtol=1e-6)

    assert main(["colorize", *common, "--name", "colour"]) == 0
    col = np.load(out / "colour.npy")
    np.testing.assert_allclose(col, np.repeat(held.mean(axis=1, keepdims=True), 3, 1),
                               atol=1e-6)  # fmt: skip
    _png(out / "colour.png")
    # image files as inputs, resized to the model's 4x4: red has the grey value
    # (1 - 1 - 1) / 3, white 1
    files = []
    for i, c in enumerate([(255, 0, 0), (255, 255, 255)]):
        files.append(str(out / f"in{i}.png"))
        PIL.Image.new("RGB", (8, 8), c).save(files[-1])
    assert main(["colorize", "--out", str(out), "--input", *files, "--name", "files",
                 "--no-progress"]) == 0  # fmt: skip
    got = np.load(out / "files.npy")
    assert got.shape == (2, 3, 4, 4)
    np.testing.assert_allclose(got[0], -1 / 3, atol=1e-6)
    np.testing.assert_allclose(got[1], 1.0, atol=1e-6)


def test_likelihood_bits_per_dim_of_dequantised_images(image_run, monkeypatch, capsys):
    # With a log-likelihood of constant value c, bits/dim of 256-level data in
    # [-1, 1] is -c / (D ln 2) - log2(2 / 255) (dequantisation bins of width 2/255).
    import functools
    import math

    calls = []

    @functools.wraps(sg.log_likelihood)
    def log_likelihood(sde, score, x, key=None, **kwargs):
        calls.append(kwargs)
        # the dequantised example stays within its data range
        inside = jnp.all(jnp.abs(x) <= 1 + 1 / 255 + 1e-9)
        return jnp.where(inside, -100.0, jnp.nan), None

    monkeypatch.setattr(sg, "log_likelihood", log_likelihood)
    # the model's space is the data's (the transform's Jacobian: test_train.py)
    monkeypatch.setattr(cli_config, "build_transform", lambda cfg: None)
    out = image_run["out"]
    capsys.readouterr()
    assert main(["likelihood", "--out", str(out), "--num-points", "3", "--solver",
                 "heun", "--rtol", "1e-2", "--no-progress"]) == 0  # fmt: skip
    assert calls[0] == {"solver": "heun", "rtol": 1e-2, "atol": 1e-5,
                        "trace": "hutchinson"}  # fmt: skip
    captured = capsys.readouterr()
    printed = captured.out
    assert "bits/dim (256-level dequantised data)" in printed and "over 3" in printed
    # the baselines beside it, and a warning: the stand-in model is worse than a
    # uniform distribution over the 256 levels
    assert "uniform over the 256 levels" in printed and "per-pixel histogram" in printed
    assert "worse than the uniform" in captured.err
    lik = json.loads((out / "likelihood.json").read_text())
    assert lik["baselines_bits_per_dim"]["uniform"] == 8.0
    expected = 100 / (48 * math.log(2)) - math.log2(2 / 255)
    np.testing.assert_allclose(lik["bits_per_dim"], expected, rtol=1e-9)
    assert lik["ci95_half_width"] == 0.0 and lik["num_points"] == 3


def test_rerun_resumes_and_other_settings_are_refused(image_run, capsys):
    out, data = image_run["out"], image_run["data"]
    before = (out / "checkpoints" / "step_000000020.ckpt").read_bytes()
    assert main(["train", "--dataset", str(data), "--out", str(out), *TRAIN]) == 0
    assert json.loads((out / "metrics.json").read_text())["steps"] == 20
    assert (out / "checkpoints" / "step_000000020.ckpt").read_bytes() == before
    _error(capsys, ["train", "--dataset", str(data), "--out", str(out), *TRAIN,
                    "--net-width", "8"], "holds a run with other settings",
           "network", "--no-resume")  # fmt: skip
    # --no-resume starts afresh in the folder (on a copy: other tests use the run),
    # deleting the old checkpoints
    import shutil

    copy = out.parent / "afresh"
    shutil.copytree(out, copy)
    shutil.copy(copy / "checkpoints" / "step_000000020.ckpt",
                copy / "checkpoints" / "step_000000099.ckpt")  # fmt: skip
    assert main(["train", "--dataset", str(data), "--out", str(copy), *TRAIN,
                 "--no-resume"]) == 0  # fmt: skip
    names = sorted(p.name for p in (copy / "checkpoints").glob("step_*.ckpt"))
    assert names == ["step_000000015.ckpt", "step_000000020.ckpt"]
    np.testing.assert_array_equal(np.load(copy / "samples.npy"),
                                  np.load(out / "samples.npy"))  # fmt: skip


def test_sample_label_errors(image_run, capsys):
    out = str(image_run["out"])
    _error(capsys, ["sample", "--out", out, "--label", "7"],
           "--label must be in [0, 4), got 7")  # fmt: skip
    _error(capsys, ["sample", "--out", out, "--guidance", "1.0"],
           "--guidance needs --label")  # fmt: skip
    _error(capsys, ["sample", "--out", out, "--solver", "rk99"],
           "Unknown solver 'rk99' for `--solver`")  # fmt: skip
    _error(capsys, ["sample", "--out", out, "--solver", "tsit5", "--sampler", "sde"],
           "--solver 'tsit5' cannot solve the reverse SDE")  # fmt: skip
    _error(capsys, ["export", "--out", out, "--to", out], "--to", "is a folder")


# ---------------------------------------------------------------- errors


def test_flag_errors_name_the_flag(capsys, tmp_path):
    run = str(tmp_path)
    _error(capsys, ["sample", "--out", run, "--num-samples", "0"],
           "argument --num-samples: expected a positive int, got '0'")  # fmt: skip
    _error(capsys, ["train", "--out", run, "--steps", "0"],
           "argument --steps: expected a positive int, got '0'")  # fmt: skip
    _error(capsys, ["train", "--out", run, "--image-size", "4y"], "--image-size")
    _error(capsys, ["sample", "--out", run, "--guidance", "-1"], "--guidance")
    _error(capsys, ["train", "--out", run, "--sde", "xx"], "--sde", "invalid choice")
    _error(capsys, ["sample"], "--out")
    assert not any(tmp_path.iterdir())  # nothing was written


def test_out_errors(capsys, tmp_path):
    afile = tmp_path / "file.txt"
    afile.write_text("x")
    _error(capsys, ["train", "--out", str(afile)], f"--out {str(afile)!r} is a file")
    _error(capsys, ["train", "--out", str(afile / "run")], "--out",
           "cannot create the folder")  # fmt: skip
    _error(capsys, ["train", "--out", "/proc/sdegen-run"], "--out '/proc/sdegen-run'")
    _error(capsys, ["sample", "--out", str(tmp_path / "nothing")], "is not a folder",
           "expected a run folder")  # fmt: skip
    _error(capsys, ["sample", "--out", str(tmp_path)], "has no config.json")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    _error(capsys, ["export", "--out", str(tmp_path / "bad"), "--to", "x"],
           "config.json is corrupt")  # fmt: skip


def test_dataset_errors(capsys, tmp_path, monkeypatch):
    import datasets

    data = _image_dataset(tmp_path / "pictures", n=8)
    out = str(tmp_path / "run")
    base = ["train", "--out", out, "--dataset", str(data)]
    _error(capsys, [*base, "--image-column", "nope"],
           "--image-column 'nope' is not a column", "picture (Image)")  # fmt: skip
    _error(capsys, [*base, "--label-column", "note"],
           "--label-column 'note' holds", "string")  # fmt: skip
    _error(capsys, [*base, "--image-column", "note"], "--image-column 'note' holds")
    _error(capsys, [*base, "--split", "test"], "--split 'test'")
    _error(capsys, ["train", "--out", out, "--dataset", "moons", "--image-size", "4"],
           "--image-size does not apply to a 2-D toy data set")  # fmt: skip
    _error(capsys, ["train", "--out", out, "--dataset", "./no/such/folder"],
           "--dataset './no/such/folder': no such file or folder")  # fmt: skip
    # An unreachable hub name: one line, quickly (offline mode instead of retries).
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    _error(capsys, ["train", "--out", out, "--dataset", "someone/no-such-set"],
           "--dataset 'someone/no-such-set': could not load it from the Hugging "
           "Face hub")  # fmt: skip


def test_devices_and_multi_host_flags(tmp_path, capsys, monkeypatch):
    calls = []
    monkeypatch.setattr(devices, "distributed_initialize",
                        lambda **kw: calls.append(kw) or (0, 1))  # fmt: skip
    n = jax.device_count()
    # The multi-host options initialise jax.distributed first; then --devices is
    # checked against the devices there are (before anything is written).
    _error(capsys, ["train", "--dataset", "moons", "--quick", "--out", str(tmp_path),
                    "--coordinator", "localhost:1234", "--num-processes", "1",
                    "--process-id", "0", "--devices", str(n + 1)],
           f"--devices must be in [0, {n}]")  # fmt: skip
    assert calls == [{"coordinator_address": "localhost:1234", "num_processes": 1,
                      "process_id": 0}]  # fmt: skip
    assert not (tmp_path / "config.json").exists()
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    for command in ("sample", "likelihood"):
        _error(capsys, [command, "--out", str(run), "--devices", "-1"],
               "--devices must be in")  # fmt: skip
    assert len(calls) == 1
    parse = build_parser().parse_args
    mesh = devices.setup_devices(parse(["sample", "--out", "x", "--devices", "0"]))
    assert mesh.shape["data"] == n
    assert devices.setup_devices(parse(["sample", "--out", "x"])) is None


# ---------------------------------------------------------------- pieces


def test_help_parses_before_jax_is_imported():
    # `sdegen --help` and flag errors must not wait for JAX: the parser module
    # imports only the standard library.
    code = ("import sys, sdegen_cli\n"
            "assert sdegen_cli.main(['train', '--steps', '0']) == 2\n"
            "assert sdegen_cli.main(['train', '--out', sys.executable]) == 2\n"
            "assert sdegen_cli.main(['--help']) == 0\n"
            "assert sdegen_cli.main(['sample', '--help']) == 0\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('jax', 'sdegen', 'numpy', 'datasets')))\n"
            # and `import sdegen` pulls none of the extras (data, plot, tensorboard)
            "import sdegen\n"
            "print(sorted(m for m in ('datasets', 'matplotlib', 'PIL', 'sklearn', "
            "'tensorboardX') if m in sys.modules))")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-2:] == ["[]", "[]"]
    assert "usage: sdegen" in proc.stdout and "--guidance W" in proc.stdout
    assert "diffusers' guidance_scale is W + 1" in " ".join(proc.stdout.split())
    assert "argument --steps: expected a positive int" in proc.stderr
    assert f"--out {sys.executable!r} is a file; expected a folder" in proc.stderr


def test_builtin_names_and_console_script_in_sync():
    assert sdegen_cli.BUILTIN_DATASETS == ("digits", *sg.data.TOY_DATASETS)
    text = (ROOT / "pyproject.toml").read_text()
    assert 'sdegen = "sdegen_cli:main"' in text
    for name, (module, func) in sdegen_cli.COMMANDS.items():
        mod = __import__(f"sdegen._cli.{module}", fromlist=[func])
        assert callable(getattr(mod, func)), name


def test_solvers_table(capsys):
    assert main(["solvers"]) == 0
    out = capsys.readouterr().out
    for name in sg.SOLVERS:
        assert f"`{name}`" in out


def test_samples_do_not_depend_on_chunks_or_mesh(image_run):
    # samples.npy (drawn in one chunk of 16 with the key of seed + 1, class i % 4 for
    # sample i) again, in chunks of 5 sharded over a one-device mesh: sample i uses
    # jax.random.split(key, 16)[i] whatever the chunking.
    from sdegen._cli._run import load_run

    run = load_run(image_run["out"])
    spec = resolve_sampler(run.cfg["sample"])
    x = draw_samples(jr.key(1), run.sde, run.model, run.shape, spec, 16,
                     labels=np.arange(16) % 4, chunk=5, mesh=sg.make_mesh(1))  # fmt: skip
    assert isinstance(x, np.ndarray) and x.shape == (16, 3, 4, 4)
    x = run.transform.inverse(x)
    np.testing.assert_allclose(x, np.load(image_run["out"] / "samples.npy"), rtol=1e-6,
                               atol=1e-6)  # fmt: skip
    assert np.max(np.abs(x[0] - x[4])) > 1e-3  # same class, other key


def test_demo_defaults_and_auto_network():
    from sdegen._cli._config import run_config
    from sdegen._cli._data import data_spec, load_data

    args = build_parser().parse_args(["demo"])
    data = load_data(data_spec(args))
    cfg = run_config(args, data, None, demo=True)
    # >= 500 samples for the demo's metrics; an MLP on the 8x8 digits
    assert cfg["sample"]["num_samples"] == 500
    assert cfg["network"]["net"] == "mlp" and cfg["data"]["shape"] == [1, 8, 8]
    assert cfg["data"]["levels"] == 17 and cfg["data"]["num_classes"] is None
    # trained on dequantised data (bins of half-width 1/16), with the score weighting
    assert cfg["dequantize"] == 1 / 16 and cfg["objective"] == "auto"
    args = build_parser().parse_args(["demo", "--objective", "likelihood",
                                      "--no-dequantize"])  # fmt: skip
    cfg = run_config(args, data, None, demo=True)
    assert cfg["loss"] == "dsm_likelihood" and cfg["dequantize"] is None
    assert cli_config.Loss.of(cfg, sg.VPSDE()).importance
    args = build_parser().parse_args(["train", "--out", "x", "--label-column", "label",
                                      "--transform", "pixel"])  # fmt: skip
    data = load_data(data_spec(args))
    from sdegen._cli._data import fit_transform

    t = fit_transform("pixel", data)
    cfg = run_config(args, data, t, demo=False)
    assert cfg["data"]["num_classes"] == 10 and cfg["label_dropout"] == 0.1
    assert cfg["transform"]["kind"] == "affine" and cfg["sample"]["num_samples"] == 100
    y = t.forward(np.asarray(data.train[0]))
    assert abs(float(np.std(y)) - 1) < 0.05 and abs(float(np.mean(y))) < 0.05


def test_sample_metrics_and_figures_of_points(tmp_path):
    from sdegen._cli._report import sample_metrics, write_samples

    rng = np.random.default_rng(0)
    ring = lambda n: np.stack([np.cos(a := rng.uniform(0, 6.3, n)), np.sin(a)], -1)
    data = ring(400) + 0.05 * rng.normal(size=(400, 2))
    good = ring(200) + 0.05 * rng.normal(size=(200, 2))
    bad = good * 3 + 5
    m_good = sample_metrics(good, data, kind="vector", dataset="moons")
    m_bad = sample_metrics(bad, data, kind="vector", dataset="moons")
    assert m_good["mmd"] < m_bad["mmd"] and m_good["frac_outside_range"] < 0.1
    assert m_bad["frac_outside_range"] > 0.5
    assert m_good["frechet_ratio"] < m_bad["frechet_ratio"]
    # with a reference pool: the verdict with its interval
    m = sample_metrics(bad, data[:200], kind="vector", dataset="moons",
                       reference=(data, "400 points"))  # fmt: skip
    assert m["verdict"].startswith("worse") and m["reference"] == "400 points"
    assert m["frechet_n"] == 133 and len(m["frechet_ratio_ci"]) == 2
    paths = write_samples(tmp_path / "s.png", good, data, "vector", "moons")
    assert [p.name for p in paths] == ["s.npy", "s.png"]
    _png(tmp_path / "s.png")
    np.testing.assert_array_equal(np.load(tmp_path / "s.npy"), good)


def test_image_grid_marks_values_out_of_range(tmp_path):
    from sdegen._runs._plot import image_grid, save_image_grid

    x = np.zeros((2, 1, 3, 3))
    plain = image_grid(x)
    assert plain.ndim == 2  # grey, nothing to mark
    x[1, 0, 1, 1] = 1.5
    x[1, 0, 2, 2] = -3.0
    x[1, 0, 0, 0] = np.nan
    g = image_grid(x, ncols=2)
    assert g.shape == (5, 9, 3)
    # image 1 starts at column 5: above 1 light red, below -1 dark red, NaN magenta,
    # and a red frame
    assert tuple(g[1 + 1, 5 + 1]) == (255, 150, 150)
    assert tuple(g[1 + 2, 5 + 2]) == (120, 0, 0)
    assert tuple(g[1, 5]) == (255, 0, 255)
    assert tuple(g[0, 4]) == tuple(g[4, 8]) == (255, 0, 0)  # frame
    assert tuple(g[1 + 1, 1 + 1]) == (128, 128, 128)  # image 0 untouched
    assert tuple(g[0, 0]) == (0, 0, 0)  # image 0's frame is not red
    _png(save_image_grid(tmp_path / "g.png", x, title="t"))
    # Beyond [-1, 1] by at most the quantisation step (`tolerance`): round-off at the
    # boundary, not marked; beyond it: marked.
    y = np.zeros((1, 1, 2, 2))
    y[0, 0, 0, 0], y[0, 0, 0, 1], y[0, 0, 1, 0] = -1.1, 1.1, 1.2
    g = image_grid(y, tolerance=0.125)
    assert tuple(g[1, 1]) == (0, 0, 0) and tuple(g[1, 2]) == (255, 255, 255)
    assert tuple(g[2, 1]) == (255, 150, 150) and tuple(g[0, 0]) == (255, 0, 0)
    assert image_grid(y[:, :, :1, :2], tolerance=0.125).ndim == 2  # nothing marked
    _png(save_image_grid(tmp_path / "q.png", y, title="t", tolerance=0.125))


def test_no_resume_removes_the_old_runs_outputs(tmp_path):
    # --no-resume: the old run's checkpoints, TensorBoard events, logs, metrics and
    # figures, and what advise and likelihood measured, go (a new run would mix with
    # them); config.json and other files stay.
    from sdegen._cli._train_cmd import _check_resume

    old = ["checkpoints/step_000000100.ckpt", "events.out.tfevents.1.host",
           "events.out.tfevents.2.host", "metrics.jsonl", "metrics.json", "loss.png",
           "samples.png", "samples.npy", "samples/step_0000100.png",
           "samples/step_0000100.npy", "advise.json", "advise.md",
           "likelihood.json"]  # fmt: skip
    kept = ["config.json", "notes.txt", "samples/mine.png"]
    for name in old + kept:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    _check_resume(tmp_path, {}, resume=False)
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert left == sorted(kept)


def test_train_plain_mlp_export_and_load_model(tmp_path, capsys):
    # --net plain: sdegen.nn.PlainMLP (ReLU on [x, t - 1/2, cos 2 pi t]) on the 2-D
    # toy set; the exported run loads as that network with the flags' width and depth.
    out = tmp_path / "run"
    assert main(["train", "--dataset", "8gaussians", "--quick", "--steps", "4",
                 "--net", "plain", "--net-width", "8", "--net-depth", "2",
                 "--solver", "euler", "--sample-steps", "2", "--out", str(out),
                 "--no-progress"]) == 0  # fmt: skip
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["network"]["net"] == "plain" and np.load(out / "samples.npy").shape[1] == 2
    assert main(["export", "--out", str(out), "--to", str(tmp_path / "m.sdegen")]) == 0
    model, meta = sg.load_model(tmp_path / "m.sdegen")
    net = model.net
    assert isinstance(net, sg.nn.PlainMLP) and meta.shape == (2,)
    assert len(net.layers) == 2 and net.layer_out.weight.shape == (2, 8)
    y = model(0.5, jnp.ones(2))
    assert y.shape == (2,) and bool(jnp.all(jnp.isfinite(y)))
    _error(capsys, ["train", "--dataset", "digits", "--label-column", "label", "--quick",
                    "--net", "plain", "--out", str(tmp_path / "c")],
           "--net plain", "not label-conditional")  # fmt: skip
