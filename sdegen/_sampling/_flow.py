r"""The probability-flow ODE as an invertible map between data and latents
(`encode` / `decode`), and the ODE solve that [`sdegen.sample_ode`][] shares with them:
fixed steps on a grid, or adaptive.
"""

from collections.abc import Callable
from typing import Any

import diffrax
import jax.numpy as jnp
import numpy as np

from .._core._checks import (
    check_eps,
    check_grid,
    check_int,
    check_score,
    check_tols,
    check_x_deferred,
    describe,
)
from .._core._custom_types import DataLike, RealScalarLike
from .._core._misc import is_concrete
from .._engine._grids import resolve_grid
from .._engine._solve import finish, is_adaptive, outputs, solve_reverse
from .._engine._solver_table import solver as get_solver
from .._processes._sde import AbstractSDE, check_sde


def solve_flow(where, sde, score, y0, *, solver, forward, rtol, atol, eps, num_steps,
               grid, ts, args, save, max_steps, adjoint):  # fmt: skip
    """The probability-flow ODE from T down to eps (`forward=False`) or from eps up to
    T: fixed steps for `num_steps`/`ts` with a solver without error estimate, else
    adaptive."""
    solver = get_solver(solver, kind="ode")
    adaptive = is_adaptive(solver) and num_steps is None
    if ts is not None:
        ts = check_grid(sde, ts, decreasing=not forward, name="ts")
    else:
        eps = check_eps(sde, eps)
    if not adaptive:
        if ts is None:
            if num_steps is None:
                raise ValueError(
                    f"`solver` {where} has no error estimate; give `num_steps` (or `ts`) "
                    "for fixed steps, or choose an adaptive solver such as 'tsit5'."
                )
            num_steps = check_int("num_steps", num_steps)
            ts = resolve_grid(sde, num_steps=num_steps, grid=grid, ts=None, eps=eps,
                              dtype=y0.dtype)  # fmt: skip
            if forward:
                ts = ts[::-1]
        x, traj, stats = solve_reverse(None, sde, score, y0, solver, stochastic=False,
                                       ts=ts.astype(y0.dtype), args=args, save=save)  # fmt: skip
        # the last time, read on the host when concrete (eager indexing compiles)
        t_end = jnp.asarray(np.asarray(ts)[-1], y0.dtype) if is_concrete(ts) else ts[-1]
        return x, traj, stats, t_end
    rtol, atol = check_tols(rtol, atol)
    t_lo = eps if ts is None else (ts[0] if forward else ts[-1])
    span = (t_lo, sde.T) if forward else (sde.T, t_lo)
    save_ts = ts
    if save and save_ts is None:
        save_ts = jnp.linspace(span[0], span[1], 101, dtype=y0.dtype)
    x, traj, stats = solve_reverse(None, sde, score, y0, solver, stochastic=False,
                                   t_span=span, rtol=rtol, atol=atol, save_ts=save_ts,
                                   args=args, max_steps=max_steps, adjoint=adjoint)  # fmt: skip
    return x, traj, stats, jnp.asarray(span[1], y0.dtype)


def _flow_map(fn_name, input_name, sde, score, y, *, forward, solver, return_trajectory,
              return_stats, throw, **options):  # fmt: skip
    """The body of `encode` / `decode`: check, solve the flow, one error check."""
    check_sde(sde)
    check_score(score)
    y, bad = check_x_deferred(y, None, input_name)
    where = describe(fn_name, solver)
    x, traj, stats, _ = solve_flow(where, sde, score, y, solver=solver, forward=forward,
                                   save=return_trajectory, **options)  # fmt: skip
    x = finish(x, stats, where, throw, bad_input=bad, input_name=input_name)
    return outputs(x, traj, stats, return_trajectory, return_stats)


def encode(
    sde: AbstractSDE,
    score: Callable,
    x0: DataLike,
    solver: str | diffrax.AbstractSolver = "tsit5",
    *,
    rtol: RealScalarLike = 1e-5,
    atol: RealScalarLike = 1e-5,
    eps: RealScalarLike = 1e-3,
    num_steps: int | None = None,
    grid: str = "uniform",
    ts: Any = None,
    args: Any = None,
    max_steps: int = 16**4,
    adjoint: diffrax.AbstractAdjoint | None = None,
    return_trajectory: bool = False,
    return_stats: bool = False,
    throw: bool = True,
) -> Any:
    r"""Map data to its latent code $z = x(T)$ by solving the probability-flow ODE
    $\dot x = f(t)x - \tfrac12 g(t)^2 s(t, x)$ forwards from $x(\varepsilon) = x_0$.
    The inverse of [`sdegen.decode`][] up to solver tolerance.

    **Arguments:** as [`sdegen.sample_ode`][]; `x0` is one example; `num_steps` (or a
    strictly increasing grid `ts`) selects fixed steps (the grid of `grid`, reversed),
    otherwise the solve is adaptive with `rtol`/`atol`; `adjoint` is passed to
    `diffrax.diffeqsolve` for gradients.

    **Returns:** the latent $z$ (shape of `x0`), then the trajectory and statistics if
    asked for.
    """
    return _flow_map("encode", "x0", sde, score, x0, forward=True, solver=solver,
                     rtol=rtol, atol=atol, eps=eps, num_steps=num_steps, grid=grid,
                     ts=ts, args=args, max_steps=max_steps, adjoint=adjoint,
                     return_trajectory=return_trajectory, return_stats=return_stats,
                     throw=throw)  # fmt: skip


def decode(
    sde: AbstractSDE,
    score: Callable,
    z: DataLike,
    solver: str | diffrax.AbstractSolver = "tsit5",
    *,
    rtol: RealScalarLike = 1e-5,
    atol: RealScalarLike = 1e-5,
    eps: RealScalarLike = 1e-3,
    num_steps: int | None = None,
    grid: str = "uniform",
    ts: Any = None,
    args: Any = None,
    max_steps: int = 16**4,
    adjoint: diffrax.AbstractAdjoint | None = None,
    return_trajectory: bool = False,
    return_stats: bool = False,
    throw: bool = True,
) -> Any:
    r"""Map a latent $z = x(T)$ back to data by solving the probability-flow ODE
    backwards from $T$ to $\varepsilon$. The inverse of [`sdegen.encode`][].

    **Arguments:** as [`sdegen.sample_ode`][], with the latent `z` in place of a key and
    a shape.

    **Returns:** $x(\varepsilon)$ (shape of `z`), then the trajectory and statistics if
    asked for.
    """
    return _flow_map("decode", "z", sde, score, z, forward=False, solver=solver,
                     rtol=rtol, atol=atol, eps=eps, num_steps=num_steps, grid=grid,
                     ts=ts, args=args, max_steps=max_steps, adjoint=adjoint,
                     return_trajectory=return_trajectory, return_stats=return_stats,
                     throw=throw)  # fmt: skip
