"""Two ways to run a diffrax solver over a time interval.

- `fixed_solve`: a fixed grid of times, one `solver.step` per interval inside a
  `jax.lax.scan`. Any diffrax solver works; there is no adaptive-stepping machinery to
  pay for, so this is as fast as a hand-written loop.
- `adaptive_solve`: `diffrax.diffeqsolve` with a PID controller.
"""

import math
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PyTree


def levy_area_for(solver: diffrax.AbstractSolver) -> type:
    """The Brownian increment type a solver needs (Lévy area for SRK methods)."""
    if isinstance(solver, diffrax.AbstractSRK):
        minimal = solver.minimal_levy_area
        if issubclass(diffrax.BrownianIncrement, minimal):
            return diffrax.BrownianIncrement
        if issubclass(diffrax.SpaceTimeLevyArea, minimal):
            return diffrax.SpaceTimeLevyArea
        return diffrax.SpaceTimeTimeLevyArea
    return diffrax.BrownianIncrement


def fixed_solve(
    terms: PyTree[diffrax.AbstractTerm],
    solver: diffrax.AbstractSolver,
    ts: Float[Array, " times"],
    y0: PyTree[Array],
    *,
    args: PyTree[Any] = None,
    save_trajectory: bool = False,
) -> tuple[PyTree[Array], PyTree[Array] | None]:
    r"""Take one `solver.step` per interval of the grid `ts` inside a `jax.lax.scan`.

    This is `diffrax.diffeqsolve` with a constant step size, minus the adaptive-stepping
    machinery: the loop is $y_{i+1} = \Phi(y_i; t_i, t_{i+1})$ for the solver's one-step
    map $\Phi$, so it runs as fast as a hand-written loop and works with any diffrax
    solver (stochastic Runge–Kutta methods included, given a Brownian path with the Lévy
    area they need).

    **Arguments:**

    - `terms`: the diffrax terms, e.g. from [`sdegen.reverse_terms`][].
    - `solver`: any `diffrax.AbstractSolver`.
    - `ts`: the grid $t_0, \dots, t_n$, monotone (increasing for SDE terms; ODE terms
      may also run backwards).
    - `y0`: the state at `ts[0]`.
    - `args`: passed to the vector fields.
    - `save_trajectory`: also return every state.

    **Returns:** `(y1, ys)`: the state at `ts[-1]`, and the states at every grid time
    (`y0` first) when `save_trajectory` is set, else `None`.
    """
    state = solver.init(terms, ts[0], ts[1], y0, args)

    def body(carry, t01):
        y, st = carry
        y1, _, _, st, _ = solver.step(terms, t01[0], t01[1], y, args, st, False)
        return (y1, st), (y1 if save_trajectory else None)

    (y1, _), ys = lax.scan(body, (y0, state), jnp.stack([ts[:-1], ts[1:]], axis=-1))
    if save_trajectory:
        ys = jnp.concatenate([y0[None], ys], axis=0)
    return y1, ys


class AdaptiveResult(eqx.Module):
    y1: jnp.ndarray
    ys: jnp.ndarray | None
    num_steps: jnp.ndarray
    num_accepted_steps: jnp.ndarray


def adaptive_solve(
    terms,
    solver,
    t0,
    t1,
    y0,
    *,
    rtol,
    atol,
    dt0=None,
    args=None,
    save_ts=None,
    max_steps=16**4,
    adjoint=None,
) -> AdaptiveResult:
    """`diffrax.diffeqsolve` with a `PIDController(rtol, atol)`; optionally also saves
    at `save_ts`."""
    if save_ts is None:
        saveat = diffrax.SaveAt(t1=True)
    else:
        saveat = diffrax.SaveAt(ts=save_ts)
    kwargs = {} if adjoint is None else {"adjoint": adjoint}
    sol = diffrax.diffeqsolve(
        terms,
        solver,
        t0,
        t1,
        dt0,
        y0,
        args=args,
        saveat=saveat,
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=max_steps,
        **kwargs,
    )
    ys = sol.ys
    y1 = ys[-1]
    return AdaptiveResult(
        y1=y1,
        ys=ys if save_ts is not None else None,
        num_steps=sol.stats["num_steps"],
        num_accepted_steps=sol.stats["num_accepted_steps"],
    )


class GridBrownianPath(diffrax.AbstractBrownianPath):
    r"""Brownian motion sampled on a fixed grid $u_0 < \dots < u_n$: the increment over
    step $i$ is $\sqrt{u_{i+1} - u_i}\,\xi_i$ with $\xi_i \sim \mathcal{N}(0, I)$ drawn
    up front from one key (and, for SRK solvers, the space-time Lévy area
    $H_i = \sqrt{(u_{i+1} - u_i)/12}\,\eta_i$ from independent normals).

    The noise of a whole solve is one batched random draw instead of a hash per step,
    so fixed-step sampling costs what a hand-written loop costs; results depend only on
    the key (not on the batch size). Only valid for solvers that step exactly on the
    grid, as [`sdegen.fixed_solve`][] does; use `diffrax.VirtualBrownianTree` for
    adaptive steps.
    """

    ts: Float[Array, " times"]
    w: Array
    h: Array | None
    levy_area: type = eqx.field(static=True)

    def __init__(self, ts, shape: jax.ShapeDtypeStruct, key, levy_area=diffrax.BrownianIncrement):
        n = ts.shape[0] - 1
        self.ts = ts
        self.levy_area = levy_area
        kw, kh = jr.split(key)
        self.w = jr.normal(kw, (n, *shape.shape), shape.dtype)
        if levy_area is diffrax.BrownianIncrement:
            self.h = None
        elif levy_area is diffrax.SpaceTimeLevyArea:
            self.h = jr.normal(kh, (n, *shape.shape), shape.dtype)
        else:
            raise ValueError(
                "GridBrownianPath provides BrownianIncrement or SpaceTimeLevyArea, got "
                f"{levy_area.__name__}; use diffrax.VirtualBrownianTree instead."
            )

    @property
    def t0(self):
        return self.ts[0]

    @property
    def t1(self):
        return self.ts[-1]

    def evaluate(self, t0, t1=None, left=True, use_levy=False):
        del left
        n = self.w.shape[0]
        # the step whose start is nearest t0 (robust to rounding in t0)
        mid = 0.5 * (self.ts[:-1] + self.ts[1:])
        i = jnp.clip(jnp.searchsorted(mid, t0, side="right"), 0, n - 1)
        dt = (t1 - t0).astype(self.w.dtype)
        root = jnp.sqrt(dt)
        w = self.w[i] * root
        if not use_levy:
            return w
        if self.h is None:
            return diffrax.BrownianIncrement(dt=dt, W=w)
        return diffrax.SpaceTimeLevyArea(dt=dt, W=w, H=self.h[i] * root / math.sqrt(12))


def grid_brownian(us, shape: jax.ShapeDtypeStruct, key, levy_area) -> diffrax.AbstractBrownianPath:
    """The Brownian path for a fixed-step solve on the grid `us`: a
    [`sdegen.GridBrownianPath`][], or `diffrax.UnsafeBrownianPath` for the solvers that
    need space-time-time Lévy area."""
    if levy_area is diffrax.SpaceTimeTimeLevyArea:
        return diffrax.UnsafeBrownianPath(shape=shape, key=key, levy_area=levy_area)
    return GridBrownianPath(us, shape, key, levy_area)
