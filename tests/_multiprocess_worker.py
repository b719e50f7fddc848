"""Worker for the two-process test of tests/test_distributed.py: one of two JAX
processes on 127.0.0.1 (one CPU device each, CPU collectives by gloo), joined by
`sdegen.distributed_initialize` into one 2-device job.

    python tests/_multiprocess_worker.py PORT PROCESS_ID OUT_DIR

Both processes run `sdegen.train(..., mesh=make_mesh(2))` for a few steps on the same
global batches and then `sdegen.sample_many(..., mesh=...)`; process 0 writes the
losses, the parameters and the samples to OUT_DIR/result.npz (and its checkpoint to
OUT_DIR/ckpt). The parent compares them with the same run in one process.
"""

import os
import sys


PORT, PID, OUT = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]

import jax


jax.config.update("jax_enable_x64", True)
jax.config.update("jax_cpu_collectives_implementation", "gloo")

import sdegen as sg


sg.distributed_initialize(f"127.0.0.1:{PORT}", num_processes=2, process_id=PID,
                          initialization_timeout=60)  # fmt: skip

import _multiprocess_common as common
import equinox as eqx
import jax.random as jr
import numpy as np


def main():
    assert jax.process_count() == 2 and jax.device_count() == 2, jax.devices()
    mesh = sg.make_mesh(2)
    state, hist = sg.train(common.model(), common.loss_fn, common.data(), common.CFG,
                           ckpt_dir=os.path.join(OUT, "ckpt"), mesh=mesh,
                           progress=False)  # fmt: skip
    samples = sg.sample_many(jr.key(11), common.NUM_SAMPLES,
                             eqx.Partial(common.sample_one, state.ema_model),
                             chunk_size=4, mesh=mesh)  # fmt: skip
    host = sg.to_host((state.model, state.ema_model))
    leaves = [np.asarray(x) for x in jax.tree_util.tree_leaves(eqx.filter(host,
                                                                          eqx.is_array))]
    if sg.is_main_process():
        np.savez(os.path.join(OUT, "result.npz"), losses=state.losses,
                 samples=np.asarray(samples), ema_loss=[r["ema_loss"] for r in hist["log"]],
                 devices=[r["num_devices"] for r in hist["log"]],
                 **{f"leaf{i}": x for i, x in enumerate(leaves)})  # fmt: skip


if __name__ == "__main__":
    main()
