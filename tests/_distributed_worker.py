"""Worker for tests/test_distributed.py, run in a subprocess whose environment sets
`XLA_FLAGS=--xla_force_host_platform_device_count=4` and `JAX_PLATFORMS=cpu` before
JAX is imported (the device count cannot change once JAX has started).

    python tests/_distributed_worker.py DIR

The parent (one device) has written DIR/ckpt1 with `sdegen.train` (2 steps). Here,
on 4 devices: the sharded step against the single-device step (4 steps, the
reference, saved to DIR/ref.npz); sharded sampling and likelihoods against
unsharded ones; the error messages; DIR/ckpt1 resumed on 4 devices; and a checkpoint
of the 4-device run at step 2 written to DIR/ckpt4, which the parent resumes with
`sdegen.train` on one device.

Prints one line `RESULT <json>` with the measured differences.
"""

import json
import os
import sys
import time


DIR = sys.argv[1]

import jax
import jaxtyping


jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")

with jaxtyping.install_import_hook(["sdegen"], "beartype.beartype"):
    import sdegen as sg

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from sdegen._checkpoint import checkpoint_path
from sdegen._train import iterate_batches


NUM_STEPS = 4
SDE = sg.VPSDE()
CFG = sg.TrainConfig(num_steps=NUM_STEPS, batch_size=32, lr=1e-2, warmup=2,
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


def fresh_state(step=0):
    model = make_model()
    opt_state = sg.make_optimizer(CFG).init(eqx.filter(model, eqx.is_inexact_array))
    # Separate buffers for the model and its EMA: `make_step` donates both.
    ema = jax.tree_util.tree_map(
        lambda a: jnp.array(a, copy=True) if eqx.is_array(a) else a, model
    )
    return sg.TrainState(model, ema, opt_state, step, np.zeros((step,), np.float64))


def run_steps(step_fn, state, start, stop, mesh=None):
    """Steps `start..stop-1` with the keys and batches `sdegen.train` uses."""
    step_root = jr.fold_in(jr.key(CFG.seed), 0)
    batches = iterate_batches(DATA, CFG.batch_size, CFG.seed)
    model, ema, opt_state = state.model, state.ema_model, state.opt_state
    losses = list(state.losses)
    for s in range(stop):
        batch = next(batches)
        if s < start:
            continue
        model, ema, opt_state, loss = step_fn(model, ema, opt_state, batch,
                                              jr.fold_in(step_root, s))  # fmt: skip
        losses.append(float(loss))
    return sg.TrainState(model, ema, opt_state, stop, np.asarray(losses))


def main():
    out = {}
    tick = time.perf_counter()
    mesh = sg.make_mesh(4)
    optimizer = sg.make_optimizer(CFG)
    step = sg.make_step(loss_fn, optimizer, CFG.ema_decay)
    sstep = sg.sharded_step(step, mesh)

    # 1. Sharded step == single-device step on the same global batch. The
    # single-device run is also the reference for the resumed runs.
    single = run_steps(step, fresh_state(), 0, NUM_STEPS)
    half = run_steps(sstep, sg.replicate(fresh_state(), mesh), 0, 2)
    # A checkpoint written on 4 devices at step 2 (the parent resumes it on 1).
    record = {"step": 2, "loss": float(np.mean(half.losses)), "steps_per_s": 0.0,
              "written_on_devices": jax.device_count()}  # fmt: skip
    sg.save_checkpoint_main(checkpoint_path(os.path.join(DIR, "ckpt4"), 2), half,
                            {"train": CFG.to_dict()}, step=2,
                            extra={"log": [record], "eval": []})  # fmt: skip
    sharded = run_steps(sstep, half, 2, NUM_STEPS)
    out["step_param_diff"] = max_diff(train_state_arrays(single),
                                      train_state_arrays(sharded))  # fmt: skip
    out["step_loss_diff"] = float(np.max(np.abs(single.losses - sharded.losses)))
    leaves = arrays(train_state_arrays(single))
    np.savez(os.path.join(DIR, "ref.npz"), losses=single.losses,
             **{f"a{i}": a for i, a in enumerate(leaves)})  # fmt: skip
    init = arrays(make_model())
    out["param_change"] = max(float(np.max(np.abs(a - b)))
                              for a, b in zip(arrays(single.model), init))  # fmt: skip
    leaf = jax.tree_util.tree_leaves(eqx.filter(sharded.model, eqx.is_array))[0]
    out["params_replicated"] = bool(leaf.sharding.is_fully_replicated)
    out["params_num_devices"] = len(leaf.sharding.device_set)
    xb = sg.shard_batch(jnp.asarray(DATA[:32]), mesh)
    out["batch_shard_shapes"] = [list(s.data.shape) for s in xb.addressable_shards]

    out["t_2"] = time.perf_counter() - tick
    # 2. Clear errors for a batch that does not divide over the devices.
    try:
        sstep(sharded.model, sharded.ema_model, sharded.opt_state, DATA[:10], jr.key(0))
        out["step_error"] = None
    except ValueError as e:
        out["step_error"] = str(e)
    try:
        sg.shard_batch((DATA[:6], np.arange(6)), mesh)
        out["shard_error"] = None
    except ValueError as e:
        out["shard_error"] = str(e)
    try:
        sg.sample_many(jr.key(0), 8, lambda k: jr.normal(k, (2,)), chunk_size=6,
                       mesh=mesh)  # fmt: skip
        out["chunk_error"] = None
    except ValueError as e:
        out["chunk_error"] = str(e)

    out["t_3"] = time.perf_counter() - tick
    # 3. Sharded sampling == unsharded sampling for the same keys.
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
    # 4. Sharded likelihoods == sdegen.log_likelihood_batch.
    xs = DATA[:10]
    opts = dict(solver="heun", num_steps=16, trace="hutchinson", num_probes=2)
    lp4, st4 = sg.log_likelihood_many(SDE, model, xs, jr.key(5), chunk_size=4,
                                      mesh=mesh, **opts)  # fmt: skip
    lpb, stb = sg.log_likelihood_batch(SDE, model, xs, jr.key(5), **opts)
    out["loglik_diff"] = float(jnp.max(jnp.abs(lp4 - lpb)))
    out["loglik_nfe_equal"] = bool(jnp.all(st4.nfe == stb.nfe))
    out["loglik_shape"] = list(lp4.shape)

    out["t_5"] = time.perf_counter() - tick
    # 5. A checkpoint written on 1 device (by the parent) resumes on 4.
    path = sg.latest_checkpoint(os.path.join(DIR, "ckpt1"))
    out["ckpt1_name"] = None if path is None else os.path.basename(path)
    loaded = sg.load_checkpoint_replicated(path, fresh_state(2), mesh)
    leaf = jax.tree_util.tree_leaves(eqx.filter(loaded.model, eqx.is_array))[0]
    out["loaded_replicated_on"] = len(leaf.sharding.device_set)
    resumed = run_steps(sstep, loaded, 2, NUM_STEPS)
    out["resume_1_to_4_diff"] = max_diff(train_state_arrays(single),
                                         train_state_arrays(resumed))  # fmt: skip
    out["resume_1_to_4_loss_diff"] = float(np.max(np.abs(single.losses
                                                         - resumed.losses)))  # fmt: skip
    return out


def _sample_one(model, key):
    return sg.sample_sde(key, SDE, model, (2,), "euler_maruyama", num_steps=16)


if __name__ == "__main__":
    result = {"devices": jax.device_count(), **main()}
    print("RESULT " + json.dumps(result), flush=True)
