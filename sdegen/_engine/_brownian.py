r"""Brownian motion on a fixed time grid, drawn step by step from a key.

The increment over step $i$ of the grid $u_0 < \dots < u_n$ is
$\sqrt{u_{i+1} - u_i}\,\xi_i$ with $\xi_i \sim \mathcal{N}(0, I)$ drawn from
`fold_in(key, i)` when the step is taken, so a solve holds the noise of one step at a
time (memory $O(\text{dim})$ whatever the number of steps) and the sample for a key does
not depend on the batch, the chunking or the devices.
"""

import math
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float


# Streams of independent normals per step: the Brownian increment and its Lévy areas
# first, then streams that correctors and projections ask for by number.
STREAM_W, STREAM_H, STREAM_K = 0, 1, 2
STREAM_PROJECT = 8
STREAM_CORRECT = 16


class GridBrownianPath(diffrax.AbstractBrownianPath):
    r"""Brownian motion sampled on a fixed increasing grid $u_0 < \dots < u_n$.

    The increment over step $i$ is $W = \sqrt{\Delta u}\,\xi$, and, for solvers that
    need Lévy areas, the space-time area $H = \sqrt{\Delta u/12}\,\eta$ and the
    space-time-time area $K = \sqrt{\Delta u/720}\,\kappa$, with $\xi, \eta, \kappa$
    independent standard normals drawn from `fold_in(key, i)` (exact in distribution
    for one step). `evaluate(t0, t1)` finds the step $i$ whose start is nearest `t0`,
    so it is only valid for solvers that step exactly on the grid, as sdegen's
    fixed-step engine does (or `diffrax.diffeqsolve` with
    `stepsize_controller=diffrax.StepTo(ts)`); use `diffrax.VirtualBrownianTree` for
    adaptive steps.

    [`sdegen.GridBrownianPath.normal`][] gives further independent standard normals per
    step (for Langevin correctors and the noise of inverse-problem projections).
    """

    ts: Float[Array, " times"]
    key: Any
    shape: jax.ShapeDtypeStruct = eqx.field(static=True)
    levy_area: type = eqx.field(static=True)

    def __init__(self, ts, shape, key, levy_area=diffrax.BrownianIncrement):
        if levy_area not in (diffrax.BrownianIncrement, diffrax.SpaceTimeLevyArea,
                             diffrax.SpaceTimeTimeLevyArea):  # fmt: skip
            raise ValueError(
                "`levy_area` must be diffrax.BrownianIncrement, SpaceTimeLevyArea or "
                f"SpaceTimeTimeLevyArea, got {levy_area!r}."
            )
        if isinstance(shape, tuple):
            shape = jax.ShapeDtypeStruct(shape, jnp.zeros(()).dtype)
        self.ts = jnp.asarray(ts)
        self.key = key
        self.shape = shape
        self.levy_area = levy_area

    @property
    def t0(self):
        return self.ts[0]

    @property
    def t1(self):
        return self.ts[-1]

    def step_index(self, t0) -> Array:
        """The index of the grid step whose start is nearest `t0` (robust to the
        rounding of `t0`)."""
        mid = 0.5 * (self.ts[:-1] + self.ts[1:])
        n = mid.shape[0]
        i = jnp.sum(mid <= t0) if n <= 4096 else jnp.searchsorted(mid, t0, "right")
        return jnp.clip(i, 0, n - 1).astype(jnp.int32)

    def normal(self, t0, stream: Any) -> Array:
        r"""Standard normals of the path's shape for the step starting at `t0`, from
        stream number `stream` (independent across steps and streams)."""
        k = jr.fold_in(self.key, self.step_index(t0))
        if not (isinstance(stream, int) and stream == STREAM_W):
            k = jr.fold_in(k, stream)
        return jr.normal(k, self.shape.shape, self.shape.dtype)

    def evaluate(self, t0, t1=None, left=True, use_levy=False):
        del left
        if t1 is None:
            raise ValueError("GridBrownianPath gives increments: pass both t0 and t1.")
        dt = jnp.asarray(t1 - t0, self.shape.dtype)
        root = jnp.sqrt(jnp.abs(dt))
        w = root * self.normal(t0, STREAM_W)
        if not use_levy:
            return w
        if self.levy_area is diffrax.BrownianIncrement:
            return diffrax.BrownianIncrement(dt=dt, W=w)
        h = root / math.sqrt(12) * self.normal(t0, STREAM_H)
        if self.levy_area is diffrax.SpaceTimeLevyArea:
            return diffrax.SpaceTimeLevyArea(dt=dt, W=w, H=h)
        k = root / math.sqrt(720) * self.normal(t0, STREAM_K)
        return diffrax.SpaceTimeTimeLevyArea(dt=dt, W=w, H=h, K=k)


GridBrownianPath.__init__.__doc__ = """**Arguments:**

- `ts`: the increasing grid $u_0 < \\dots < u_n$ the solver steps on.
- `shape`: a `jax.ShapeDtypeStruct` (or a tuple, for JAX's default float) of the state.
- `key`: the PRNG key of the path.
- `levy_area`: `diffrax.BrownianIncrement` (default), `diffrax.SpaceTimeLevyArea` or
  `diffrax.SpaceTimeTimeLevyArea`, as the solver needs.
"""
