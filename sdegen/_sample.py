r"""Sampling by the reverse-time SDE and the probability-flow ODE, and the ODE as an
invertible map (`encode` / `decode`).

One call draws one sample; `jax.vmap` over keys for a batch. Noise comes from the
key alone, so the same key gives the same sample whatever the batch size.
"""

from collections.abc import Callable
from typing import Any

import diffrax
import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from ._checks import (
    as_float_array,
    check_shape_arg,
    concrete_float,
    error_if_not_finite,
)
from ._custom_types import Array, DataLike, KeyArray, RealScalarLike
from ._integrate import adaptive_solve, fixed_solve, grid_brownian, levy_area_for
from ._misc import is_concrete, shape_dtype as _sds
from ._sde import AbstractSDE
from ._solver_table import SOLVERS, _normalise, solver as get_solver
from ._terms import _check_score, _check_sde, probability_flow_term, reverse_terms


# ---------------------------------------------------------------- validation


def _check_eps(sde: AbstractSDE, eps) -> None:
    v = concrete_float("eps", eps)
    if v is not None and not (0 < v < sde.T):
        raise ValueError(f"`eps` must satisfy 0 < eps < T = {sde.T}, got {v}.")


def _check_num_steps(num_steps, name="num_steps") -> int:
    if isinstance(num_steps, bool) or int(num_steps) != num_steps or num_steps < 1:
        raise ValueError(f"`{name}` must be a positive int, got {num_steps!r}.")
    return int(num_steps)


def _check_tols(rtol, atol) -> tuple[float, float]:
    for name, v in (("rtol", rtol), ("atol", atol)):
        c = concrete_float(name, v)
        if c is not None and not (np.isfinite(c) and c > 0):
            raise ValueError(f"`{name}` must be finite and > 0, got {c}.")
    return rtol, atol


def _check_grid(sde: AbstractSDE, ts, *, decreasing: bool) -> jnp.ndarray:
    """A user-supplied time grid in the SDE's time `t`."""
    ts = as_float_array(ts, "ts")
    if ts.ndim != 1 or ts.shape[0] < 2:
        raise ValueError(f"`ts` must be a 1-D grid of at least 2 times, got shape {ts.shape}.")
    if is_concrete(ts):
        a = np.asarray(ts, dtype=np.float64)
        if not np.all(np.isfinite(a)):
            raise ValueError("`ts` contains non-finite values.")
        d = np.diff(a)
        if decreasing and not np.all(d < 0):
            raise ValueError("`ts` must be strictly decreasing (from T towards 0).")
        if not decreasing and not np.all(d > 0):
            raise ValueError("`ts` must be strictly increasing (from near 0 towards T).")
        lo, hi = a.min(), a.max()
        if lo <= 0 or hi > sde.T:
            raise ValueError(
                f"`ts` must lie in (0, T] = (0, {sde.T}], got range [{lo}, {hi}]."
            )
    return ts


def _check_x(x, shape, name) -> jnp.ndarray:
    x = as_float_array(x, name)
    if shape is not None and tuple(x.shape) != tuple(shape):
        raise ValueError(f"`{name}` must have shape {tuple(shape)}, got shape {x.shape}.")
    return error_if_not_finite(x, name)


def _resolve(solver, kind: str) -> diffrax.AbstractSolver:
    return get_solver(solver, kind=kind)


def _is_adaptive(solver: diffrax.AbstractSolver, name: Any) -> bool:
    if isinstance(name, str):
        return SOLVERS[_normalise(name)].adaptive
    return isinstance(solver, diffrax.AbstractAdaptiveSolver) or (
        isinstance(solver, diffrax.AbstractSRK) and solver.tableau.b_error is not None
    )


def _tweedie(sde: AbstractSDE, score: Callable, t, x):
    r"""Tweedie's denoiser $\mathbb{E}[x_0 \mid x_t] = (x_t + \sigma(t)^2\nabla\log
    p_t(x_t)) / \alpha(t)$."""
    s = jnp.asarray(score(t, x))
    return ((x + sde.sigma(t) ** 2 * s) / sde.alpha(t)).astype(x.dtype)


# ---------------------------------------------------------------- SDE sampling


@eqx.filter_jit
def _sample_sde_fixed(key, sde, score, x_init, us, solver, save):
    brownian = grid_brownian(us, _sds(x_init), key, levy_area_for(solver))
    terms = reverse_terms(sde, score, brownian, reversed_time=True)
    return fixed_solve(terms, solver, us, x_init, save_trajectory=save)


@eqx.filter_jit
def _sample_sde_adaptive(key, sde, score, x_init, u1, dt0, solver, rtol, atol, tol,
                         save_us, max_steps):  # fmt: skip
    brownian = diffrax.VirtualBrownianTree(
        0.0, u1, tol=tol, shape=_sds(x_init), key=key, levy_area=levy_area_for(solver)
    )
    terms = reverse_terms(sde, score, brownian, reversed_time=True)
    return adaptive_solve(
        terms, solver, 0.0, u1, x_init, rtol=rtol, atol=atol, dt0=dt0,
        save_ts=save_us, max_steps=max_steps,
    )  # fmt: skip


def sample_sde(
    key: KeyArray,
    sde: AbstractSDE,
    score: Callable,
    shape: tuple[int, ...],
    solver: str | diffrax.AbstractSolver = "euler_maruyama",
    num_steps: int = 1000,
    eps: RealScalarLike = 1e-3,
    *,
    x_init: DataLike | None = None,
    ts: Any = None,
    rtol: float | None = None,
    atol: float | None = None,
    brownian_tol: float | None = None,
    max_steps: int = 16**4,
    denoise: bool = False,
    return_trajectory: bool = False,
) -> Array | tuple[Array, Array]:
    r"""Draw one sample by solving the reverse-time SDE
    $\mathrm{d}x = [f(x, t) - g(t)^2 s(t, x)]\,\mathrm{d}t + g(t)\,\mathrm{d}\bar W$
    from $x_T \sim p_T$ (the prior) down to $t = \varepsilon$.

    Internally the SDE is written in $u = T - t$ and integrated forwards (see
    [`sdegen.reverse_terms`][]), which is correct for every diffrax solver, SRK
    methods included.

    **Arguments:**

    - `key`: a JAX PRNG key; it fixes both the prior draw and the Brownian motion.
    - `sde`: the forward SDE, e.g. [`sdegen.VPSDE`][].
    - `score`: `score(t, x)` for one example of shape `shape`.
    - `shape`: the shape of one sample.
    - `solver`: a name from [`sdegen.SOLVERS`][] (SDE-capable) or a diffrax solver.
    - `num_steps`: number of uniform steps from $T$ to `eps` (the initial step count
      for adaptive solves).
    - `eps`: the final time $\varepsilon \in (0, T)$.
    - `x_init`: the prior draw to start from (shape `shape`); by default drawn from
      `key`, so passing that same draw reproduces the default run.
    - `ts`: a custom strictly decreasing time grid in $(0, T]$ (overrides `num_steps`
      and `eps`).
    - `rtol`, `atol`: set either for adaptive stepping with a PID controller (needs a
      solver with an error estimate; the Brownian motion is then a
      `diffrax.VirtualBrownianTree` with tolerance `brownian_tol`).
    - `max_steps`: cap on adaptive steps.
    - `denoise`: finish with Tweedie's denoiser $(x + \sigma^2 s(\varepsilon, x)) /
      \alpha(\varepsilon)$.
    - `return_trajectory`: also return the states on the time grid (`num_steps + 1`
      states from $T$ to $\varepsilon$).

    **Returns:** the sample (shape `shape`), or `(sample, trajectory)`.

    **Raises:** `ValueError` for an unknown or ODE-only solver name, a bad `shape`,
    `eps` outside $(0, T)$, a wrongly shaped or non-finite `x_init`, or a bad grid.
    """
    _check_sde(sde)
    _check_score(score)
    shape = check_shape_arg("shape", shape)
    num_steps = _check_num_steps(num_steps)
    name = solver
    solver = _resolve(solver, "sde")
    adaptive = rtol is not None or atol is not None
    k_prior, k_noise = jr.split(key)
    if x_init is None:
        x_init = sde.prior_sample(k_prior, shape)
    else:
        x_init = _check_x(x_init, shape, "x_init")
    if ts is None:
        _check_eps(sde, eps)
        t_end = eps
        grid_ts = None
    else:
        grid_ts = _check_grid(sde, ts, decreasing=True)
        t_end = grid_ts[-1]
    if not adaptive:
        if grid_ts is None:
            grid_ts = jnp.linspace(sde.T, eps, num_steps + 1, dtype=x_init.dtype)
        us = (sde.T - grid_ts).astype(x_init.dtype)
        x, traj = _sample_sde_fixed(k_noise, sde, score, x_init, us, solver,
                                    return_trajectory)  # fmt: skip
    else:
        if not _is_adaptive(solver, name):
            raise ValueError(
                f"`solver` {name!r} has no error estimate, so it cannot step adaptively "
                "(rtol/atol given). Use e.g. 'heun', 'shark', 'spark' or 'sra1'."
            )
        rtol = 1e-3 if rtol is None else rtol
        atol = 1e-3 if atol is None else atol
        _check_tols(rtol, atol)
        u1 = sde.T - t_end
        dt0 = u1 / num_steps
        tol = dt0 / 8 if brownian_tol is None else brownian_tol
        save_us = None
        if return_trajectory:
            if grid_ts is None:
                grid_ts = jnp.linspace(sde.T, eps, num_steps + 1, dtype=x_init.dtype)
            save_us = sde.T - grid_ts
        u1, dt0, rtol, atol = (jnp.asarray(v, x_init.dtype) for v in (u1, dt0, rtol, atol))
        res = _sample_sde_adaptive(k_noise, sde, score, x_init, u1, dt0, solver, rtol,
                                   atol, tol, save_us, max_steps)  # fmt: skip
        x, traj = res.y1, res.ys
    if denoise:
        x = _tweedie(sde, score, t_end, x)
    return (x, traj) if return_trajectory else x


# ---------------------------------------------------------------- ODE map


@eqx.filter_jit
def _solve_ode(sde, score, y0, t0, t1, solver, grid, rtol, atol, save_ts, max_steps,
               adjoint):  # fmt: skip
    term = probability_flow_term(sde, score)
    if grid is not None:
        return fixed_solve(term, solver, grid, y0, save_trajectory=save_ts is not None)
    res = adaptive_solve(term, solver, t0, t1, y0, rtol=rtol, atol=atol, dt0=None,
                         save_ts=save_ts, max_steps=max_steps, adjoint=adjoint)  # fmt: skip
    return res.y1, res.ys


def _ode(sde, score, y0, t0, t1, solver, rtol, atol, num_steps, ts, save, max_steps,
         adjoint, decreasing):  # fmt: skip
    name = solver
    solver = _resolve(solver, "ode")
    grid = None
    if ts is not None:
        ts = _check_grid(sde, ts, decreasing=decreasing)
        t0, t1 = ts[0], ts[-1]
    if num_steps is not None or (ts is not None and not _is_adaptive(solver, name)):
        if ts is None:
            num_steps = _check_num_steps(num_steps)
            ts = jnp.linspace(t0, t1, num_steps + 1, dtype=y0.dtype)
        grid = ts.astype(y0.dtype)
    else:
        if not _is_adaptive(solver, name):
            raise ValueError(
                f"`solver` {name!r} has no error estimate; give `num_steps` for fixed "
                "steps, or choose an adaptive solver such as 'tsit5'."
            )
        _check_tols(rtol, atol)
    save_ts = None
    if save:
        save_ts = ts if ts is not None else jnp.linspace(t0, t1, 101, dtype=y0.dtype)
        if grid is not None:
            save_ts = grid
    # tolerances and times as arrays, so that new values do not recompile
    t0, t1 = jnp.asarray(t0, y0.dtype), jnp.asarray(t1, y0.dtype)
    rtol, atol = jnp.asarray(rtol, y0.dtype), jnp.asarray(atol, y0.dtype)
    return _solve_ode(sde, score, y0, t0, t1, solver, grid, rtol, atol, save_ts,
                      max_steps, adjoint)  # fmt: skip


def encode(
    sde: AbstractSDE,
    score: Callable,
    x0: DataLike,
    solver: str | diffrax.AbstractSolver = "tsit5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    eps: RealScalarLike = 1e-3,
    *,
    num_steps: int | None = None,
    ts: Any = None,
    max_steps: int = 16**4,
    adjoint: diffrax.AbstractAdjoint | None = None,
    return_trajectory: bool = False,
) -> Array | tuple[Array, Array]:
    r"""Map data to its latent code $z = x(T)$ by solving the probability-flow ODE
    $\dot x = f(x, t) - \tfrac12 g(t)^2 s(t, x)$ forwards from $x(\varepsilon) = x_0$.
    The inverse of [`sdegen.decode`][] up to solver tolerance.

    **Arguments:** as [`sdegen.sample_ode`][]; `x0` is one example; `num_steps` (or a
    strictly increasing grid `ts`) selects fixed steps, otherwise the solve is adaptive
    with `rtol`/`atol`; `adjoint` is passed to `diffrax.diffeqsolve` for gradients.

    **Returns:** the latent $z$ (shape of `x0`), or `(z, trajectory)`.
    """
    _check_sde(sde)
    _check_score(score)
    x0 = _check_x(x0, None, "x0")
    if ts is None:
        _check_eps(sde, eps)
    return _finish(_ode(sde, score, x0, eps, sde.T, solver, rtol, atol, num_steps, ts,
                        return_trajectory, max_steps, adjoint, False), return_trajectory)  # fmt: skip


def decode(
    sde: AbstractSDE,
    score: Callable,
    z: DataLike,
    solver: str | diffrax.AbstractSolver = "tsit5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    eps: RealScalarLike = 1e-3,
    *,
    num_steps: int | None = None,
    ts: Any = None,
    max_steps: int = 16**4,
    adjoint: diffrax.AbstractAdjoint | None = None,
    return_trajectory: bool = False,
) -> Array | tuple[Array, Array]:
    r"""Map a latent $z = x(T)$ back to data by solving the probability-flow ODE
    backwards from $T$ to $\varepsilon$. The inverse of [`sdegen.encode`][].

    **Returns:** $x(\varepsilon)$ (shape of `z`), or `(x, trajectory)`.
    """
    _check_sde(sde)
    _check_score(score)
    z = _check_x(z, None, "z")
    if ts is None:
        _check_eps(sde, eps)
    return _finish(_ode(sde, score, z, sde.T, eps, solver, rtol, atol, num_steps, ts,
                        return_trajectory, max_steps, adjoint, True), return_trajectory)  # fmt: skip


def _finish(out, return_trajectory):
    x, traj = out
    return (x, traj) if return_trajectory else x


def sample_ode(
    key: KeyArray,
    sde: AbstractSDE,
    score: Callable,
    shape: tuple[int, ...],
    solver: str | diffrax.AbstractSolver = "tsit5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    eps: RealScalarLike = 1e-3,
    *,
    num_steps: int | None = None,
    ts: Any = None,
    x_init: DataLike | None = None,
    max_steps: int = 16**4,
    denoise: bool = False,
    return_trajectory: bool = False,
) -> Array | tuple[Array, Array]:
    r"""Draw one sample by solving the probability-flow ODE
    $\dot x = f(x, t) - \tfrac12 g(t)^2 s(t, x)$ from $x_T \sim p_T$ down to
    $t = \varepsilon$ (Song et al. 2021, §4.3). Deterministic given the prior draw.

    **Arguments:**

    - `key`: PRNG key for the prior draw.
    - `sde`, `score`, `shape`: as in [`sdegen.sample_sde`][].
    - `solver`: an ODE-capable name from [`sdegen.SOLVERS`][] or a diffrax solver.
    - `rtol`, `atol`: tolerances of the adaptive (PID-controlled) solve.
    - `eps`: final time in $(0, T)$.
    - `num_steps`: give it for fixed uniform steps instead of adaptive ones.
    - `ts`: a strictly decreasing custom grid in $(0, T]$ (fixed steps for a solver
      without error estimate; otherwise the save times of an adaptive solve).
    - `x_init`: the prior draw to start from.
    - `denoise`: finish with Tweedie's denoiser.
    - `return_trajectory`: also return the states on the grid (101 uniform save
      times for an adaptive solve without `ts`).

    **Returns:** the sample, or `(sample, trajectory)`.
    """
    _check_sde(sde)
    _check_score(score)
    shape = check_shape_arg("shape", shape)
    if x_init is None:
        x_init = sde.prior_sample(jr.split(key)[0], shape)
    else:
        x_init = _check_x(x_init, shape, "x_init")
    if ts is None:
        _check_eps(sde, eps)
    x, traj = _ode(sde, score, x_init, sde.T, eps, solver, rtol, atol, num_steps, ts,
                   return_trajectory, max_steps, None, True)  # fmt: skip
    if denoise:
        t_end = eps if ts is None else jnp.asarray(ts)[-1]
        x = _tweedie(sde, score, t_end, x)
    return (x, traj) if return_trajectory else x
