"""The one table of every name sdegen accepts: solvers (diffrax's and sdegen's own),
predictor aliases, correctors, loss weightings, DDPM variances and time grids.

Names are a convenience at the edge: every function that takes a solver name also
takes any `diffrax.AbstractSolver` instance, and every other name has an object form.
Each row says what the name is; [`lookup`][] resolves a name once, at the entry point,
and an unknown name raises a `ValueError` that lists the known ones of that kind.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import diffrax


KINDS = ("solver", "predictor", "corrector", "weighting", "time", "variance", "grid")


@dataclass(frozen=True)
class SolverInfo:
    """One row of the name table ([`sdegen.SOLVERS`][] holds the solver rows,
    [`sdegen.REGISTRY`][] every kind)."""

    name: str
    make: Callable[..., Any]
    """Builds the object the name stands for (a solver, corrector, weighting, ...)."""
    description: str
    kind: str = "solver"
    """One of `"solver"`, `"predictor"`, `"corrector"`, `"weighting"`, `"time"`, `"variance"`,
    `"grid"`."""
    sde: bool = False
    """Solves the reverse-time SDE."""
    ode: bool = False
    """Solves the probability-flow ODE."""
    order: str = ""
    """Convergence order: strong order on additive-noise SDEs and/or ODE order."""
    adaptive: bool = False
    """Has an embedded error estimate, so works with a PID step-size controller."""
    evals_per_step: int = 1
    """Score evaluations per step of a fixed-step solve."""
    reference: str = ""
    """The paper the method comes from."""


def _lazy(module: str, name: str, **kwargs: Any) -> Callable[..., Any]:
    """`make` for a class defined in another sdegen module (imported on first use,
    so that this table can be read without importing the solvers)."""

    def make(**more: Any) -> Any:
        import importlib

        cls = getattr(importlib.import_module(module, __package__), name)
        return cls(**{**kwargs, **more})

    return make


def _ref(module: str, name: str) -> Callable[[], Any]:
    """`make` returning a function defined in another sdegen module."""

    def make() -> Any:
        import importlib

        return getattr(importlib.import_module(module, __package__), name)

    return make


def _s(name, make, description, *, sde=False, ode=False, order="", adaptive=False,
       evals=1, reference=""):  # fmt: skip
    return SolverInfo(name, make, description, "solver", sde, ode, order, adaptive,
                      evals, reference)  # fmt: skip


_ROWS: list[SolverInfo] = [
    # ---------------------------------------------------------------- diffrax solvers
    _s("euler_maruyama", diffrax.Euler,
       "Euler–Maruyama: one score call per step; the classic sampler (score_sde's "
       "reverse-diffusion predictor).", sde=True, order="SDE 1.0"),
    _s("euler", diffrax.Euler, "Explicit Euler on the probability-flow ODE.",
       ode=True, order="ODE 1"),
    _s("heun", diffrax.Heun,
       "Heun's method (EDM's second-order sampler); two calls per step.",
       sde=True, ode=True, order="SDE 1.0 / ODE 2", adaptive=True, evals=2),
    _s("euler_heun", diffrax.EulerHeun,
       "Euler–Heun, a Stratonovich predictor–corrector scheme.", sde=True,
       order="SDE 1.0", evals=2),
    _s("midpoint", diffrax.Midpoint, "Explicit midpoint; two calls per step.",
       sde=True, ode=True, order="SDE 1.0 / ODE 2", adaptive=True, evals=2),
    _s("ralston", diffrax.Ralston,
       "Ralston's second-order method with minimal truncation error.", sde=True,
       ode=True, order="SDE 1.0 / ODE 2", adaptive=True, evals=2),
    _s("sra1", diffrax.SRA1, "Rößler's SRA1 stochastic Runge–Kutta for additive noise.",
       sde=True, order="SDE 1.5", adaptive=True, evals=2),
    _s("shark", diffrax.ShARK,
       "ShARK: SRK for additive noise using space-time Lévy area.", sde=True,
       order="SDE 1.5", adaptive=True, evals=2),
    _s("sea", diffrax.SEA, "Shifted Euler: cheap SRK for additive noise.", sde=True,
       order="SDE 1.0"),
    _s("spark", diffrax.SPaRK, "SPaRK: SRK built for adaptive stepping.", sde=True,
       order="SDE 1.5", adaptive=True, evals=3),
    _s("general_shark", diffrax.GeneralShARK, "ShARK for general (non-additive) noise.",
       sde=True, order="SDE 1.5", adaptive=True, evals=3),
    _s("slow_rk", diffrax.SlowRK, "SLOW-RK for commutative noise.", sde=True,
       order="SDE 1.5", adaptive=True, evals=5),
    _s("bosh3", diffrax.Bosh3, "Bogacki–Shampine 3(2).", ode=True, order="ODE 3",
       adaptive=True, evals=3),
    _s("tsit5", diffrax.Tsit5, "Tsitouras 5(4): the usual adaptive default.",
       ode=True, order="ODE 5", adaptive=True, evals=6),
    _s("dopri5", diffrax.Dopri5,
       "Dormand–Prince 5(4), the RK45 of scipy and torchdiffeq.", ode=True,
       order="ODE 5", adaptive=True, evals=6),
    _s("dopri8", diffrax.Dopri8, "Dormand–Prince 8(7) for tight tolerances.",
       ode=True, order="ODE 8", adaptive=True, evals=12),
    # ---------------------------------------------------------------- sdegen's solvers
    _s("ddim", _lazy("._solvers", "DDIM"),
       "DDIM (eta = 0) = DPM-Solver++(1): the first-order exponential integrator of the "
       "probability-flow ODE; one call per step.", ode=True, order="ODE 1",
       reference="Song, Meng & Ermon 2021"),
    _s("dpmpp_2m", _lazy("._solvers", "DPMSolverPP2M"),
       "DPM-Solver++(2M): second-order multistep in log-SNR with the data prediction; "
       "one call per step.", ode=True, order="ODE 2", reference="Lu et al. 2022"),
    _s("dpmpp_2m_sde", _lazy("._solvers", "DPMSolverPP2MSDE"),
       "SDE-DPM-Solver++(2M): the multistep solver for the reverse SDE; one call per "
       "step.", sde=True, order="SDE 0.5 (2M drift)", reference="Lu et al. 2022"),
    _s("dpm_solver_2", _lazy("._solvers", "DPMSolver2"),
       "DPM-Solver-2: single-step, second order in log-SNR with the noise "
       "prediction.", ode=True, order="ODE 2", evals=2, reference="Lu et al. 2022"),
    _s("dpm_solver_3", _lazy("._solvers", "DPMSolver3"),
       "DPM-Solver-3: single-step, third order in log-SNR with the noise "
       "prediction.", ode=True, order="ODE 3", evals=3, reference="Lu et al. 2022"),
    _s("edm", _lazy("._solvers", "EDMSampler"),
       "EDM's sampler without churn: Heun in the noise level sigma/alpha (Algorithm 1); "
       "two calls per step.", ode=True, order="ODE 2", evals=2,
       reference="Karras et al. 2022"),
    _s("edm_sde", _lazy("._solvers", "EDMSampler", s_churn=40.0, s_tmin=0.05,
                        s_tmax=50.0, s_noise=1.003),
       "EDM's stochastic sampler (Algorithm 2) with its ImageNet-64 churn settings "
       "(S_churn 40, S_tmin 0.05, S_tmax 50, S_noise 1.003).", sde=True,
       order="SDE 0.5", evals=2, reference="Karras et al. 2022"),
    _s("ancestral", _lazy("._solvers", "Ancestral"),
       "Ancestral sampling: DDPM's step (VP-type SDEs) or SMLD's (VE); one call per "
       "step.", sde=True, order="SDE 0.5", reference="Ho et al. 2020"),
    # ---------------------------------------------------------------- predictors
    SolverInfo("reverse_diffusion", diffrax.Euler,
               "score_sde's reverse-diffusion predictor, which is one Euler–Maruyama "
               "step of the reverse SDE (any SDE solver name is a predictor too).",
               "predictor", sde=True, order="SDE 1.0"),
    # ---------------------------------------------------------------- correctors
    SolverInfo("langevin", _lazy("._solvers", "LangevinCorrector"),
               "Langevin MCMC with the signal-to-noise step size (Song et al. 2021, "
               "Algorithm 4); one call per corrector step.", "corrector"),
    SolverInfo("none", lambda **kwargs: None,
               "No corrector: predictor-only sampling.", "corrector"),
    # ---------------------------------------------------------------- DDPM variances
    SolverInfo("beta", lambda: "forward",
               "sigma_n^2 = beta_n, the forward step's variance (Ho et al.'s "
               "'fixedlarge').", "variance"),
    SolverInfo("beta_tilde", lambda: "posterior",
               "sigma_n^2 = (1 - alphabar_{n-1})/(1 - alphabar_n) beta_n, the "
               "posterior variance (Ho et al.'s 'fixedsmall').", "variance"),
    # ---------------------------------------------------------------- time grids
    SolverInfo("uniform", _ref("._grids", "uniform_grid"),
               "linspace(T, eps): uniform in t.", "grid"),
    SolverInfo("logsnr", _ref("._grids", "logsnr_grid"),
               "Uniform in lambda(t) = log(alpha/sigma) (DPM-Solver's choice).", "grid"),
    SolverInfo("karras", _ref("._grids", "karras_grid"),
               "Uniform in (sigma/alpha)^(1/rho), rho = 7 (EDM, Karras et al. 2022).",
               "grid"),
]  # fmt: skip


# ------------------------------------------------ loss weightings and noise times
# (owned by the losses: sdegen/_training/_losses/_weighting.py; `make` builds the object)
_ROWS += [
    SolverInfo("sigma2", _lazy(".._training._losses._weighting", "Sigma2Weighting"),
               "lambda(t) = sigma(t)^2 (Song et al. 2021): the eps-prediction loss.",
               kind="weighting", reference="Song et al. 2021"),
    SolverInfo("likelihood", _lazy(".._training._losses._weighting", "LikelihoodWeighting"),
               "lambda(t) = g(t)^2: the objective bounds the negative log-likelihood.",
               kind="weighting", reference="Song, Durkan, Murray & Ermon 2021"),
    SolverInfo("edm", _lazy(".._training._losses._weighting", "EDMWeighting"),
               "EDM: (sigma~^2 + sigma_d^2)/(sigma~ sigma_d)^2 on ||D - x0||^2, "
               "sigma~ = sigma/alpha, sigma_d = 0.5 (sdegen.EDMWeighting for another).",
               kind="weighting", reference="Karras et al. 2022"),
    SolverInfo("uniform", _lazy(".._training._losses._weighting", "UniformTimes"),
               "t ~ U(eps, T).", kind="time", reference="Song et al. 2021"),
    SolverInfo("importance", _lazy(".._training._losses._weighting", "ImportanceTimes"),
               "t ~ q(t) proportional to g^2/sigma^2, reweighted by 1/((T-eps) q): the "
               "same objective as uniform, less variance for the likelihood weighting.",
               kind="time", reference="Song, Durkan, Murray & Ermon 2021"),
    SolverInfo("lognormal", _lazy(".._training._losses._weighting", "LogNormalTimes"),
               "EDM: ln(sigma/alpha) ~ N(-1.2, 1.2^2), t = inverse_lambda(-ln sigma~), "
               "clipped to [eps, T].", kind="time", reference="Karras et al. 2022"),
    SolverInfo("logit_normal", _lazy(".._training._losses._weighting", "LogitNormalTimes"),
               "SD3: logit(t/T) ~ N(0, 1) (sdegen.LogitNormalTimes for m, s), clipped "
               "to [eps, T].", kind="time", reference="Esser et al. 2024"),
    SolverInfo("cfm", _lazy(".._training._losses._cfm", "CFMWeighting"),
               "lambda(t) = g(t)^4/4: DSM with it is the flow-matching loss "
               "||v - (alpha' x0 + sigma' eps)||^2 (sdegen.cfm_loss).",
               kind="weighting", reference="Lipman et al. 2023"),
]  # fmt: skip


def _register(rows: list[SolverInfo]) -> dict[str, dict[str, SolverInfo]]:
    table: dict[str, dict[str, SolverInfo]] = {k: {} for k in KINDS}
    for row in rows:
        if row.kind not in table:
            raise ValueError(f"Unknown kind {row.kind!r} of row {row.name!r}.")
        if row.name in table[row.kind]:
            raise ValueError(f"Duplicate {row.kind} name {row.name!r}.")
        table[row.kind][row.name] = row
    return table


REGISTRY: dict[str, dict[str, SolverInfo]] = _register(_ROWS)
"""Every name sdegen accepts, by kind (`REGISTRY["solver"]`, `REGISTRY["corrector"]`,
...), each mapped to its [`sdegen.SolverInfo`][] row."""

SOLVERS: dict[str, SolverInfo] = REGISTRY["solver"]
"""Every solver name sdegen accepts, mapped to its [`sdegen.SolverInfo`][] row: how
to build it, whether it suits the reverse SDE and/or the probability-flow ODE, its
order, whether it can step adaptively, its score evaluations per step, and a one-line
description. The same table is printed by `sdegen solvers`."""


def _normalise(name: str) -> str:
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def known(kind: str, predicate: Callable[[SolverInfo], bool] | None = None) -> list[str]:
    """The names of one kind (those whose row satisfies `predicate`)."""
    return [n for n, r in REGISTRY[kind].items() if predicate is None or predicate(r)]


def lookup(kind: str, name: Any, *, arg: str | None = None,
           predicate: Callable[[SolverInfo], bool] | None = None,
           what: str = "") -> SolverInfo:  # fmt: skip
    """The row of `name` among the names of `kind`, or a `ValueError` naming the
    argument `arg` and listing the known names (restricted by `predicate`, described
    by `what`, e.g. `"SDE"`)."""
    arg = arg or kind
    known_names = known(kind, predicate)
    row = REGISTRY[kind].get(_normalise(name)) if isinstance(name, str) else None
    if row is None or (predicate is not None and not predicate(row)):
        qualifier = f" {what}" if what else ""
        raise ValueError(
            f"Unknown{qualifier} {kind} {name!r} for `{arg}`. Known{qualifier} "
            f"{kind} names: {', '.join(known_names)}."
        )
    return row


def _solver_kind(kind: str | None) -> Callable[[SolverInfo], bool] | None:
    if kind is None:
        return None
    return lambda row: getattr(row, kind)


def solver(name: str | diffrax.AbstractSolver, kind: str | None = None) -> diffrax.AbstractSolver:
    """A solver from its name, or the instance itself.

    **Arguments:**

    - `name`: a name from [`sdegen.SOLVERS`][] (case-insensitive; `-` and `_` are
      the same), or any `diffrax.AbstractSolver` instance, returned unchanged.
    - `kind`: `"sde"`, `"ode"` or `None`; when given, a name that does not fit that
      kind of equation raises.

    **Raises:** `ValueError` listing the known names for an unknown name, or naming the
    right kind for a name that does not fit.
    """
    if kind not in (None, "sde", "ode"):
        raise ValueError(f"`kind` must be 'sde', 'ode' or None, got {kind!r}.")
    if isinstance(name, diffrax.AbstractSolver):
        if kind == "ode" and isinstance(name, diffrax.AbstractSRK):
            raise ValueError(
                f"`solver` {type(name).__name__} is a stochastic Runge–Kutta method; "
                "it needs a Brownian motion and cannot solve the probability-flow ODE."
            )
        return name
    if not isinstance(name, str):
        raise ValueError(
            "`solver` must be a solver name (see sdegen.SOLVERS) or a "
            f"diffrax.AbstractSolver instance, got {type(name).__name__}."
        )
    what = "" if kind is None else kind.upper()
    row = lookup("solver", name, arg="solver", predicate=_solver_kind(kind), what=what)
    return row.make()


def solver_info(solver: Any) -> SolverInfo | None:
    """The row of a solver name, or of the row whose class a solver instance has."""
    if isinstance(solver, str):
        return SOLVERS.get(_normalise(solver))
    for row in SOLVERS.values():
        if isinstance(row.make, type) and type(solver) is row.make:
            return row
    return None


def solver_table() -> str:
    """The table of solver names as Markdown, for the CLI and the docs."""
    lines = [
        "| name | SDE | ODE | order | adaptive | calls/step | description |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    yes = lambda b: "yes" if b else "no"
    for n, i in SOLVERS.items():
        lines.append(
            f"| `{n}` | {yes(i.sde)} | {yes(i.ode)} | {i.order} | {yes(i.adaptive)} | "
            f"{i.evals_per_step} | {i.description} |"
        )
    return "\n".join(lines)


def names_table(kind: str) -> str:
    """The rows of one kind as a Markdown table."""
    lines = ["| name | description |", "| --- | --- |"]
    lines += [f"| `{n}` | {r.description} |" for n, r in REGISTRY[kind].items()]
    return "\n".join(lines)
