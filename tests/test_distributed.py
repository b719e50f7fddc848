"""Data parallelism with jax.sharding: `sdegen.train(..., mesh=...)`, sharded
chunked sampling and likelihoods, checkpoints across device counts, `sdegen train
--devices`, error messages.

The test processes have 4 CPU devices (`--xla_force_host_platform_device_count=4`,
set in tests/conftest.py before JAX starts); every other test uses the default one.
The 4-device checks are tests/_distributed_worker.py; this module writes the
checkpoint (on one device) that the worker's `sdegen.train` resumes on 4 devices, and
resumes the worker's 4-device checkpoint with `sdegen.train` on one device.

Tolerances (float64): the sharded step differs from the single-device one only by
the order of the gradient's summation over the batch, i.e. by rounding, ~1e-16
relative; after 4 Adam steps we allow 1e-9, against parameter changes of ~1e-2 over
the run (an error in the reduction, e.g. a sum instead of a mean or one shard's
gradient, shows up at ~1e-3). Samples go through the same per-sample computation in
vmapped chunks of different sizes; batched matrix products may round differently, so
we allow 1e-9 (samples are O(1); the command line's untrained 8-step model gives
samples of O(100), still far above the tolerance's relative rounding).
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import sdegen as sg
from sdegen._training._train import iterate_batches

from ._distributed_worker import (
    CFG,
    DATA,
    NUM_STEPS,
    SDE,
    loss_fn as _loss,
    make_model as _model,
    run as run_four_devices,
)


STEP_TOL = 1e-9
SAMPLE_TOL = 1e-9


def _xla_flags():
    """This process's XLA_FLAGS (the suite's compiler settings, tests/conftest.py)
    without the host device count."""
    kept = [f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f]
    return " ".join(kept)


def _data():
    return DATA


def _arrays(tree):
    return [np.asarray(a) for a in jax.tree_util.tree_leaves(sg.to_host(tree))
            if isinstance(a, np.ndarray)]  # fmt: skip


@pytest.fixture(scope="module")
def four_devices(tmp_path_factory):
    """Write a 1-device checkpoint here, run the 4-device worker, then resume the
    worker's 4-device checkpoint (step 2) here on one device."""
    if jax.default_backend() != "cpu":
        pytest.skip("the 4 devices are the CPU host devices of tests/conftest.py; the "
                    f"default backend here is {jax.default_backend()}")  # fmt: skip
    assert jax.device_count() == 4, "tests/conftest.py sets 4 host devices"
    d = tmp_path_factory.mktemp("distributed")
    half = sg.TrainConfig.from_dict({**CFG.to_dict(), "num_steps": 2})
    sg.train(_model(), _loss, _data(), half, ckpt_dir=d / "ckpt1", progress=False)

    res = run_four_devices(d)

    # The 4-device run's step-2 checkpoint, alone in a folder, resumed on 1 device;
    # against the uninterrupted 1-device run.
    resume_dir = d / "resume_4_to_1"
    resume_dir.mkdir()
    shutil.copy(d / "ckpt4" / "step_000000002.ckpt", resume_dir)
    state, history = sg.train(_model(), _loss, _data(), CFG, ckpt_dir=resume_dir,
                              progress=False)  # fmt: skip
    ref, _ = sg.train(_model(), _loss, _data(), CFG, progress=False)
    mine = _arrays((state.model, state.ema_model, state.opt_state))
    ref_leaves = _arrays((ref.model, ref.ema_model, ref.opt_state))
    assert len(mine) == len(ref_leaves)
    res["resume_4_to_1_diff"] = max(
        float(np.max(np.abs(a - b))) for a, b in zip(mine, ref_leaves)
    )
    res["resume_4_to_1_losses"] = state.losses.tolist()
    res["ref_losses"] = ref.losses.tolist()
    res["resume_4_to_1_log"] = [[r["step"], r["num_devices"]] for r in history["log"]]
    return res


@pytest.mark.long
def test_worker_saw_four_devices(four_devices):
    assert four_devices["devices"] == 4


@pytest.mark.long
def test_train_on_four_devices_matches_one(four_devices):
    r = four_devices
    # The comparison is meaningful: the parameters moved by far more than the tolerance.
    assert r["param_change"] > 1e3 * STEP_TOL
    assert r["step_param_diff"] < STEP_TOL
    assert r["step_loss_diff"] < STEP_TOL
    assert r["num_losses"] == [NUM_STEPS, NUM_STEPS]
    assert r["train_log_devices"] == [4] * NUM_STEPS
    assert r["ckpt4_names"] == ["hparams.json", "step_000000002.ckpt",
                                "step_000000004.ckpt"]  # fmt: skip
    # Parameters replicated on all 4 devices; the batch split 4 ways (32 -> 4 x 8).
    assert r["params_replicated"] and r["params_num_devices"] == 4
    assert r["batch_shard_shapes"] == [[8, 2]] * 4


@pytest.mark.long
def test_sharding_errors_are_clear(four_devices):
    r = four_devices
    assert r["step_error"] is not None
    assert "global batch size 10 is not divisible by the size 4" in r["step_error"]
    assert "multiple of 4" in r["step_error"]
    # `train` checks the batch size before it writes or compiles anything.
    assert "global batch size 10 is not divisible by the size 4" in r["train_error"]
    assert not r["train_error_wrote"]
    assert "global batch size 6 is not divisible by the size 4" in r["shard_error"]
    assert "`chunk_size` 6 is not divisible by the size 4" in r["chunk_error"]


@pytest.mark.long
def test_sharded_sampling_matches_unsharded(four_devices):
    r = four_devices
    assert r["sample_shape"] == [37, 2]
    assert r["sample_finite"]
    assert r["sample_scale"] > 0.1
    assert r["sample_diff_4"] < SAMPLE_TOL


@pytest.mark.long
def test_sharded_likelihood_matches_batch(four_devices):
    r = four_devices
    assert r["loglik_shape"] == [10]
    # Fixed-step Heun with the same Hutchinson probes (fold_in(key, i)): the same
    # arithmetic per example, up to batched rounding.
    assert r["loglik_diff"] < 1e-9
    assert r["loglik_nfe_equal"]


@pytest.mark.long
def test_checkpoint_one_device_resumes_on_four(four_devices):
    r = four_devices
    # Steps 1-2 logged on 1 device (restored from the parent's checkpoint), 3-4 on 4.
    assert r["resume_1_to_4_log"] == [[1, 1], [2, 1], [3, 4], [4, 4]]
    assert r["resumed_replicated_on"] == 4
    assert r["resume_1_to_4_diff"] < STEP_TOL
    assert r["resume_1_to_4_loss_diff"] < STEP_TOL


@pytest.mark.long
def test_checkpoint_four_devices_resumes_on_one(four_devices):
    r = four_devices
    # sdegen.train resumed the worker's file (its log records say so) ...
    assert r["resume_4_to_1_log"] == [[1, 4], [2, 4], [3, 1], [4, 1]]
    # ... and finished the run as the uninterrupted single-device one.
    assert r["resume_4_to_1_diff"] < STEP_TOL
    np.testing.assert_allclose(r["resume_4_to_1_losses"], r["ref_losses"], rtol=0,
                               atol=STEP_TOL)  # fmt: skip


@pytest.mark.long
def test_cli_train_on_four_devices(four_devices):
    r = four_devices
    assert r["cli_rc"] == 0, r["cli_err"]
    assert "on 4 device(s)" in r["cli_err"]
    m = r["cli_metrics"]
    assert m["steps"] == 8 and m["num_devices"] == 4 and m["num_samples"] == 12
    assert m["samples_finite"]
    for k in ("final_loss", "eval_loss", "mmd"):
        assert np.isfinite(m[k]), k
    assert r["cli_ckpt"] == "step_000000008.ckpt"
    # The 4-device samples of `sdegen train` are those `sdegen sample` draws from
    # the same checkpoint and key on one device.
    assert r["cli_sample_rc"] == 0
    assert r["cli_sample_shapes"] == [[12, 2], [12, 2]]
    assert r["cli_sample_diff"] < SAMPLE_TOL


@pytest.mark.long
def test_cli_batch_not_divisible(four_devices):
    r = four_devices
    assert r["cli_bad_rc"] == 2
    assert "sdegen train: error: The global batch size 10 is not divisible by the " \
        "size 4" in r["cli_bad_err"]  # fmt: skip
    assert not r["cli_bad_wrote_config"]


# ---------------------------------------------------------------- one device


def test_make_mesh():
    mesh = sg.make_mesh()
    assert mesh.axis_names == ("data",)
    assert mesh.shape["data"] == jax.device_count()
    assert sg.make_mesh(1, "batch").axis_names == ("batch",)
    with pytest.raises(ValueError, match=r"`num_devices` must be an int in \[1, "):
        sg.make_mesh(0)
    with pytest.raises(ValueError, match=r"`num_devices` must be an int in \[1, "):
        sg.make_mesh(jax.device_count() + 1)
    with pytest.raises(ValueError, match="`axis_name` must be a non-empty string"):
        sg.make_mesh(1, "")
    with pytest.raises(ValueError, match="`axis_name` 'model' is not an axis"):
        sg.shard_batch(jnp.zeros((4, 2)), mesh, axis_name="model")


def test_shard_batch_and_replicate_one_device():
    mesh = sg.make_mesh(1)
    x, y = jnp.arange(12.0).reshape(6, 2), jnp.arange(6)
    xs, ys = sg.shard_batch((x, y), mesh)
    assert xs.sharding.spec == jax.sharding.PartitionSpec("data")
    np.testing.assert_array_equal(np.asarray(xs), np.asarray(x))
    np.testing.assert_array_equal(np.asarray(ys), np.asarray(y))
    rep = sg.replicate(_model(), mesh)
    leaf = jax.tree_util.tree_leaves(eqx.filter(rep, eqx.is_array))[0]
    assert leaf.sharding.is_fully_replicated
    with pytest.raises(ValueError, match="must share their leading"):
        sg.shard_batch((x, jnp.arange(5)), mesh)
    with pytest.raises(ValueError, match="needs a leading batch axis"):
        sg.shard_batch(jnp.zeros(()), mesh)


def test_map_in_chunks_pads_and_keeps_order():
    # A pytree in, a pytree out; N = 10 is not a multiple of the chunk size 4, so the
    # last chunk is padded and the padding dropped.
    xs = {"a": np.arange(10.0), "b": np.arange(20.0).reshape(10, 2)}
    fn = lambda d: (d["a"] * 2, d["b"].sum())
    out2, outs = sg.map_in_chunks(fn, xs, chunk_size=4, mesh=sg.make_mesh(1))
    assert isinstance(out2, np.ndarray) and out2.shape == (10,)
    np.testing.assert_array_equal(out2, 2 * np.arange(10.0))
    np.testing.assert_array_equal(outs, np.arange(20.0).reshape(10, 2).sum(1))
    # One chunk larger than N: computed once, same answer.
    out_big, _ = sg.map_in_chunks(fn, xs, chunk_size=1024)
    np.testing.assert_array_equal(out_big, out2)
    with pytest.raises(ValueError, match="`chunk_size` must be a positive int"):
        sg.map_in_chunks(fn, xs, chunk_size=0)


def test_sample_many_does_not_depend_on_chunk_size(getkey):
    model = _model()
    sampler = eqx.Partial(
        lambda m, k: sg.sample_sde(k, SDE, m, (2,), "euler_maruyama", num_steps=8),
        model,
    )
    key = getkey()
    plain = np.asarray(jax.vmap(sampler)(jr.split(key, 11)))
    a = sg.sample_many(key, 11, sampler, chunk_size=3, progress=True)
    assert a.shape == (11, 2)
    np.testing.assert_allclose(a, plain, rtol=0, atol=SAMPLE_TOL)
    # Different keys give different samples.
    assert np.max(np.abs(a[0] - a[1])) > 1e-3
    with pytest.raises(ValueError, match="`n` must be a positive int"):
        sg.sample_many(key, 0, sampler)


def test_sample_many_legacy_uint32_keys():
    sampler = lambda k: jr.normal(k, (3,))
    key = jr.PRNGKey(4)
    out = sg.sample_many(key, 5, sampler, chunk_size=2)
    np.testing.assert_array_equal(out, np.asarray(jax.vmap(sampler)(jr.split(key, 5))))


def test_sharded_step_one_device_matches_plain():
    optimizer = sg.make_optimizer(CFG)
    step = sg.make_step(_loss, optimizer, None)
    sstep = sg.sharded_step(step, sg.make_mesh(1))
    data = _data()
    batch = next(iterate_batches(data, CFG.batch_size, CFG.seed))
    outs = []
    donating = sg.sharded_step(step, sg.make_mesh(1), donate_argnums=(0, 1, 2))
    for f in (step, sstep, donating):
        model, ema = _model(), _model()  # separate buffers: make_step donates
        opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
        outs.append(f(model, ema, opt_state, batch, jr.key(2)))
    for other in outs[1:]:
        assert max(float(np.max(np.abs(a - b)))
                   for a, b in zip(_arrays(outs[0]), _arrays(other))) < STEP_TOL  # fmt: skip
    # The program can be inspected before it runs.
    model, ema = _model(), _model()
    opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
    text = sstep.lower(model, ema, opt_state, batch, jr.key(2)).as_text()
    assert "sharding" in text
    with pytest.raises(ValueError, match="`batch_argnums` must hold argument"):
        sg.sharded_step(step, sg.make_mesh(1), batch_argnums=7)(1, 2)


def test_checkpoint_helpers_round_trip(tmp_path):
    mesh = sg.make_mesh(1)
    state = sg.replicate({"w": jnp.arange(6.0).reshape(3, 2), "n": jnp.int32(3)},
                         mesh)  # fmt: skip
    path = tmp_path / "c.ckpt"
    sg.save_checkpoint_main(path, state, {"x": 1}, step=5)
    like = {"w": jnp.zeros((3, 2)), "n": jnp.int32(0)}
    back = sg.load_checkpoint_replicated(path, like, mesh)
    np.testing.assert_array_equal(np.asarray(back["w"]), np.asarray(state["w"]))
    assert int(back["n"]) == 3 and back["w"].sharding.is_fully_replicated
    assert sg.checkpoint_metadata(path)["step"] == 5
    assert sg.is_main_process()


def test_distributed_initialize_validates():
    with pytest.raises(ValueError, match="`num_processes` must be an int >= 1"):
        sg.distributed_initialize("localhost:1234", num_processes=0, process_id=0)
    with pytest.raises(ValueError, match="`process_id` must be an int in"):
        sg.distributed_initialize("localhost:1234", num_processes=2, process_id=2)


# ---------------------------------------------------------------- two processes


@pytest.mark.slow  # two subprocesses
@pytest.mark.long
def test_two_processes_train_and_sample_as_one_job(tmp_path):
    """Two JAX processes on 127.0.0.1 (one CPU device each, gloo collectives) joined
    by `sdegen.distributed_initialize` train 4 steps with `mesh=make_mesh(2)` and
    sample with `sdegen.sample_many(mesh=...)`: the losses, weights and samples are
    those of the same run in this one process (tolerance 1e-9: float64 summation
    order only, against weight changes of ~1e-2 and samples of O(1))."""
    import socket

    sys.path.insert(0, str(Path(__file__).parent))
    import _multiprocess_common as common

    with socket.socket() as s:  # a free port for the coordinator
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"
    env["XLA_FLAGS"] = _xla_flags()  # one device each
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).parent), env.get("PYTHONPATH", "")])  # fmt: skip
    worker = Path(__file__).with_name("_multiprocess_worker.py")
    procs = [subprocess.Popen([sys.executable, "-W", "error", str(worker), str(port),
                               str(pid), str(tmp_path)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for pid in (0, 1)]  # fmt: skip
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=300))
    finally:
        for p in procs:
            p.kill()
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, out[-2000:] + err[-4000:]
    res = np.load(tmp_path / "result.npz")
    # the reference: the same run and samples in this process (one device)
    state, hist = sg.train(common.model(), common.loss_fn, common.data(), common.CFG,
                           progress=False)  # fmt: skip
    ref_samples = jax.vmap(lambda k: common.sample_one(state.ema_model, k))(
        jr.split(jr.key(11), common.NUM_SAMPLES))
    assert list(res["devices"]) == [2, 2]
    np.testing.assert_allclose(res["losses"], state.losses, rtol=0, atol=STEP_TOL)
    np.testing.assert_allclose(res["ema_loss"], [r["ema_loss"] for r in hist["log"]],
                               rtol=0, atol=STEP_TOL)  # fmt: skip
    leaves = jax.tree_util.tree_leaves(eqx.filter((state.model, state.ema_model),
                                                  eqx.is_array))  # fmt: skip
    moved = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(
        jax.tree_util.tree_leaves(eqx.filter(state.model, eqx.is_inexact_array)),
        jax.tree_util.tree_leaves(eqx.filter(common.model(), eqx.is_inexact_array))))
    assert moved > 1e3 * STEP_TOL
    for i, leaf in enumerate(leaves):
        np.testing.assert_allclose(res[f"leaf{i}"], np.asarray(leaf), rtol=0,
                                   atol=STEP_TOL)  # fmt: skip
    assert res["samples"].shape == (common.NUM_SAMPLES, 2)
    assert np.max(np.abs(res["samples"])) > 0.1
    np.testing.assert_allclose(res["samples"], ref_samples, rtol=0, atol=SAMPLE_TOL)
    # process 0 wrote the checkpoints, which resume here on one device
    assert sg.latest_checkpoint(tmp_path / "ckpt").name == "step_000000004.ckpt"
