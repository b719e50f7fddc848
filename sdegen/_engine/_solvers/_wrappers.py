r"""Solvers built from solvers: predictor–corrector sampling and projected sampling.

- [`sdegen.PredictorCorrector`][]`(predictor, corrector)`: a step of the predictor (any
  solver, or none) followed by the corrector's MCMC steps at the new time (Song et al.
  2021, Algorithm 1: predictor, then corrector).
- [`sdegen.Projected`][]`(solver, project)`: a step of the solver followed by a
  projection of the state, with fresh noise (the replacement step of inpainting,
  colorization and linear inverse problems, Song et al. 2021, Appendix I).

Both are `diffrax.AbstractSolver`s, so the engine runs them like any other solver.
"""

import abc
from typing import Any, ClassVar

import diffrax
import equinox as eqx

from ..._processes._terms import drift_of
from .._brownian import STREAM_PROJECT
from ._base import AbstractGridAware, need_noise, on_grid, standard_normal
from ._langevin import AbstractCorrector


class AbstractProjection(eqx.Module):
    r"""A map that enforces an observation on the state at time $t$ (with noise $z$
    matching the forward process) and exactly at the end."""

    @abc.abstractmethod
    def __call__(self, sde: Any, t: Any, x: Any, z: Any) -> Any:
        """**Returns:** the state at the SDE time `t` with the observed part replaced
        by a forward-noised copy of the observation (`z` is standard normal noise of
        the state's shape)."""

    @abc.abstractmethod
    def exact(self, x: Any) -> Any:
        """**Returns:** the state with the observation enforced exactly (no noise)."""


class AbstractWrapper(AbstractGridAware):
    """A solver that wraps another (its Lévy area and grid needs pass through)."""

    term_structure: ClassVar = diffrax.AbstractTerm
    interpolation_cls: ClassVar = diffrax.LocalLinearInterpolation

    @property
    @abc.abstractmethod
    def inner(self) -> diffrax.AbstractSolver | None:
        """The wrapped solver."""

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)

    def order(self, terms):
        return None if self.inner is None else self.inner.order(terms)

    def strong_order(self, terms):
        return None if self.inner is None else self.inner.strong_order(terms)


class PredictorCorrector(AbstractWrapper):
    r"""Predictor–corrector sampling (Song et al. 2021, Algorithm 1) as one solver:
    from $t_i$ to $t_{i+1}$, a step of `predictor` on the reverse-time SDE (or no
    move, for corrector-only sampling such as annealed Langevin dynamics), then
    `corrector`'s MCMC steps targeting $p_{t_{i+1}}$.

    The predictor is told that the state jumped (`made_jump=True`) at every step,
    because the corrector changed it since its last step: first-same-as-last caches
    and multistep histories are not reused.
    """

    predictor: diffrax.AbstractSolver | None
    corrector: AbstractCorrector

    @property
    def inner(self):
        return self.predictor

    def with_num_steps(self, num_steps):
        pred = None if self.predictor is None else on_grid(self.predictor, num_steps)
        return PredictorCorrector(pred, self.corrector)

    def init(self, terms, t0, t1, y0, args):
        if self.predictor is None:
            return None
        return self.predictor.init(terms, t0, t1, y0, args)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        y = y0
        if self.predictor is not None:
            y, _, _, solver_state, _ = self.predictor.step(
                terms, t0, t1, y0, args, solver_state, True
            )
        drift, noise = drift_of(terms, "PredictorCorrector")
        need_noise(noise, "the Langevin corrector")
        y = self.corrector.correct(drift, noise, t0, t1, y, args)
        return y, None, dict(y0=y0, y1=y), solver_state, diffrax.RESULTS.successful


class Projected(AbstractWrapper):
    r"""A step of `solver` followed by `project` at the new time, with standard normal
    noise from stream `stream` of the Brownian path (so that nested projections draw
    independent noise)."""

    solver: diffrax.AbstractSolver
    project: AbstractProjection
    stream: int = eqx.field(static=True, default=STREAM_PROJECT)

    @property
    def inner(self):
        return self.solver

    def with_num_steps(self, num_steps):
        return Projected(on_grid(self.solver, num_steps), self.project, self.stream)

    def init(self, terms, t0, t1, y0, args):
        return self.solver.init(terms, t0, t1, y0, args)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        y, _, _, solver_state, result = self.solver.step(
            terms, t0, t1, y0, args, solver_state, made_jump
        )
        drift, noise = drift_of(terms, "Projected")
        need_noise(noise, "a projection")
        z = standard_normal(noise, t0, t1, self.stream)
        y = self.project(drift.sde, drift.sde_time(t1), y, z).astype(y0.dtype)
        return y, None, dict(y0=y0, y1=y), solver_state, result


PredictorCorrector.__init__.__doc__ = """**Arguments:**

- `predictor`: any solver of the reverse SDE (e.g. `diffrax.Euler()`,
  `sdegen.Ancestral()`), or `None` for corrector-only sampling.
- `corrector`: an [`sdegen.AbstractCorrector`][], e.g.
  [`sdegen.LangevinCorrector`][].
"""
Projected.__init__.__doc__ = """**Arguments:**

- `solver`: the solver whose steps are projected.
- `project`: an [`sdegen.AbstractProjection`][].
- `stream`: the noise stream of the projection's $z$.
"""
