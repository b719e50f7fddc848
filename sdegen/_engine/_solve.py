r"""The reverse process as one engine call: build the terms (the probability-flow ODE,
or the reverse SDE with its Brownian path) for a solver, run the fixed-step or adaptive
engine of `_integrate.py`, and turn a failed solve into a clear error.

Every sampler entry point (`sample_sde`, `sample_ode`, `pc_sample`, `ddim_sample`,
`ddpm_sample`, `annealed_langevin`, `inpaint`, ...) is a thin layer over
[`solve_reverse`][]: it resolves names, builds the grid and the starting point, and
calls it; so grids, noise, checks, statistics and jit/vmap invariance are the same for
all of them.

Time conventions: the probability-flow ODE is integrated in the SDE's own time $t$,
downwards; the reverse SDE in $u = -t$, upwards (diffrax's stochastic Runge–Kutta
methods need increasing time, and $t = -u$ is exact in floating point). Noise for step
$i$ comes from `fold_in(key, i)` ([`sdegen.GridBrownianPath`][]) for fixed steps, and
from a `diffrax.VirtualBrownianTree` for adaptive ones.
"""

from collections.abc import Callable
from typing import Any

import diffrax
import jax.lax as lax
import jax.numpy as jnp
import jax.random as jr

from .._core._checks import check_x_deferred, failure_index, raise_failure
from .._core._custom_types import KeyArray
from .._core._misc import jit_when_eager, shape_dtype
from .._processes._sde import AbstractSDE
from .._processes._terms import probability_flow_term, reverse_terms
from ._brownian import GridBrownianPath
from ._integrate import (
    RESULTS,
    SolveStats,
    adaptive_solve,
    fixed_solve,
    grid_is_valid,
    levy_area_for,
    rms_norm,
)
from ._solvers import on_grid
from ._solvers._base import check_min_steps


def _negate(u):
    return -u


def _identity(u):
    return u


def _terms(sde, score, x, solver, stochastic, grid_u, key, tree_tol, t_span,
           noise_scale=1.0):  # fmt: skip
    if not stochastic:
        return probability_flow_term(sde, score), _identity
    shape = shape_dtype(x)
    levy = levy_area_for(solver)
    if grid_u is not None:
        path = GridBrownianPath(grid_u, shape, key, levy)
    else:
        path = diffrax.VirtualBrownianTree(t_span[0], t_span[1], tol=tree_tol,
                                           shape=shape, key=key, levy_area=levy)  # fmt: skip
    terms = reverse_terms(sde, score, path, reversed_time="-u", noise_scale=noise_scale)
    return terms, _negate


@jit_when_eager
def _fixed(key, sde, score, x_init, ts, solver, stochastic, args, save, noise_scale=1.0):
    # The grid is checked here, and then used as an opaque runtime value even where it
    # is a constant of the program (a grid made under `jit`): XLA would otherwise
    # compute the steps' coefficients and the Brownian increments with other
    # rounding than eagerly, and samples must not depend on `jit`.
    valid = grid_is_valid(ts)
    ts = lax.optimization_barrier(ts)
    grid = -ts if stochastic else ts
    terms, time_of = _terms(sde, score, x_init, solver, stochastic, grid, key, None, None,
                            noise_scale)  # fmt: skip
    solver = on_grid(solver, ts.shape[0] - 1)
    return fixed_solve(terms, solver, grid, x_init, args=args, save_trajectory=save,
                       time_of=time_of, valid_grid=valid)  # fmt: skip


@jit_when_eager
def _adaptive(key, sde, score, x_init, t0, t1, solver, stochastic, args, rtol, atol,
              dt0, save_ts, max_steps, adjoint, norm, tree_tol,
              noise_scale=1.0):  # fmt: skip
    if stochastic:
        span = (-t0, -t1)
        terms, time_of = _terms(sde, score, x_init, solver, True, None, key, tree_tol,
                                span, noise_scale)  # fmt: skip
        save = None if save_ts is None else -save_ts
        dt = None if dt0 is None else jnp.abs(dt0)
    else:
        span = (t0, t1)
        terms, time_of = _terms(sde, score, x_init, solver, False, None, key, None, None)
        save, dt = save_ts, None if dt0 is None else -jnp.abs(dt0)
    return adaptive_solve(terms, solver, span[0], span[1], x_init, rtol=rtol, atol=atol,
                          dt0=dt, args=args, save_ts=save, max_steps=max_steps,
                          adjoint=adjoint, norm=norm, time_of=time_of)  # fmt: skip


def solve_reverse(
    key: Any,
    sde: AbstractSDE,
    score: Callable,
    x_init: Any,
    solver: diffrax.AbstractSolver,
    *,
    stochastic: bool,
    ts: Any = None,
    t_span: tuple[Any, Any] | None = None,
    rtol: Any = None,
    atol: Any = None,
    dt0: Any = None,
    save_ts: Any = None,
    args: Any = None,
    save: bool = False,
    max_steps: int = 16**4,
    adjoint: Any = None,
    norm: Callable = rms_norm,
    tree_tol: Any = None,
    noise_scale: float = 1.0,
) -> tuple[Any, Any, SolveStats]:
    r"""Run `solver` on the reverse process from `x_init`: on the fixed decreasing grid
    `ts` (in the SDE's time), or adaptively from `t_span[0]` down to `t_span[1]` with
    `rtol`/`atol` (saving at `save_ts`). `stochastic` selects the reverse SDE (with a
    Brownian path from `key`) over the probability-flow ODE; `noise_scale` $\eta$
    picks the member of the reverse-SDE family (see [`sdegen.reverse_terms`][]).

    **Returns:** `(x, trajectory_or_None, stats)`.
    """
    if ts is not None:
        check_min_steps(solver, ts.shape[0] - 1)
        return _fixed(key, sde, score, x_init, ts, solver, stochastic, args, save,
                      noise_scale)  # fmt: skip
    t0, t1 = (jnp.asarray(v, x_init.dtype) for v in t_span)
    rtol, atol = jnp.asarray(rtol, x_init.dtype), jnp.asarray(atol, x_init.dtype)
    return _adaptive(key, sde, score, x_init, t0, t1, solver, stochastic, args, rtol,
                     atol, dt0, save_ts, max_steps, adjoint, norm, tree_tol,
                     noise_scale)  # fmt: skip


def finish(x: Any, stats: SolveStats, where: str, throw: bool, *,
           bad_input: Any = False, input_name: str = "x") -> Any:  # fmt: skip
    """`x`, with one error check (when `throw`): a non-finite input (`bad_input`), an
    invalid time grid, a state that became non-finite (naming `where` and the time)
    or the step limit of an adaptive solve."""
    if not throw:
        return x
    failed, index = _failure(stats.result, stats.t_failed, bad_input)
    return raise_failure(x, failed, index, where=where, input_name=input_name)


@jit_when_eager
def _failure(result, t_failed, bad_input):
    # One compiled program: eagerly (or under an eager `vmap`), op-by-op dispatch
    # would compile a dozen one-operation programs for every new shape.
    nonfinite = result == RESULTS.nonfinite_state
    bad_grid = result == RESULTS.invalid_grid
    step_limit = (result != RESULTS.successful) & ~nonfinite & ~bad_grid
    return failure_index(nonfinite, t_failed, step_limit, bad_input, bad_grid)


def tweedie(sde: AbstractSDE, score: Callable, t: Any, x: Any, args: Any = None) -> Any:
    r"""Tweedie's denoiser $\mathbb{E}[x_0 \mid x_t] = (x_t + \sigma(t)^2\nabla\log
    p_t(x_t)) / \alpha(t)$."""
    return _tweedie(sde, score, jnp.asarray(t, x.dtype), x, args)


@jit_when_eager
def _tweedie(sde, score, t, x, args):
    # Compiled: eagerly (or under an eager `vmap`) one program, not one per operation.
    from .._processes._terms import ScoreDrift

    return ScoreDrift(sde, score, 1.0).denoise(t, x, args)


# ---------------------------------------------------------------- entry-point helpers


def is_adaptive(solver: diffrax.AbstractSolver) -> bool:
    """Whether a solver has an embedded error estimate (for a PID controller)."""
    if isinstance(solver, diffrax.AbstractSRK):
        return solver.tableau.b_error is not None
    return isinstance(solver, diffrax.AbstractAdaptiveSolver)


def outputs(x: Any, traj: Any, stats: SolveStats, return_trajectory: bool,
            return_stats: bool) -> Any:  # fmt: skip
    """`x`, `(x, trajectory)`, `(x, stats)` or `(x, trajectory, stats)`."""
    out = (x,) + ((traj,) if return_trajectory else ()) + (
        (stats,) if return_stats else ()
    )
    return out[0] if len(out) == 1 else out


def start(key: KeyArray, sde: AbstractSDE, shape: Any, x_init: Any) -> tuple[Any, Any, Any]:
    """`(x_init, noise_key, bad_input)`: the prior draw from `split(key)[0]` unless
    `x_init` is given (then checked: its shape now, its finiteness now or, when traced,
    as the flag `bad_input` for `finish`), and the key of the noise."""
    if x_init is None:
        x_init, k_noise = _prior_draw(key, sde, tuple(shape))
        return x_init, k_noise, False
    x_init, bad = check_x_deferred(x_init, shape, "x_init")
    return x_init, _noise_key(key), bad


@jit_when_eager
def _prior_draw(key, sde, shape):
    # Compiled: eagerly (or under an eager `vmap`) one program, not one per operation.
    k_prior, k_noise = jr.split(key)
    return sde.prior_sample(k_prior, shape), k_noise


@jit_when_eager
def _noise_key(key):
    return jr.split(key)[1]
