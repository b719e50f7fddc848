r"""What sdegen's own solvers share: they step the diffusion model itself — its
$\alpha(t)$, $\sigma(t)$, $\lambda(t) = \log(\alpha/\sigma)$ and denoiser
$D(t, x) = (x + \sigma^2 s(t, x))/\alpha$ — instead of a black-box vector field, reading
them from the [`sdegen.ScoreDrift`][] of the terms. They are ordinary
`diffrax.AbstractSolver`s, so the engine runs them like diffrax's own.
"""

import abc
from typing import Any, ClassVar

import diffrax
import jax.lax as lax
import jax.numpy as jnp

from ..._processes._conversions import vanishes_at_T
from ..._processes._terms import ScalarDiffusionTerm, ScoreDrift, drift_of
from .._brownian import STREAM_W, GridBrownianPath


class Point:
    """The schedule at one SDE time `t`: `alpha`, `sigma` and `lam` = log(alpha/sigma)
    (infinite where sigma = 0)."""

    def __init__(self, sde: Any, t: Any, lam: Any = None):
        self.t = t
        self.alpha = sde._alpha(t)
        self.sigma = sde._sigma(t)
        self.lam = jnp.log(self.alpha) - jnp.log(self.sigma) if lam is None else lam


def at(drift: ScoreDrift, u: Any) -> Point:
    """The schedule at the integration time `u` of the terms."""
    return Point(drift.sde, drift.sde_time(u))


def at_lambda(drift: ScoreDrift, lam: Any) -> Point:
    """The schedule at the SDE time where lambda = `lam`."""
    return Point(drift.sde, drift.sde._inverse_lambda(lam), lam)


SUCCESS = diffrax.RESULTS.successful


def from_noise(drift: ScoreDrift, s: Point, t: Point, y0: Any, args: Any,
               regular: Any) -> Any:  # fmt: skip
    r"""`regular()`, the solver's own step, except from a point where $\alpha_s = 0$
    ($\lambda_s = -\infty$, $t = T$ of an interpolant), where it is the exact
    exponential-integrator step from pure noise, $e^{-h} = 0$:
    $x_t = \alpha_t D_s + \sigma_t\hat\varepsilon_s$ with $\hat\varepsilon_s =
    x_s/\sigma_s$ and $D_s$ the exact limit (see [`sdegen.ScoreDrift`][]). Used by the
    solvers whose own formula divides by $\alpha_s$ or needs a finite $\lambda_s$
    (DPM-Solver-2/-3, EDM)."""
    if not vanishes_at_T(drift.sde):
        return regular()

    def first():
        d = drift.denoise_limit(s.t, y0, args)
        return (t.alpha * d + (t.sigma / s.sigma) * y0).astype(y0.dtype)

    return lax.cond(s.alpha == 0, first, regular)


def standard_normal(noise: Any, u0: Any, u1: Any, stream: Any = STREAM_W) -> Any:
    r"""Standard normals for the step $[u_0, u_1]$: from a [`sdegen.GridBrownianPath`][]
    directly, else the Brownian increment over the step divided by
    $\sqrt{|u_1 - u_0|}$."""
    path = noise.control if isinstance(noise, ScalarDiffusionTerm) else None
    if isinstance(path, GridBrownianPath):
        return path.normal(u0, stream)
    if not (isinstance(stream, int) and stream == STREAM_W):
        raise ValueError(
            "This solver needs several independent normals per step, which only "
            "sdegen.GridBrownianPath provides (sdegen's fixed-step samplers use it); "
            f"got a {type(path).__name__}."
        )
    inc = noise.contr(u0, u1)
    return inc / jnp.sqrt(jnp.abs(u1 - u0)).astype(inc.dtype)


def need_noise(noise: Any, who: str) -> None:
    if noise is None:
        raise ValueError(
            f"{who} is stochastic: it needs the terms of sdegen.reverse_terms (with a "
            "Brownian path), not the probability-flow ODE. Use it with "
            "sdegen.sample_sde."
        )


class AbstractDiffusionSolver(diffrax.AbstractSolver):
    r"""A solver of the reverse process of a diffusion model, stepping with its
    schedule and denoiser (the terms must be those of
    [`sdegen.probability_flow_term`][] or [`sdegen.reverse_terms`][])."""

    term_structure: ClassVar = diffrax.AbstractTerm
    interpolation_cls: ClassVar = diffrax.LocalLinearInterpolation

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)

    def parts(self, terms: Any) -> tuple[ScoreDrift, Any]:
        return drift_of(terms, f"solver {type(self).__name__}")


class AbstractGridAware(diffrax.AbstractSolver):
    """A solver whose step depends on the number of steps of the grid it runs on (as
    EDM's churn $S_\\text{churn}/N$); the engine calls `with_num_steps` first."""

    @abc.abstractmethod
    def with_num_steps(self, num_steps: int) -> "AbstractGridAware":
        """This solver, set up for a grid of `num_steps` steps."""


# Single-step multistage solvers whose one step spans the whole reverse process
# when num_steps = 1: their intermediate stage's error is multiplied by
# alpha(eps)/alpha(T) (DPM-Solver-2/3, noise prediction) or sigma(T)/sigma(eps) (EDM's
# Heun correction), ~150 and ~5000 on the VP SDE: samples 50-125x the data's radius.
MIN_STEPS = {"DPMSolver2": 2, "DPMSolver3": 2, "EDMSampler": 2}


def check_min_steps(solver: diffrax.AbstractSolver, num_steps: int) -> None:
    """Refuse a grid too coarse for `solver` (see `MIN_STEPS`), naming `num_steps`."""
    inner = solver
    while inner is not None and hasattr(inner, "inner") and not isinstance(
        inner, AbstractDiffusionSolver
    ):
        inner = inner.inner
    need = MIN_STEPS.get(type(inner).__name__, 1)
    if num_steps < need:
        raise ValueError(
            f"`num_steps` must be at least {need} for solver {type(inner).__name__} "
            f"(got {num_steps}, or a `ts` of {num_steps + 1} times): one step of this "
            "single-step multistage method spans the whole noise range, and the error "
            "of its intermediate stage is amplified ~100x (samples far outside the "
            "data). Use more steps, or a multistep solver such as 'dpmpp_2m' or 'ddim'."
        )


def on_grid(solver: diffrax.AbstractSolver, num_steps: int) -> diffrax.AbstractSolver:
    """`solver.with_num_steps(num_steps)` for grid-aware solvers, else `solver`."""
    if isinstance(solver, AbstractGridAware):
        return solver.with_num_steps(num_steps)
    return solver
