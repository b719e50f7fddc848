r"""Predictor–corrector sampling (Song et al. 2021, "Score-Based Generative Modeling
through Stochastic Differential Equations", §4.2 and Algorithm 1): a thin entry point
that builds [`sdegen.PredictorCorrector`][]`(predictor, corrector)` and runs it on the
one engine.
"""

from collections.abc import Callable
from typing import Any

import diffrax

from .._core._checks import (
    check_eps,
    check_int,
    check_positive,
    check_score,
    check_shape_arg,
    describe,
)
from .._core._custom_types import DataLike, KeyArray, RealScalarLike
from .._engine._grids import resolve_grid
from .._engine._solve import finish, outputs, solve_reverse, start, tweedie
from .._engine._solver_table import SOLVERS, _normalise, known, lookup
from .._engine._solvers import AbstractCorrector, LangevinCorrector, PredictorCorrector
from .._processes._sde import AbstractSDE, check_sde


def resolve_predictor(predictor: Any) -> diffrax.AbstractSolver | None:
    """A predictor from a name (a predictor row or any SDE solver name), a solver, or
    `None`."""
    if predictor is None or isinstance(predictor, diffrax.AbstractSolver):
        return predictor
    if isinstance(predictor, str):
        name = _normalise(predictor)
        row = SOLVERS.get(name)
        if row is not None and row.sde:
            return row.make()
        if name in known("predictor"):
            return lookup("predictor", name).make()
    names = known("predictor") + known("solver", lambda r: r.sde)
    raise ValueError(
        f"Unknown `predictor` {predictor!r}. Known predictors: {', '.join(names)}, or "
        "None; or any diffrax.AbstractSolver instance."
    )


def resolve_corrector(corrector: Any, snr: Any, corrector_steps: int) -> Any:
    """A corrector from a name (`"langevin"`, `"none"`), an instance, or `None`."""
    if corrector is None or isinstance(corrector, AbstractCorrector):
        return corrector
    if not isinstance(corrector, str):
        raise ValueError(
            "`corrector` must be a corrector name ('langevin', 'none'), an "
            f"sdegen.AbstractCorrector or None, got {type(corrector).__name__}."
        )
    row = lookup("corrector", corrector, arg="corrector")
    if row.name == "langevin":
        return LangevinCorrector(snr, corrector_steps)
    return row.make()


def pc_sample(
    key: KeyArray,
    sde: AbstractSDE,
    score: Callable,
    shape: tuple[int, ...],
    predictor: str | diffrax.AbstractSolver | None = "reverse_diffusion",
    corrector: str | AbstractCorrector | None = "langevin",
    *,
    snr: RealScalarLike = 0.16,
    corrector_steps: int = 1,
    num_steps: int = 1000,
    eps: RealScalarLike = 1e-3,
    grid: str = "uniform",
    ts: Any = None,
    x_init: DataLike | None = None,
    args: Any = None,
    denoise: bool = False,
    return_trajectory: bool = False,
    return_stats: bool = False,
    throw: bool = True,
) -> Any:
    r"""Draw one sample by predictor–corrector sampling (Song et al. 2021,
    Algorithm 1): from $x_0 \sim p_T$ at $t_0 = T$, for $i = 0, \dots, N-1$,

    1. predictor: one step of the reverse-time SDE from $t_i$ to $t_{i+1}$;
    2. corrector: `corrector_steps` Langevin steps targeting $p_{t_{i+1}}$,

    on the grid $t_0 = T > \dots > t_N = \varepsilon$ of `grid` (uniform by default,
    `linspace(T, eps, num_steps + 1)`) or `ts`. (score_sde iterates over
    `linspace(T, eps, N)` with steps of $T/N$ and runs the corrector first; the order
    here is the paper's Algorithm 1, and with `corrector="none"` and the predictor
    `"euler_maruyama"` this returns the same sample as [`sdegen.sample_sde`][] for the
    same key.) The sampler is the solver [`sdegen.PredictorCorrector`][]`(predictor,
    corrector)` run by sdegen's one engine.

    **Arguments:**

    - `key`: PRNG key (prior draw, Brownian path and corrector noise all come from it).
    - `sde`, `score`, `shape`: as in [`sdegen.sample_sde`][].
    - `predictor`: `"reverse_diffusion"` (= Euler–Maruyama), `"ancestral"`, any SDE
      solver name of [`sdegen.SOLVERS`][], a solver instance, or `None` for
      corrector-only sampling.
    - `corrector`: `"langevin"` (`LangevinCorrector(snr, corrector_steps)`, whose
      default step rule is `"gaussian"`), `"none"` (or `None`), or an
      [`sdegen.AbstractCorrector`][] (its own settings are then used).
    - `snr`: the Langevin corrector's target signal-to-noise ratio $r > 0$.
    - `corrector_steps`: Langevin steps per noise level ($\ge 1$).
    - `num_steps`, `eps`, `grid`, `ts`, `x_init`, `args`: as in
      [`sdegen.sample_sde`][].
    - `denoise`: finish with Tweedie's denoiser.
    - `return_trajectory`, `return_stats`, `throw`: as in [`sdegen.sample_sde`][].

    **Returns:** the sample (shape `shape`), then the trajectory and statistics if
    asked for.

    **Raises:** `ValueError` for an unknown predictor/corrector name (listing the known
    ones), `predictor=None` with no corrector, `snr <= 0`, non-positive step counts,
    `eps` outside $(0, T)$, a bad `shape`, or a wrongly shaped or non-finite `x_init`.

    Score evaluations: $N$ times the predictor's evaluations per step plus
    $N \times$ `corrector_steps` for the Langevin corrector (`stats.nfe`).
    """
    check_sde(sde)
    check_score(score)
    shape = check_shape_arg("shape", shape)
    num_steps = check_int("num_steps", num_steps)
    corrector_steps = check_int("corrector_steps", corrector_steps)
    snr = check_positive("snr", snr)
    if ts is None:
        eps = check_eps(sde, eps)
    pred = resolve_predictor(predictor)
    corr = resolve_corrector(corrector, snr, corrector_steps)
    if pred is None and corr is None:
        raise ValueError(
            "`predictor=None` needs a corrector (corrector-only sampling); got no "
            "corrector either, so there is nothing to do."
        )
    solver = pred if corr is None else PredictorCorrector(pred, corr)
    where = describe("pc_sample", predictor if isinstance(predictor, str) else solver)
    x_init, k_noise, bad = start(key, sde, shape, x_init)
    grid_ts = resolve_grid(sde, num_steps=num_steps, grid=grid, ts=ts, eps=eps,
                           dtype=x_init.dtype)  # fmt: skip
    x, traj, stats = solve_reverse(k_noise, sde, score, x_init, solver, stochastic=True,
                                   ts=grid_ts, args=args, save=return_trajectory)  # fmt: skip
    x = finish(x, stats, where, throw, bad_input=bad, input_name="x_init")
    if denoise:
        x = tweedie(sde, score, grid_ts[-1], x, args)
    return outputs(x, traj, stats, return_trajectory, return_stats)
