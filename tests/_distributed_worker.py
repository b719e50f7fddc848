"""The 4-device half of tests/test_distributed.py, run in the test process, which has
4 CPU devices (`--xla_force_host_platform_device_count=4`, set by tests/conftest.py
before JAX starts: the device count cannot change once JAX has started).

`run(folder)`: the parent (on its default device) has written folder/ckpt1 with
`sdegen.train` (2 steps). Here, on 4 devices: `sdegen.train(..., mesh=make_mesh(4))`
against `sdegen.train` on one device (4 steps); its checkpoint at step 2
(folder/ckpt4), which the parent resumes with `sdegen.train` on one device; folder/ckpt1
resumed by `sdegen.train` on 4 devices; sharded sampling and likelihoods against
unsharded ones; the error messages; and `sdegen train --devices 4` end to end
(folder/cli). Returns a dict of the measured differences.
"""

import contextlib
import io
import json
import os
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

import sdegen as sg
from sdegen._cli import main as cli_main


NUM_STEPS = 4
SDE = sg.VPSDE()
CFG = sg.TrainConfig(num_steps=NUM_STEPS, batch_size=32, lr=1e-2, warmup=2,
                     schedule="constant",  # the half run of 2 steps is extended
                     grad_clip=1.0, ema_decay=0.9, seed=3, log_every=1,
                     ckpt_every=None)  # fmt: skip
DATA = np.asarray(sg.data.eight_gaussians().sample(jr.key(0), 256))


def make_model():
    return sg.nn.NoiseParam(sg.nn.MLP(2, 16, 2, embed_dim=8, key=jr.key(1)), SDE)


def loss_fn(model, batch, key):
    return sg.dsm_loss(model, SDE, batch, key)


def arrays(tree):
    return [np.asarray(a) for a in jax.tree_util.tree_leaves(sg.to_host(tree))
            if isinstance(a, np.ndarray)]  # fmt: skip


def max_diff(a, b):
    la, lb = arrays(a), arrays(b)
    assert len(la) == len(lb) and len(la) > 0
    return max(float(np.max(np.abs(x - y))) if x.size else 0.0 for x, y in zip(la, lb))


def train_state_arrays(state):
    return (state.model, state.ema_model, state.opt_state)


def cfg_with(**changes):
    return sg.TrainConfig.from_dict({**CFG.to_dict(), **changes})


def error_of(fn):
    try:
        fn()
    except ValueError as e:
        return str(e)
    return None


def cli(*argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = cli_main(list(argv))
    return rc, err.getvalue()


def run(folder):
    out = {"devices": jax.device_count()}
    tick = time.perf_counter()
    mesh = sg.make_mesh(4)

    # 1. sdegen.train on 4 devices == sdegen.train on 1 device (the default device
    # of this process), same config. The 4-device run also checkpoints at step 2
    # (folder/ckpt4; the parent resumes it on one device).
    single, _ = sg.train(make_model(), loss_fn, DATA, CFG, progress=False)
    sharded, hist4 = sg.train(make_model(), loss_fn, DATA, cfg_with(ckpt_every=2),
                              ckpt_dir=os.path.join(folder, "ckpt4"), mesh=mesh,
                              progress=False)  # fmt: skip
    out["step_param_diff"] = max_diff(train_state_arrays(single),
                                      train_state_arrays(sharded))  # fmt: skip
    out["step_loss_diff"] = float(np.max(np.abs(single.losses - sharded.losses)))
    out["num_losses"] = [len(single.losses), len(sharded.losses)]
    out["train_log_devices"] = [r["num_devices"] for r in hist4["log"]]
    out["ckpt4_names"] = sorted(os.listdir(os.path.join(folder, "ckpt4")))
    init = arrays(make_model())
    out["param_change"] = max(float(np.max(np.abs(a - b)))
                              for a, b in zip(arrays(single.model), init))  # fmt: skip
    leaf = jax.tree_util.tree_leaves(eqx.filter(sharded.model, eqx.is_array))[0]
    out["params_replicated"] = bool(leaf.sharding.is_fully_replicated)
    out["params_num_devices"] = len(leaf.sharding.device_set)
    xb = sg.shard_batch(jnp.asarray(DATA[:32]), mesh)
    out["batch_shard_shapes"] = [list(s.data.shape) for s in xb.addressable_shards]

    out["t_1"] = time.perf_counter() - tick
    # 2. A checkpoint written by sdegen.train on 1 device (by the parent, step 2)
    # resumed by sdegen.train on 4 devices.
    resumed, hist14 = sg.train(make_model(), loss_fn, DATA, CFG,
                               ckpt_dir=os.path.join(folder, "ckpt1"), mesh=mesh,
                               progress=False)  # fmt: skip
    out["resume_1_to_4_log"] = [[r["step"], r["num_devices"]] for r in hist14["log"]]
    out["resume_1_to_4_diff"] = max_diff(train_state_arrays(single),
                                         train_state_arrays(resumed))  # fmt: skip
    out["resume_1_to_4_loss_diff"] = float(np.max(np.abs(single.losses
                                                         - resumed.losses)))  # fmt: skip
    leaf = jax.tree_util.tree_leaves(eqx.filter(resumed.model, eqx.is_array))[0]
    out["resumed_replicated_on"] = len(leaf.sharding.device_set)

    out["t_2"] = time.perf_counter() - tick
    # 3. Clear errors for a batch that does not divide over the devices.
    sstep = sg.sharded_step(sg.make_step(loss_fn, sg.make_optimizer(CFG), 0.9), mesh)
    out["step_error"] = error_of(lambda: sstep(sharded.model, sharded.ema_model,
                                               sharded.opt_state, DATA[:10],
                                               jr.key(0)))  # fmt: skip
    bad_dir = os.path.join(folder, "bad")
    out["train_error"] = error_of(lambda: sg.train(
        make_model(), loss_fn, DATA, cfg_with(batch_size=10), ckpt_dir=bad_dir,
        mesh=mesh, progress=False))  # fmt: skip
    out["train_error_wrote"] = os.path.exists(bad_dir)
    out["shard_error"] = error_of(lambda: sg.shard_batch((DATA[:6], np.arange(6)),
                                                         mesh))  # fmt: skip
    out["chunk_error"] = error_of(lambda: sg.sample_many(
        jr.key(0), 8, lambda k: jr.normal(k, (2,)), chunk_size=6, mesh=mesh))

    out["t_3"] = time.perf_counter() - tick
    # 4. Sharded sampling == unsharded sampling for the same keys.
    model = sharded.ema_model
    sampler = eqx.Partial(_sample_one, model)
    key = jr.key(11)
    n = 37
    plain = np.asarray(jax.vmap(sampler)(jr.split(key, n)))
    s4 = sg.sample_many(key, n, sampler, chunk_size=8, mesh=mesh)
    out["sample_shape"] = list(s4.shape)
    out["sample_finite"] = bool(np.all(np.isfinite(s4)))
    out["sample_diff_4"] = float(np.max(np.abs(s4 - plain)))
    out["sample_scale"] = float(np.max(np.abs(plain)))

    out["t_4"] = time.perf_counter() - tick
    # 5. Sharded likelihoods == sdegen.log_likelihood_batch.
    xs = DATA[:10]
    opts = dict(solver="heun", num_steps=16, trace="hutchinson", num_probes=2)
    lp4, st4 = sg.log_likelihood_many(SDE, model, xs, jr.key(5), chunk_size=4,
                                      mesh=mesh, **opts)  # fmt: skip
    lpb, stb = sg.log_likelihood_batch(SDE, model, xs, jr.key(5), **opts)
    out["loglik_diff"] = float(jnp.max(jnp.abs(lp4 - lpb)))
    out["loglik_nfe_equal"] = bool(jnp.all(st4.nfe == stb.nfe))
    out["loglik_shape"] = list(lp4.shape)

    out["t_5"] = time.perf_counter() - tick
    # 6. The command line on 4 devices: a short run end to end, its samples against
    # `sdegen sample` of the same checkpoint on one device, and the error for a
    # batch size that does not divide over the devices.
    run = os.path.join(folder, "cli")
    tiny = ("--dataset", "moons", "--quick", "--no-progress", "--steps", "8",
            "--num-samples", "12", "--sample-steps", "4")  # fmt: skip
    rc, err = cli("train", *tiny, "--out", run, "--devices", "4")
    out["cli_rc"], out["cli_err"] = rc, err[-2000:]
    with open(os.path.join(run, "metrics.json")) as f:
        metrics = json.load(f)
    out["cli_metrics"] = {k: metrics.get(k) for k in
                          ("steps", "num_devices", "num_samples", "samples_finite",
                           "final_loss", "eval_loss", "mmd")}  # fmt: skip
    out["cli_ckpt"] = os.path.basename(sg.latest_checkpoint(os.path.join(run,
                                                                         "checkpoints")))
    # `sdegen train` samples with key(seed + 1) = key(1), as `sample --seed 1`.
    rc1, _ = cli("sample", "--out", run, "--seed", "1", "--name", "one_device")
    samples4 = np.load(os.path.join(run, "samples.npy"))
    samples1 = np.load(os.path.join(run, "one_device.npy"))
    out["cli_sample_rc"] = rc1
    out["cli_sample_shapes"] = [list(samples4.shape), list(samples1.shape)]
    out["cli_sample_diff"] = float(np.max(np.abs(samples4 - samples1)))
    bad_run = os.path.join(folder, "cli_bad")
    rc, err = cli("train", *tiny, "--out", bad_run, "--devices", "4",
                  "--batch-size", "10")  # fmt: skip
    out["cli_bad_rc"], out["cli_bad_err"] = rc, err
    out["cli_bad_wrote_config"] = os.path.exists(os.path.join(bad_run, "config.json"))
    out["t_6"] = time.perf_counter() - tick
    return out


def _sample_one(model, key):
    return sg.sample_sde(key, SDE, model, (2,), "euler_maruyama", num_steps=16)
