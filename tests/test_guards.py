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
