"""Guards by class (issue 25): every public sampling and likelihood entry point x every
traced numeric argument; every header field of a checkpoint or exported model; the
run folder's single owner (two real processes); empty answers; user functions;
silent extremes. Each test enumerates its class, so a new entry point or field that
lacks the guard fails here."""

import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import diffrax
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import sdegen as sg


KEY = jr.key(0)
SDE = sg.VPSDE()
GMM = sg.data.eight_gaussians()
SCORE = lambda t, x: -x  # noqa: E731  (cheap to compile)
NC = GMM.noise_conditional_score()
X = jnp.array([0.3, -0.2])
EPS_MODEL = lambda n, x: 0.1 * x  # noqa: E731
ABAR = sg.vp_alphas_cumprod(SDE, 20)
BETAS = sg.linear_beta_schedule(20)
SIGMAS = sg.sigma_ladder(3, 0.01, 5.0)
UP = jnp.array([0.1, 0.5, 1.0])  # an increasing grid: bad for the samplers
MASK = jnp.array([True, False])

# (entry point, argument, bad value, call(value)): the value is passed TRACED (as the
# argument of `jax.jit`), so only a staged check can catch it; the error must name
# the argument.
S = dict(num_steps=2)
TRACED = [
    ("sample_sde", "eps", 0.0, lambda v: sg.sample_sde(KEY, SDE, SCORE, (2,), eps=v, **S)),
    ("sample_sde", "ts", UP, lambda v: sg.sample_sde(KEY, SDE, SCORE, (2,), "ancestral", ts=v)),
    ("sample_sde", "rtol", -1.0, lambda v: sg.sample_sde(KEY, SDE, SCORE, (2,), "heun",
                                                         rtol=v, atol=1e-2, **S)),
    ("sample_sde", "atol", 0.0, lambda v: sg.sample_sde(KEY, SDE, SCORE, (2,), "heun",
                                                        rtol=1e-2, atol=v, **S)),
    ("sample_sde", "x_init", jnp.array([jnp.nan, 0.0]),
     lambda v: sg.sample_sde(KEY, SDE, SCORE, (2,), x_init=v, **S)),
    ("sample_ode", "eps", 2.0, lambda v: sg.sample_ode(KEY, SDE, SCORE, (2,), "euler", eps=v, **S)),
    ("sample_ode", "ts", UP, lambda v: sg.sample_ode(KEY, SDE, SCORE, (2,), "euler", ts=v)),
    ("sample_ode", "rtol", -1.0, lambda v: sg.sample_ode(KEY, SDE, SCORE, (2,), rtol=v)),
    ("sample_ode", "atol", jnp.nan, lambda v: sg.sample_ode(KEY, SDE, SCORE, (2,), atol=v)),
    ("sample_ode_batch", "eps", 0.0, lambda v: sg.sample_ode_batch(jr.split(KEY, 2), SDE, SCORE,
                                                                   (2,), eps=v)),
    ("sample_ode_batch", "rtol", 0.0, lambda v: sg.sample_ode_batch(jr.split(KEY, 2), SDE, SCORE,
                                                                    (2,), rtol=v)),
    ("pc_sample", "eps", -1.0, lambda v: sg.pc_sample(KEY, SDE, SCORE, (2,), eps=v, **S)),
    ("pc_sample", "ts", UP, lambda v: sg.pc_sample(KEY, SDE, SCORE, (2,), ts=v)),
    ("pc_sample", "snr", 0.0, lambda v: sg.pc_sample(KEY, SDE, SCORE, (2,), snr=v, **S)),
    ("encode", "eps", 0.0, lambda v: sg.encode(SDE, SCORE, X, "euler", eps=v, **S)),
    ("encode", "ts", UP[::-1], lambda v: sg.encode(SDE, SCORE, X, "euler", ts=v)),
    ("encode", "rtol", -1.0, lambda v: sg.encode(SDE, SCORE, X, rtol=v)),
    ("decode", "eps", 1.5, lambda v: sg.decode(SDE, SCORE, X, "euler", eps=v, **S)),
    ("decode", "atol", -1.0, lambda v: sg.decode(SDE, SCORE, X, atol=v)),
    ("decode", "z", jnp.array([jnp.inf, 0.0]), lambda v: sg.decode(SDE, SCORE, v, "euler", **S)),
    ("log_likelihood", "eps", 0.0, lambda v: sg.log_likelihood(SDE, SCORE, X, eps=v)[0]),
    ("log_likelihood", "rtol", -1.0, lambda v: sg.log_likelihood(SDE, SCORE, X, rtol=v)[0]),
    ("log_likelihood", "atol", 0.0, lambda v: sg.log_likelihood(SDE, SCORE, X, atol=v)[0]),
    ("log_likelihood", "x", jnp.array([jnp.nan, 0.0]),
     lambda v: sg.log_likelihood(SDE, SCORE, v)[0]),
    ("log_likelihood_batch", "eps", 2.0,
     lambda v: sg.log_likelihood_batch(SDE, SCORE, X[None], eps=v)[0]),
    ("ddim_sample", "eta", -0.5, lambda v: sg.ddim_sample(KEY, EPS_MODEL, ABAR, (2,), num_steps=2,
                                                          eta=v)),
    ("ddim_sample", "alphas_cumprod", ABAR[::-1],
     lambda v: sg.ddim_sample(KEY, EPS_MODEL, v, (2,), num_steps=2)),
    ("ddpm_sample", "betas", BETAS + 1.0, lambda v: sg.ddpm_sample(KEY, EPS_MODEL, v, (2,))),
    ("annealed_langevin", "step_lr", 0.0,
     lambda v: sg.annealed_langevin(KEY, NC, SIGMAS, (2,), steps_per_level=1, step_lr=v)),
    ("annealed_langevin", "sigmas", SIGMAS[::-1],
     lambda v: sg.annealed_langevin(KEY, NC, v, (2,), steps_per_level=1)),
    ("inpaint", "eps", 0.0, lambda v: sg.inpaint(KEY, SDE, SCORE, X, MASK, eps=v, **S)),
    ("inpaint", "snr", -1.0, lambda v: sg.inpaint(KEY, SDE, SCORE, X, MASK, snr=v, **S)),
    ("inpaint", "y", jnp.array([jnp.nan, 0.0]),
     lambda v: sg.inpaint(KEY, SDE, SCORE, v, MASK, **S)),
    ("solve_inverse", "noise_std", -1.0,
     lambda v: sg.solve_inverse(KEY, SDE, SCORE, jnp.zeros(1), jnp.ones((1, 2)),
                                noise_std=v, **S)),
    ("solve_inverse", "eps", 0.0, lambda v: sg.solve_inverse(KEY, SDE, SCORE, jnp.zeros(1),
                                                             jnp.ones((1, 2)), eps=v, **S)),
    ("time_grid", "eps", 0.0, lambda v: sg.time_grid(SDE, 3, "logsnr", eps=v)),
    ("dsm_loss", "eps", 2.0, lambda v: sg.dsm_loss(lambda t, x: x, SDE, X[None], KEY, eps=v)),
    ("dsm_loss", "t", 0.0, lambda v: sg.dsm_loss(lambda t, x: x, SDE, X[None], KEY, t=v)),
    ("classifier_free_guidance", "w", -1.0, lambda v: sg.classifier_free_guidance(
        lambda t, x, label=None: x, 1, v)(0.5, X)),
    ("classifier_guidance", "scale", jnp.inf, lambda v: sg.classifier_guidance(
        SCORE, lambda t, x: jnp.zeros(2), 0, v)(0.5, X)),
]  # fmt: skip


@pytest.mark.slow  # about 100 s on 2 shared cores: one compile per case
@pytest.mark.parametrize("entry,arg,bad,call", TRACED, ids=[f"{e}-{a}" for e, a, *_ in TRACED])
def test_traced_argument_is_checked(entry, arg, bad, call):
    with pytest.raises(Exception, match=f"`{arg}`"):
        jax.block_until_ready(jax.jit(call)(jnp.asarray(bad)))


def test_traced_table_covers_the_entry_points():
    """The table covers every public sampler and likelihood entry point."""
    entries = {e for e, *_ in TRACED}
    public = {"sample_sde", "sample_ode", "sample_ode_batch", "pc_sample", "encode",
              "decode", "log_likelihood", "log_likelihood_batch", "ddim_sample",
              "ddpm_sample", "annealed_langevin", "inpaint", "solve_inverse",
              "time_grid", "dsm_loss"}  # fmt: skip
    assert public <= entries
    assert len(TRACED) >= 38


def test_traced_examples_of_the_issue():
    """The issue's examples, fast: a traced eps = 0 and a traced increasing grid
    are errors naming the argument (they were silent)."""
    f = jax.jit(lambda ts: sg.sample_sde(KEY, SDE, SCORE, (2,), "ancestral", ts=ts))
    with pytest.raises(Exception, match="`ts` must be strictly decreasing"):
        jax.block_until_ready(f(UP))
    assert np.all(np.isfinite(f(UP[::-1])))


def test_a_made_grid_that_is_invalid_under_jit_is_an_error_of_the_solve():
    """A grid the sampler makes under `jit` is checked by the engine (no check of its
    own): float32 cannot space 50 Karras points for this SDE, which is an error eagerly
    and under `jit` that names the grid, and `RESULTS.invalid_grid` with throw=False."""
    sde = sg.VPSDE(beta_min=1e-6, beta_max=1e7)
    kw = dict(num_steps=50, grid="karras", eps=1e-5, x_init=jnp.ones(2, jnp.float32))
    with pytest.raises(ValueError, match="not a valid time grid"):
        sg.time_grid(sde, 50, "karras", eps=1e-5, dtype=jnp.float32)
    f = jax.jit(lambda k: sg.sample_ode(k, sde, SCORE, (2,), "euler", **kw))
    with pytest.raises(Exception, match="its time grid is not finite and strictly"):
        jax.block_until_ready(f(KEY))
    g = jax.jit(lambda k: sg.sample_ode(k, sde, SCORE, (2,), "euler", throw=False,
                                        return_stats=True, **kw))  # fmt: skip
    assert g(KEY)[1].result == sg.RESULTS.invalid_grid
    with pytest.raises(ValueError, match="not a valid time grid"):
        sg.sample_ode(KEY, sde, SCORE, (2,), "euler", **kw)


def test_fixed_solve_reports_an_invalid_grid():
    """The engine's own check, for any grid it is given (NaN, not monotone)."""
    term = diffrax.ODETerm(lambda t, y, args: -y)
    for ts in ([1.0, jnp.nan, 0.0], [1.0, 0.2, 0.5, 0.0], [0.0, 0.5, 0.5, 1.0]):
        ts = jnp.asarray(ts)
        for run in (lambda ts: sg.fixed_solve(term, diffrax.Euler(), ts, jnp.ones(2)),
                    jax.jit(lambda ts: sg.fixed_solve(term, diffrax.Euler(), ts,
                                                      jnp.ones(2)))):  # fmt: skip
            assert run(ts)[2].result == sg.RESULTS.invalid_grid
    _, _, st = sg.fixed_solve(term, diffrax.Euler(), jnp.asarray([0.0, 0.5, 1.0]), jnp.ones(2))
    assert st.result == sg.RESULTS.successful


@pytest.mark.parametrize("cls", [sg.VPSDE, sg.SubVPSDE])
@pytest.mark.parametrize("kind", ["logsnr", "karras"])
def test_grids_of_a_huge_beta_are_finite(cls, kind):
    """lambda(t) in a stable form: beta_max = 1e4 gave 9 NaN times of 11; the grid
    is now finite and strictly decreasing, and uniform in lambda (logsnr)."""
    sde = cls(beta_max=1e4)
    ts = np.asarray(sg.time_grid(sde, 10, kind))
    assert np.all(np.isfinite(ts)) and np.all(np.diff(ts) < 0)
    if kind == "logsnr":
        lam = np.asarray(jax.vmap(sde.marginal_lambda)(jnp.asarray(ts)))
        np.testing.assert_allclose(np.diff(lam), np.diff(lam)[0], rtol=2e-3)


# ---------------------------------------------------------------- tamper-evident files

NET = {"net": "mlp", "width": 4, "depth": 1, "param": "noise"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("export")
    model = sg.build_model(SDE, (2,), NET, num_classes=3, key=jr.key(1))
    path = sg.export_model(d / "m.sdegen", model, sde=SDE, shape=(2,), network=NET,
                           num_classes=3, data={"value_range": [0, 1]},
                           info={"step": 7})  # fmt: skip
    return path


def _split(data: bytes):
    n = struct.unpack("<Q", data[12:20])[0]
    return data[:12], json.loads(data[20 : 20 + n].decode()), data[20 + n :]


def _leaves(obj, path=()):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _leaves(v, (*path, i))
    else:
        yield path


def _changed(v):
    if isinstance(v, bool):
        return not v
    if isinstance(v, int | float):
        return v + 1
    if isinstance(v, str):
        return v[:-1] + ("x" if v[-1:] != "x" else "y")
    return 0  # None


def test_every_header_field_is_covered(exported, tmp_path):
    """Each field of an exported model's header (the SDE, shape, classes, network,
    data, info, dtype, step, format, size, checksum), changed with the checksum kept:
    a CheckpointError naming the file, before any model is built."""
    magic, header, payload = _split(exported.read_bytes())
    fields = list(_leaves(header))
    assert len(fields) >= 15, fields
    for p in fields:
        h = json.loads(json.dumps(header))
        node = h
        for k in p[:-1]:
            node = node[k]
        node[p[-1]] = _changed(node[p[-1]])
        head = json.dumps(h, sort_keys=True).encode()
        bad = tmp_path / "bad.sdegen"
        bad.write_bytes(magic + struct.pack("<Q", len(head)) + head + payload)
        with pytest.raises(sg.CheckpointError, match="bad.sdegen"):
            sg.load_model(bad)


def test_every_header_byte_is_covered(exported, tmp_path):
    """Every single byte of the magic, length and header, flipped: a clear error."""
    data = exported.read_bytes()
    n = 20 + struct.unpack("<Q", data[12:20])[0]
    bad = tmp_path / "flip.sdegen"
    for i in range(n):
        b = bytearray(data)
        b[i] ^= 0x01
        bad.write_bytes(bytes(b))
        with pytest.raises(sg.CheckpointError, match="flip.sdegen"):
            sg.checkpoint_metadata(bad)


def test_checkpoint_of_format_1_still_loads(tmp_path):
    import hashlib

    state = {"w": jnp.arange(3.0)}
    path = sg.save_checkpoint(tmp_path / "new.ckpt", state, {"a": 1}, step=2)
    magic, header, payload = _split(path.read_bytes())
    header.pop("sha256")
    header.update(format_version=1, payload_sha256=hashlib.sha256(payload).hexdigest())
    head = json.dumps(header, sort_keys=True).encode()
    old = tmp_path / "old.ckpt"
    old.write_bytes(magic + struct.pack("<Q", len(head)) + head + payload)
    np.testing.assert_array_equal(sg.load_checkpoint(old, state)["w"], state["w"])
    # a format-2 file relabelled as format 1 has no payload checksum: refused
    magic, header, payload = _split(path.read_bytes())
    header["format_version"] = 1
    head = json.dumps(header, sort_keys=True).encode()
    old.write_bytes(magic + struct.pack("<Q", len(head)) + head + payload)
    with pytest.raises(sg.CheckpointError, match="old.ckpt.*format version 1"):
        sg.load_checkpoint(old, state)


# ---------------------------------------------------------------- writers into a run folder


def test_export_never_overwrites_a_run_file(exported, tmp_path):
    model, meta = sg.load_model(exported)
    kw = dict(sde=SDE, shape=(2,), network=NET, num_classes=3)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    ckpt = sg.save_checkpoint(run / "checkpoints" / "step_000000001.ckpt", {"a": jnp.ones(2)})
    before = ckpt.read_bytes()
    for target in (ckpt, run / "checkpoints" / "new.sdegen", run / "config.json"):
        with pytest.raises(ValueError, match="`path`"):
            sg.export_model(target, model, **kw)
    assert ckpt.read_bytes() == before
    # an earlier export may be replaced; a new file beside the run is fine
    sg.export_model(run / "model.sdegen", model, **kw)
    sg.export_model(run / "model.sdegen", model, **kw)


_KILLED_EXPORT = """
import os, sys, time
import jax.random as jr
import sdegen as sg
real = os.replace
def stall(a, b):
    print("written", flush=True)
    time.sleep(120)
os.replace = stall
sde = sg.VPSDE()
net = {"net": "mlp", "width": 4, "depth": 1, "param": "noise"}
m = sg.build_model(sde, (2,), net, key=jr.key(0))
sg.export_model(sys.argv[1], m, sde=sde, shape=(2,), network=net)
"""


def _env():
    return {**os.environ, "PYTHONPATH": str(Path(sg.__file__).parents[1])}


def test_kill_9_during_export_leaves_no_temp_file_after_the_next(tmp_path):
    target = tmp_path / "m.sdegen"
    p = subprocess.Popen([sys.executable, "-c", _KILLED_EXPORT, str(target)],
                         stdout=subprocess.PIPE, text=True, env=_env())  # fmt: skip
    assert p.stdout.readline().strip() == "written"
    p.kill()  # SIGKILL between the write and the rename
    p.wait()
    p.stdout.close()
    stray = list(tmp_path.glob(".m.sdegen.*.tmp"))
    assert len(stray) == 1 and not target.exists()
    model = sg.build_model(SDE, (2,), NET, key=jr.key(0))
    sg.export_model(target, model, sde=SDE, shape=(2,), network=NET)
    assert list(tmp_path.glob(".m.sdegen.*.tmp")) == [] and target.is_file()


def test_a_full_disk_names_the_path(tmp_path, monkeypatch):
    import errno

    from sdegen._runs import _checkpoint

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_checkpoint.os, "fsync", full)
    with pytest.raises(OSError, match="x.ckpt.*No space left") as e:
        sg.save_checkpoint(tmp_path / "x.ckpt", {"a": jnp.ones(2)})
    assert e.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []  # the temporary file is gone too


# The owner module alone (standard library only: no JAX to import, so fast).
_OWNER = """
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("owner", sys.argv[2])
owner = importlib.util.module_from_spec(spec)
spec.loader.exec_module(owner)
owner.claim_run_folder(sys.argv[1])
"""
_HOLDER = _OWNER + 'print("owned", flush=True)\ntime.sleep(120)\n'
_TAKER = _OWNER + 'print("took over", flush=True)\n'
_OWNER_PY = str(Path(sg.__file__).parent / "_runs" / "_owner.py")


def test_one_owner_per_run_folder_two_real_processes(tmp_path):
    """A second `sdegen train` on an owned --out refuses at once, naming the owner's
    pid and host; after the owner is killed (-9) its lock is stale and taken over."""
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out), _OWNER_PY],
                              stdout=subprocess.PIPE, text=True, env=_env())  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "owned"
        t0 = time.perf_counter()
        second = subprocess.run([sys.executable, "-m", "sdegen_cli", "train", "--quick",
                                 "--out", str(out)], capture_output=True, text=True,
                                env=_env(), timeout=120)  # fmt: skip
        elapsed = time.perf_counter() - t0
        assert second.returncode == 2, second.stderr
        last = second.stderr.strip().splitlines()[-1]
        assert f"pid {holder.pid}" in last and "--out" in last and "in use" in last
        assert elapsed < 5  # asked before JAX is imported: 0.17-0.29 s measured
        assert not (out / "config.json").exists()
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    took = subprocess.run([sys.executable, "-c", _TAKER, str(out), _OWNER_PY],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert took.stdout.strip() == "took over", took.stderr


def test_owner_is_reentrant_within_a_process(tmp_path):
    from sdegen._runs._owner import claim_run_folder, release_run_folder

    claim_run_folder(tmp_path)
    claim_run_folder(tmp_path)
    release_run_folder(tmp_path)


# ---------------------------------------------------------------- user functions


@pytest.mark.parametrize("beta,match", [
    (lambda t: -1.0 + 0 * t, "`beta`: beta.*>= 0"),
    (lambda t: 1.0 - 3 * t, "`beta`: beta.*>= 0"),
    (lambda t: jnp.nan * t, "`beta`: beta.*finite"),
    (lambda t: 1.0 if t < 0.5 else 2.0, "`beta` must be JAX-traceable"),
])  # fmt: skip
def test_beta_sde_blames_beta(beta, match):
    with pytest.raises(ValueError, match=match):
        sg.BetaSDE(beta)


def test_beta_sde_integral_must_match_beta():
    beta = lambda t: 0.1 + 19.9 * t  # noqa: E731
    with pytest.raises(ValueError, match="`integral` contradicts `beta`"):
        sg.BetaSDE(beta, integral=lambda t: 0.1 * t + 5.0 * t**2)
    # within the tolerance 1e-3 (1 + |B|): the exact integral, and a 1e-4 relative error
    sg.BetaSDE(beta, integral=lambda t: 0.1 * t + 9.95 * t**2)
    sg.BetaSDE(beta, integral=lambda t: (0.1 * t + 9.95 * t**2) * (1 + 1e-4))


# ---------------------------------------------------------------- silent extremes


@pytest.mark.parametrize("solver,ode", [("dpm_solver_2", True), ("dpm_solver_3", True),
                                        ("edm", True), ("edm_sde", False)])  # fmt: skip
def test_one_step_multistage_is_refused(solver, ode):
    f = sg.sample_ode if ode else sg.sample_sde
    with pytest.raises(ValueError, match="`num_steps` must be at least 2"):
        f(KEY, SDE, SCORE, (2,), solver, num_steps=1)
    with pytest.raises(ValueError, match="`num_steps` must be at least 2"):
        f(KEY, SDE, SCORE, (2,), solver, ts=jnp.array([1.0, 1e-3]))


def test_metrics_extremes():
    x = np.random.default_rng(0).normal(size=(40, 2))
    # identical sets: the unclamped formula is negative (rounding) for 14 of these 50
    for seed in range(50):
        z = np.random.default_rng(seed).normal(size=(40, 8)) * 100
        d = sg.metrics.frechet_distance(z, z)
        assert 0.0 <= d < 1e-6
    with pytest.raises(ValueError, match="`x` contains non-finite"):
        sg.metrics.mmd(np.full((3, 2), np.nan), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="`data` is constant"):
        sg.metrics.sample_report(x, np.ones((20, 2)), key=KEY)


# ---------------------------------------------------------------- empty answers


def test_empty_answers():
    with pytest.raises(ValueError, match="`num_steps` must be an int >= 1"):
        sg.TrainConfig(num_steps=0)
    with pytest.raises(ValueError, match="Nothing was measured.*`nfes`.*tsit5"):
        sg.advise(KEY, SDE, SCORE, np.zeros((8, 2)), solvers=["tsit5"], nfes=[5])
