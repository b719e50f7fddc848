r"""Sampling by the reverse-time SDE and the probability-flow ODE, and the ODE as an
invertible map (`encode` / `decode`): thin entry points over the one engine
(`_solve.py`).

One call draws one sample; `jax.vmap` over keys for a batch (or
[`sdegen.sample_many`][] for chunked, sharded batches). Noise comes from the key and
the step index alone, so the same key gives the same sample whatever the batch size.
"""

from collections.abc import Callable
from typing import Any

import diffrax
import jax.numpy as jnp
import jax.random as jr

from ._checks import (
    check_eps,
    check_grid,
    check_int,
    check_score,
    check_sde,
    check_shape_arg,
    check_tols,
    check_x,
    describe,
)
from ._custom_types import DataLike, KeyArray, RealScalarLike
from ._grids import resolve_grid
from ._integrate import SolveStats
from ._sde import AbstractSDE
from ._solve import finish, solve_reverse, tweedie
from ._solver_table import solver as get_solver


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


def start(key: KeyArray, sde: AbstractSDE, shape: Any, x_init: Any) -> tuple[Any, Any]:
    """`(x_init, noise_key)`: the prior draw from `split(key)[0]` unless `x_init` is
    given (then checked: shape and finite), and the key of the noise."""
    k_prior, k_noise = jr.split(key)
    if x_init is None:
        return sde.prior_sample(k_prior, shape), k_noise
    return check_x(x_init, shape, "x_init"), k_noise


# ---------------------------------------------------------------- SDE sampling


def sample_sde(
    key: KeyArray,
    sde: AbstractSDE,
    score: Callable,
    shape: tuple[int, ...],
    solver: str | diffrax.AbstractSolver = "euler_maruyama",
    *,
    num_steps: int = 1000,
    eps: RealScalarLike = 1e-3,
    grid: str = "uniform",
    ts: Any = None,
    x_init: DataLike | None = None,
    args: Any = None,
    rtol: float | None = None,
    atol: float | None = None,
    brownian_tol: float | None = None,
    max_steps: int = 16**4,
    denoise: bool = False,
    return_trajectory: bool = False,
    return_stats: bool = False,
    throw: bool = True,
) -> Any:
    r"""Draw one sample by solving the reverse-time SDE
    $\mathrm{d}x = [f(t)x - g(t)^2 s(t, x)]\,\mathrm{d}t + g(t)\,\mathrm{d}\bar W$
    from $x_T \sim p_T$ (the prior) down to $t = \varepsilon$.

    Any SDE solver of [`sdegen.SOLVERS`][] works: diffrax's (Euler–Maruyama, Heun,
    SRK methods, ...) and sdegen's (`"ancestral"`, `"dpmpp_2m_sde"`, `"edm_sde"`, ...).
    Internally the SDE is written in $u = -t$ and integrated forwards (see
    [`sdegen.reverse_terms`][]), which is correct for every diffrax solver; the noise
    of step $i$ is drawn from `fold_in(key, i)`.

    **Arguments:**

    - `key`: a JAX PRNG key; it fixes both the prior draw and the Brownian motion.
    - `sde`: the forward SDE, e.g. [`sdegen.VPSDE`][].
    - `score`: `score(t, x)` for one example of shape `shape`.
    - `shape`: the shape of one sample.
    - `solver`: a name from [`sdegen.SOLVERS`][] (SDE-capable) or a solver instance.
    - `num_steps`: the number of steps from $T$ to `eps` (the initial step count of
      an adaptive solve).
    - `eps`: the final time $\varepsilon \in (0, T)$.
    - `grid`: `"uniform"`, `"logsnr"` or `"karras"` (see [`sdegen.time_grid`][]).
    - `ts`: a custom strictly decreasing time grid in $(0, T]$ (overrides
      `num_steps`, `grid` and `eps`).
    - `x_init`: the prior draw to start from (shape `shape`); by default drawn from
      `split(key)[0]`, so passing that same draw reproduces the default run.
    - `args`: passed to the score as `score(t, x, **args)` (a dict, e.g.
      `{"label": 3}`) or `score(t, x, args)`.
    - `rtol`, `atol`: set either for adaptive stepping with a PID controller (needs a
      solver with an error estimate; the Brownian motion is then a
      `diffrax.VirtualBrownianTree` with tolerance `brownian_tol`).
    - `max_steps`: cap on adaptive steps.
    - `denoise`: finish with Tweedie's denoiser $(x + \sigma^2 s(\varepsilon, x)) /
      \alpha(\varepsilon)$.
    - `return_trajectory`: also return the states on the time grid (`num_steps + 1`
      states from $T$ to $\varepsilon$).
    - `return_stats`: also return a [`sdegen.SolveStats`][] (evaluations, steps,
      result code).
    - `throw`: raise if the solve fails (non-finite state, step limit); with
      `throw=False` read `stats.result` instead.

    **Returns:** the sample (shape `shape`), then the trajectory and the statistics
    if asked for.

    **Raises:** `ValueError` for an unknown or ODE-only solver name, a bad `shape`,
    `eps` outside $(0, T)$, a wrongly shaped or non-finite `x_init`, a bad grid, or a
    score whose output does not have the state's shape; an error naming the sampler
    and the time if the state becomes non-finite.
    """
    check_sde(sde)
    check_score(score)
    shape = check_shape_arg("shape", shape)
    num_steps = check_int("num_steps", num_steps)
    where = describe("sample_sde", solver)
    solver = get_solver(solver, kind="sde")
    x_init, k_noise = start(key, sde, shape, x_init)
    if ts is None:
        check_eps(sde, eps)
    adaptive = rtol is not None or atol is not None
    if not adaptive:
        grid_ts = resolve_grid(sde, num_steps=num_steps, grid=grid, ts=ts, eps=eps,
                               dtype=x_init.dtype)  # fmt: skip
        x, traj, stats = solve_reverse(k_noise, sde, score, x_init, solver,
                                       stochastic=True, ts=grid_ts, args=args,
                                       save=return_trajectory)  # fmt: skip
        t_end = grid_ts[-1]
    else:
        if not is_adaptive(solver):
            raise ValueError(
                f"`solver` {where} has no error estimate, so it cannot step adaptively "
                "(rtol/atol given). Use e.g. 'heun', 'shark', 'spark' or 'sra1'."
            )
        rtol = 1e-3 if rtol is None else rtol
        atol = 1e-3 if atol is None else atol
        check_tols(rtol, atol)
        save_ts = None
        if ts is not None:
            save_ts = check_grid(sde, ts, decreasing=True).astype(x_init.dtype)
            t_end = save_ts[-1]
        else:
            t_end = jnp.asarray(eps, x_init.dtype)
            if return_trajectory:
                save_ts = resolve_grid(sde, num_steps=num_steps, grid=grid, ts=None,
                                       eps=eps, dtype=x_init.dtype)  # fmt: skip
        dt0 = (sde.T - t_end) / num_steps
        tol = dt0 / 8 if brownian_tol is None else brownian_tol
        x, traj, stats = solve_reverse(
            k_noise, sde, score, x_init, solver, stochastic=True,
            t_span=(sde.T, t_end), rtol=rtol, atol=atol, dt0=dt0, save_ts=save_ts,
            args=args, max_steps=max_steps, tree_tol=tol,
        )  # fmt: skip
    x = finish(x, stats, where, throw)
    if denoise:
        x = tweedie(sde, score, t_end, x, args)
    return outputs(x, traj, stats, return_trajectory, return_stats)


# ---------------------------------------------------------------- ODE map


def _ode(where, sde, score, y0, *, solver, forward, rtol, atol, eps, num_steps, grid, ts,
         args, save, max_steps, adjoint):  # fmt: skip
    """The probability-flow ODE from T down to eps (`forward=False`) or from eps up to
    T: fixed steps for `num_steps`/`ts` with a solver without error estimate, else
    adaptive."""
    solver = get_solver(solver, kind="ode")
    adaptive = is_adaptive(solver) and num_steps is None
    if ts is not None:
        ts = check_grid(sde, ts, decreasing=not forward, name="ts")
    else:
        check_eps(sde, eps)
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
        return x, traj, stats, ts[-1]
    check_tols(rtol, atol)
    t_lo = eps if ts is None else (ts[0] if forward else ts[-1])
    span = (t_lo, sde.T) if forward else (sde.T, t_lo)
    save_ts = ts
    if save and save_ts is None:
        save_ts = jnp.linspace(span[0], span[1], 101, dtype=y0.dtype)
    x, traj, stats = solve_reverse(None, sde, score, y0, solver, stochastic=False,
                                   t_span=span, rtol=rtol, atol=atol, save_ts=save_ts,
                                   args=args, max_steps=max_steps, adjoint=adjoint)  # fmt: skip
    return x, traj, stats, jnp.asarray(span[1], y0.dtype)


def encode(
    sde: AbstractSDE,
    score: Callable,
    x0: DataLike,
    solver: str | diffrax.AbstractSolver = "tsit5",
    *,
    rtol: float = 1e-5,
    atol: float = 1e-5,
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
    check_sde(sde)
    check_score(score)
    x0 = check_x(x0, None, "x0")
    where = describe("encode", solver)
    x, traj, stats, _ = _ode(where, sde, score, x0, solver=solver, forward=True,
                             rtol=rtol, atol=atol, eps=eps, num_steps=num_steps,
                             grid=grid, ts=ts, args=args, save=return_trajectory,
                             max_steps=max_steps, adjoint=adjoint)  # fmt: skip
    x = finish(x, stats, where, throw)
    return outputs(x, traj, stats, return_trajectory, return_stats)


def decode(
    sde: AbstractSDE,
    score: Callable,
    z: DataLike,
    solver: str | diffrax.AbstractSolver = "tsit5",
    *,
    rtol: float = 1e-5,
    atol: float = 1e-5,
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
    check_sde(sde)
    check_score(score)
    z = check_x(z, None, "z")
    where = describe("decode", solver)
    x, traj, stats, _ = _ode(where, sde, score, z, solver=solver, forward=False,
                             rtol=rtol, atol=atol, eps=eps, num_steps=num_steps,
                             grid=grid, ts=ts, args=args, save=return_trajectory,
                             max_steps=max_steps, adjoint=adjoint)  # fmt: skip
    x = finish(x, stats, where, throw)
    return outputs(x, traj, stats, return_trajectory, return_stats)


def sample_ode(
    key: KeyArray,
    sde: AbstractSDE,
    score: Callable,
    shape: tuple[int, ...],
    solver: str | diffrax.AbstractSolver = "tsit5",
    *,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    eps: RealScalarLike = 1e-3,
    num_steps: int | None = None,
    grid: str = "uniform",
    ts: Any = None,
    x_init: DataLike | None = None,
    args: Any = None,
    max_steps: int = 16**4,
    denoise: bool = False,
    return_trajectory: bool = False,
    return_stats: bool = False,
    throw: bool = True,
) -> Any:
    r"""Draw one sample by solving the probability-flow ODE
    $\dot x = f(t)x - \tfrac12 g(t)^2 s(t, x)$ from $x_T \sim p_T$ down to
    $t = \varepsilon$ (Song et al. 2021, §4.3). Deterministic given the prior draw.

    Adaptive (diffrax's PID controller) by default; fixed steps with `num_steps` (on
    the grid `grid`) or `ts`, which any ODE solver of [`sdegen.SOLVERS`][] takes —
    diffrax's Runge–Kutta methods and sdegen's exponential integrators (`"ddim"`,
    `"dpmpp_2m"`, `"dpm_solver_2"`, `"dpm_solver_3"`, `"edm"`).

    **Arguments:**

    - `key`: PRNG key for the prior draw (`split(key)[0]`, as in `sample_sde`).
    - `sde`, `score`, `shape`: as in [`sdegen.sample_sde`][].
    - `solver`: an ODE-capable name from [`sdegen.SOLVERS`][] or a solver instance.
    - `rtol`, `atol`: tolerances of the adaptive solve.
    - `eps`: final time in $(0, T)$.
    - `num_steps`: fixed steps instead of adaptive ones.
    - `grid`: `"uniform"`, `"logsnr"` or `"karras"`, the grid of the fixed steps.
    - `ts`: a strictly decreasing custom grid in $(0, T]$ (fixed steps for a solver
      without error estimate; otherwise the save times of an adaptive solve).
    - `x_init`: the prior draw to start from.
    - `args`: passed to the score (see [`sdegen.sample_sde`][]).
    - `max_steps`: cap on adaptive steps.
    - `denoise`: finish with Tweedie's denoiser.
    - `return_trajectory`: also return the states on the grid (101 uniform save
      times for an adaptive solve without `ts`).
    - `return_stats`, `throw`: as in [`sdegen.sample_sde`][].

    **Returns:** the sample, then the trajectory and statistics if asked for.
    """
    check_sde(sde)
    check_score(score)
    shape = check_shape_arg("shape", shape)
    where = describe("sample_ode", solver)
    x_init, _ = start(key, sde, shape, x_init)
    x, traj, stats, t_end = _ode(where, sde, score, x_init, solver=solver, forward=False,
                                 rtol=rtol, atol=atol, eps=eps, num_steps=num_steps,
                                 grid=grid, ts=ts, args=args, save=return_trajectory,
                                 max_steps=max_steps, adjoint=None)  # fmt: skip
    x = finish(x, stats, where, throw)
    if denoise:
        x = tweedie(sde, score, t_end, x, args)
    return outputs(x, traj, stats, return_trajectory, return_stats)
