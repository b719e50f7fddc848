r"""The augmented probability-flow ODE of the likelihood: the state $x$ and the
running integral of the divergence $\nabla\cdot\tilde f$, for one example or a whole
batch at once, solved by sdegen's engine; and its statistics.
"""

import math
from collections.abc import Iterator
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, Int

from .._engine._integrate import (
    RESULTS,
    _ReprValues,
    adaptive_solve,
    fixed_solve,
    per_sample_rms_norm,
    rms_norm,
)
from .._processes._terms import ScoreDrift


class LikelihoodStats(_ReprValues):
    r"""Diagnostics of one likelihood solve (batched along a leading axis when the
    call is vmapped or batched). Read fields as attributes or as `stats["nfe"]`.

    - `nfe`: evaluations of the augmented vector field (each is one call of the
      drift and one divergence: $D$ JVPs for the exact trace, `num_probes` JVPs for
      Hutchinson), counted from the solver's step and the number of steps (accepted
      and rejected).
    - `num_steps`, `num_accepted_steps`, `num_rejected_steps`: as diffrax counts them.
    - `prior_logp`: $\log p_T(x(T))$ under the prior.
    - `delta_logp`: $\int_\varepsilon^T \nabla\cdot\tilde f\,\mathrm{d}t$.
    - `z`: the latent $x(T)$.
    - `result`: a [`sdegen.RESULTS`][] code (`RESULTS.successful` when all went well).
    - `num_probes`: Hutchinson probes per evaluation (0 for the exact trace).
    """

    nfe: Int[Array, "*batch"]
    num_steps: Int[Array, "*batch"]
    num_accepted_steps: Int[Array, "*batch"]
    num_rejected_steps: Int[Array, "*batch"]
    prior_logp: Float[Array, "*batch"]
    delta_logp: Float[Array, "*batch"]
    z: Array
    result: RESULTS
    num_probes: int = eqx.field(static=True, default=0)

    def keys(self) -> tuple[str, ...]:
        return tuple(self.__dataclass_fields__)

    def __getitem__(self, name: str) -> Any:
        if name not in self.keys():
            raise KeyError(name)
        return getattr(self, name)

    def __contains__(self, name: object) -> bool:
        return name in self.keys()

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())


# ---------------------------------------------------------------- augmented fields


def _basis(x):
    d = x.size
    return jnp.eye(d, dtype=x.dtype).reshape((d,) + x.shape)


class _Augmented(eqx.Module):
    r"""$(\dot x, \dot\ell) = (\tilde f(x, t), \nabla\cdot\tilde f(x, t))$ for one
    example. `args` is `(score_args, probes)` (probes `None` for the exact trace)."""

    drift: ScoreDrift
    trace: str = eqx.field(static=True)

    def __call__(self, t, y, args):
        x, _ = y
        score_args, probes = args
        probes = _basis(x) if self.trace == "exact" else probes
        jvp = lambda v: jax.jvp(lambda x_: self.drift(t, x_, score_args), (x,), (v,))
        fx, jvs = jax.vmap(jvp, out_axes=(None, 0))(probes)
        per = jnp.sum((probes * jvs).reshape(probes.shape[0], -1), -1)
        div = jnp.sum(per) if self.trace == "exact" else jnp.mean(per)
        return fx, div.astype(x.dtype)


class _BatchAugmented(eqx.Module):
    r"""The augmented field of a whole batch `(B, ...)` at once: the drift of every
    example in one call, and one JVP of that batched drift per probe (probes of shape
    `(m, B, ...)`) — not a vmap of per-example JVPs."""

    drift: ScoreDrift
    trace: str = eqx.field(static=True)

    def __call__(self, t, y, args):
        xs, _ = y
        score_args, probes = args
        if self.trace == "exact":
            probes = jax.vmap(_basis, out_axes=1)(xs)
        batched = lambda x_: jax.vmap(lambda x1: self.drift(t, x1, score_args))(x_)
        jvp = lambda v: jax.jvp(batched, (xs,), (v,))
        fx, jvs = jax.vmap(jvp, out_axes=(None, 0))(probes)
        per = jnp.sum((probes * jvs).reshape(probes.shape[:2] + (-1,)), -1)
        div = jnp.sum(per, 0) if self.trace == "exact" else jnp.mean(per, 0)
        return fx, div.astype(xs.dtype)


def _draw_probes(key, x, num_probes: int, probe: str):
    shape = (num_probes,) + x.shape
    if probe == "rademacher":
        return jr.rademacher(key, shape, dtype=x.dtype)
    if probe == "gaussian":
        return jr.normal(key, shape, dtype=x.dtype)
    # "orthogonal": the first m columns of a Haar-random orthogonal matrix, scaled by
    # sqrt(D) so that E[v v^T] = I; m = D gives the exact trace.
    d = x.size
    g = jr.normal(key, (d, num_probes), dtype=x.dtype)
    q, r = jnp.linalg.qr(g)
    q = q * jnp.sign(jnp.diagonal(r))[None, :]
    return (math.sqrt(d) * q.T).reshape(shape)


@eqx.filter_jit
def _solve(sde, score, x, probes, eps, solver, rtol, atol, dt0, num_steps, adjoint,
           max_steps, trace, prior_logp, batched, args):  # fmt: skip
    drift = ScoreDrift(sde, score, 0.5)
    field = (_BatchAugmented if batched else _Augmented)(drift, trace)
    term = diffrax.ODETerm(field)
    delta0 = jnp.zeros(x.shape[:1] if batched else (), x.dtype)
    y0 = (x, delta0)
    t0, t1 = jnp.asarray(eps, x.dtype), jnp.asarray(sde.T, x.dtype)
    if num_steps is not None:
        ts = jnp.linspace(t0, t1, num_steps + 1, dtype=x.dtype)
        (z, delta), _, st = fixed_solve(term, solver, ts, y0, args=(args, probes))
    else:
        norm = per_sample_rms_norm if batched else rms_norm
        (z, delta), _, st = adaptive_solve(term, solver, t0, t1, y0, rtol=rtol,
                                           atol=atol, dt0=dt0, args=(args, probes),
                                           max_steps=max_steps, adjoint=adjoint,
                                           norm=norm)  # fmt: skip
    prior_fn = sde.prior_logp if prior_logp is None else prior_logp
    prior = jax.vmap(prior_fn)(z) if batched else prior_fn(z)
    prior = jnp.asarray(prior).astype(x.dtype)
    if batched:
        # the shared solve's counters and result code, repeated for every example
        b = (x.shape[0],)
        st = jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, b), st)
    n_probes = 0 if probes is None else probes.shape[0]
    stats = LikelihoodStats(st.nfe, st.num_steps, st.num_accepted_steps,
                            st.num_rejected_steps, prior, delta, z, st.result,
                            n_probes)  # fmt: skip
    return prior + delta, stats, st
