"""Adaptive solves under vmap and jit: every sample keeps its own error control.

The cause of the differences between a single adaptive solve and the same sample in a
vmapped (or jit-compiled vmapped) solve is floating-point rounding: a batched network
rounds its matrix products differently, and the step-size controller's accept/reject
decision is discontinuous in the error estimate, so a flipped decision sends the two
solves along different step sequences. Both then stay within the tolerance of the exact
solution, so the bound on their difference is the solver's own global error. The tests
run in float32 (where the decisions do flip) and compare every sample with a
tight-tolerance float64 reference of the same ODE.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

import sdegen as sg


SDE = sg.VPSDE()
RTOL = 1e-4


class _Net(eqx.Module):
    mlp: eqx.nn.MLP

    def __call__(self, t, x):
        inp = jnp.concatenate([x, jnp.reshape(t, (1,)).astype(x.dtype)])
        return self.mlp(inp).astype(x.dtype)


def _score(dtype):
    mlp = eqx.nn.MLP(5, 4, 32, 2, activation=jax.nn.tanh, key=jr.key(0))
    # the same weights in both precisions
    net = jax.tree_util.tree_map(lambda a: a.astype(dtype) if eqx.is_array(a) else a,
                                 _Net(mlp))  # fmt: skip
    # a score with the shape of a trained one: -x/var plus a learned correction
    return lambda t, x: 0.2 * net(t, x) - x / (SDE.alpha(t) ** 2 * 0.25 + SDE.sigma(t) ** 2)


def test_vmap_and_jit_stay_within_the_tolerance_of_the_exact_flow():
    keys = jr.split(jr.key(1), 16)
    x_T = jax.vmap(lambda k: jr.normal(k, (4,), jnp.float32))(keys)
    s32, s64 = _score(jnp.float32), _score(jnp.float64)
    run = lambda x: sg.sample_ode(jr.key(0), SDE, s32, (4,), rtol=RTOL, atol=RTOL,
                                  x_init=x)  # fmt: skip
    single = np.stack([np.asarray(run(x)) for x in x_T[:4]])
    vmapped = np.asarray(jax.vmap(run)(x_T))
    jitted = np.asarray(jax.jit(jax.vmap(run))(x_T))
    batched = np.asarray(sg.sample_ode_batch(keys, SDE, s32, (4,), rtol=RTOL, atol=RTOL,
                                             x_init=x_T))  # fmt: skip
    ref = np.asarray(jax.vmap(lambda x: sg.sample_ode(
        jr.key(0), SDE, s64, (4,), rtol=1e-10, atol=1e-10, x_init=x.astype(jnp.float64)))(
        x_T))  # fmt: skip
    assert single.dtype == vmapped.dtype == np.float32
    # every mode within a small multiple of the tolerance of the exact flow, per sample
    bound = 30 * RTOL * (1 + np.abs(ref))
    for got in (vmapped, jitted, batched):
        assert np.all(np.abs(got - ref) <= bound), np.max(np.abs(got - ref) / bound)
    assert np.all(np.abs(single - ref[:4]) <= bound[:4])
    # hence single and vmapped solves differ by at most twice that
    assert np.all(np.abs(single - vmapped[:4]) <= 2 * bound[:4])
