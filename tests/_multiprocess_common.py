"""The run shared by tests/_multiprocess_worker.py (two processes) and the
single-process reference in tests/test_distributed.py."""

import jax.random as jr
import numpy as np

import sdegen as sg


SDE = sg.VPSDE()
CFG = sg.TrainConfig(num_steps=4, batch_size=16, lr=1e-2, warmup=1, log_every=2,
                     ckpt_every=2, seed=3)  # fmt: skip
NUM_SAMPLES = 6


def data():
    return np.asarray(sg.data.eight_gaussians().sample(jr.key(0), 64))


def model():
    return sg.nn.NoiseParam(sg.nn.MLP(2, 16, 2, embed_dim=8, key=jr.key(1)), SDE)


def loss_fn(model, batch, key):
    return sg.dsm_loss(model, SDE, batch, key)


def sample_one(model, key):
    return sg.sample_ode(key, SDE, model, (2,), "heun", num_steps=8)
