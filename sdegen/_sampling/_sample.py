r"""Sampling by the reverse-time SDE and the probability-flow ODE, and the ODE as an
invertible map (`encode` / `decode`): thin entry points over the one engine
(`_engine/_solve.py`).

One call draws one sample; `jax.vmap` over keys for a batch (or
[`sdegen.sample_many`][] for chunked, sharded batches). Noise comes from the key and
the step index alone, so the same key gives the same sample whatever the batch size.
"""

from collections.abc import Callable
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Shaped

from .._core._checks import (
    check_eps,
    check_grid,
    check_int,
    check_score,
    check_shape_arg,
    check_tols,
    check_x_deferred,
    describe,
)
from .._core._custom_types import DataLike, KeyArray, RealScalarLike
from .._engine._grids import resolve_grid
from .._engine._integrate import per_sample_rms_norm
from .._engine._solve import finish, is_adaptive, outputs, solve_reverse, start, tweedie
from .._engine._solver_table import solver as get_solver
from .._engine._solvers import AbstractDiffusionSolver, DPMSolverPP2MSDE
from .._processes._sde import AbstractSDE, check_sde
from .._processes._terms import check_noise_scale
from ._flow import solve_flow


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
    rtol: RealScalarLike | None = None,
    atol: RealScalarLike | None = None,
    brownian_tol: float | None = None,
    max_steps: int = 16**4,
    denoise: bool = False,
    return_trajectory: bool = False,
    return_stats: bool = False,
    throw: bool = True,
    noise_scale: float = 1.0,
) -> Any:
    r"""Draw one sample by solving the reverse-time SDE
    $\mathrm{d}x = [f(t)x - g(t)^2 s(t, x)]\,\mathrm{d}t + g(t)\,\mathrm{d}\bar W$
    from $x_T \sim p_T$ (the prior) down to $t = \varepsilon$, or with `noise_scale`
    $\eta$ the family $\mathrm{d}x = [f x - \tfrac{1 + \eta^2}{2}g^2 s]\,\mathrm{d}t +
    \eta g\,\mathrm{d}\bar W$ with the same marginals ($\eta = 0$ the probability-flow
    ODE, $\eta = 1$ the reverse SDE, $\eta > 1$ more noise).

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
    - `eps`: the final time $\varepsilon \in (0, T)$ (default `1e-3`, above the
      losses' `1e-5`: see `eps` of [`sdegen.dsm_loss`][]).
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
    - `noise_scale`: $\eta \ge 0$, a Python float (default 1: the reverse SDE). Every
      diffrax solver takes it through the terms; `"dpmpp_2m_sde"` solves the same family
      exactly in $\lambda$ (its `eta` times $\eta^2$); `"ancestral"`, `"edm_sde"` and
      DDIM have their own noise parameter and raise for $\eta \ne 1$.

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
    noise_scale = check_noise_scale(noise_scale)
    if noise_scale != 1.0 and isinstance(solver, AbstractDiffusionSolver) and not (
        isinstance(solver, DPMSolverPP2MSDE)
    ):
        raise ValueError(
            f"`noise_scale` {noise_scale} is not supported by `solver` {where}, which has "
            "its own noise parameter (DDIM(eta), EDMSampler(s_churn)); use a diffrax "
            "solver (e.g. 'euler_maruyama', 'heun', 'sra1') or 'dpmpp_2m_sde'."
        )
    x_init, k_noise, bad = start(key, sde, shape, x_init)
    if ts is None:
        eps = check_eps(sde, eps)
    adaptive = rtol is not None or atol is not None
    if not adaptive:
        grid_ts = resolve_grid(sde, num_steps=num_steps, grid=grid, ts=ts, eps=eps,
                               dtype=x_init.dtype)  # fmt: skip
        x, traj, stats = solve_reverse(k_noise, sde, score, x_init, solver,
                                       stochastic=True, ts=grid_ts, args=args,
                                       save=return_trajectory,
                                       noise_scale=noise_scale)  # fmt: skip
        t_end = grid_ts[-1] if denoise else None  # (indexing eagerly compiles)
    else:
        if not is_adaptive(solver):
            raise ValueError(
                f"`solver` {where} has no error estimate, so it cannot step adaptively "
                "(rtol/atol given). Use e.g. 'heun', 'shark', 'spark' or 'sra1'."
            )
        rtol = 1e-3 if rtol is None else rtol
        atol = 1e-3 if atol is None else atol
        rtol, atol = check_tols(rtol, atol)
        save_ts = None
        if ts is not None:
            save_ts = check_grid(sde, ts, decreasing=True).astype(x_init.dtype)
            t_end = save_ts[-1]
        else:
            t_end = jnp.asarray(eps, x_init.dtype)
            if return_trajectory:
                save_ts = resolve_grid(sde, num_steps=num_steps, grid=grid, ts=None,
                                       eps=eps, dtype=x_init.dtype,
                                       checked=True)  # fmt: skip
        dt0 = (sde.T - t_end) / num_steps
        tol = dt0 / 8 if brownian_tol is None else brownian_tol
        x, traj, stats = solve_reverse(
            k_noise, sde, score, x_init, solver, stochastic=True,
            t_span=(sde.T, t_end), rtol=rtol, atol=atol, dt0=dt0, save_ts=save_ts,
            args=args, max_steps=max_steps, tree_tol=tol, noise_scale=noise_scale,
        )  # fmt: skip
    x = finish(x, stats, where, throw, bad_input=bad, input_name="x_init")
    if denoise:
        x = tweedie(sde, score, t_end, x, args)
    return outputs(x, traj, stats, return_trajectory, return_stats)


class BatchedScore(eqx.Module):
    """A score of one example applied to a batch `(B, *shape)` at one time (`jax.vmap`
    over the leading axis); diffrax `args` are shared by the batch."""

    score: Callable

    def __call__(self, t, xs, *args, **kwargs):
        return jax.vmap(lambda x: self.score(t, x, *args, **kwargs))(xs)


def sample_ode_batch(
    keys: Shaped[Array, "batch ..."],
    sde: AbstractSDE,
    score: Callable,
    shape: tuple[int, ...],
    solver: str | diffrax.AbstractSolver = "tsit5",
    *,
    rtol: RealScalarLike = 1e-5,
    atol: RealScalarLike = 1e-5,
    eps: RealScalarLike = 1e-3,
    x_init: Any = None,
    args: Any = None,
    max_steps: int = 16**4,
    denoise: bool = False,
    return_stats: bool = False,
    throw: bool = True,
) -> Any:
    r"""A batch of probability-flow ODE samples in ONE adaptive solve with shared steps
    (the throughput mode): the score is evaluated on the whole batch at once, and the
    error norm is the largest of the samples' own RMS norms, so every sample meets
    `rtol`/`atol` as it would in its own solve; the steps follow the hardest sample.

    `jax.vmap` of [`sdegen.sample_ode`][] instead gives every sample its own steps (a
    result independent of the batch); under `vmap` the loop still runs until the
    slowest sample is done, so the two cost about the same number of steps, and this
    mode saves the per-sample bookkeeping.

    **Arguments:** as [`sdegen.sample_ode`][], with `keys` a batch of keys (the prior
    draw of sample $i$ is `split(keys[i])[0]`, as in `sample_ode`) and `x_init` a batch
    `(B, *shape)`.

    **Returns:** the samples `(B, *shape)` (and the shared solve's statistics).
    """
    check_sde(sde)
    check_score(score)
    shape = check_shape_arg("shape", shape)
    where = describe("sample_ode_batch", solver)
    solver = get_solver(solver, kind="ode")
    if not is_adaptive(solver):
        raise ValueError(
            f"`solver` {where} has no error estimate; sample_ode_batch is adaptive (use "
            "e.g. 'tsit5'), or vmap sample_ode for fixed steps."
        )
    rtol, atol = check_tols(rtol, atol)
    eps = check_eps(sde, eps)
    keys = jnp.asarray(keys)
    if x_init is None:
        x_init, bad = jax.vmap(lambda k: start(k, sde, shape, None)[0])(keys), False
    else:
        x_init, bad = check_x_deferred(x_init, (keys.shape[0], *shape), "x_init")
    batched = BatchedScore(score)
    x, _, stats = solve_reverse(None, sde, batched, x_init, solver, stochastic=False,
                                t_span=(sde.T, eps), rtol=rtol, atol=atol, args=args,
                                max_steps=max_steps, norm=per_sample_rms_norm)  # fmt: skip
    x = finish(x, stats, where, throw, bad_input=bad, input_name="x_init")
    if denoise:
        x = tweedie(sde, batched, jnp.asarray(eps, x.dtype), x, args)
    return outputs(x, None, stats, False, return_stats)


def sample_ode(
    key: KeyArray,
    sde: AbstractSDE,
    score: Callable,
    shape: tuple[int, ...],
    solver: str | diffrax.AbstractSolver = "tsit5",
    *,
    rtol: RealScalarLike = 1e-5,
    atol: RealScalarLike = 1e-5,
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
    x_init, _, bad = start(key, sde, shape, x_init)
    x, traj, stats, t_end = solve_flow(
        where, sde, score, x_init, solver=solver, forward=False, rtol=rtol, atol=atol,
        eps=eps, num_steps=num_steps, grid=grid, ts=ts, args=args,
        save=return_trajectory, max_steps=max_steps, adjoint=None)  # fmt: skip
    x = finish(x, stats, where, throw, bad_input=bad, input_name="x_init")
    if denoise:
        x = tweedie(sde, score, t_end, x, args)
    return outputs(x, traj, stats, return_trajectory, return_stats)
