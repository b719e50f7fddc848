"""The one table that maps solver names to diffrax solvers.

Names are a convenience at the edge: every function that takes a solver name also
takes any `diffrax.AbstractSolver` instance.
"""

from collections.abc import Callable
from dataclasses import dataclass

import diffrax


@dataclass(frozen=True)
class SolverInfo:
    """One row of [`sdegen.SOLVERS`][]."""

    name: str
    make: Callable[[], diffrax.AbstractSolver]
    sde: bool
    """Usable on the reverse SDE (additive noise)."""
    ode: bool
    """Usable on the probability-flow ODE."""
    order: str
    """Convergence order: strong order on additive-noise SDEs and/or ODE order."""
    adaptive: bool
    """Has an embedded error estimate, so works with a PID step-size controller."""
    description: str


def _row(name, make, sde, ode, order, adaptive, description):
    return name, SolverInfo(name, make, sde, ode, order, adaptive, description)


SOLVERS: dict[str, SolverInfo] = dict(
    [
        _row("euler_maruyama", diffrax.Euler, True, False, "SDE 1.0", False,
             "Euler–Maruyama: one score call per step; the classic sampler."),
        _row("euler", diffrax.Euler, False, True, "ODE 1", False,
             "Explicit Euler on the probability-flow ODE."),
        _row("heun", diffrax.Heun, True, True, "SDE 1.0 / ODE 2", True,
             "Heun's method (EDM's second-order sampler); two calls per step."),
        _row("euler_heun", diffrax.EulerHeun, True, False, "SDE 1.0", False,
             "Euler–Heun, a Stratonovich predictor–corrector scheme."),
        _row("midpoint", diffrax.Midpoint, True, True, "SDE 1.0 / ODE 2", True,
             "Explicit midpoint; two calls per step."),
        _row("ralston", diffrax.Ralston, True, True, "SDE 1.0 / ODE 2", True,
             "Ralston's second-order method with minimal truncation error."),
        _row("sra1", diffrax.SRA1, True, False, "SDE 1.5", True,
             "Rößler's SRA1 stochastic Runge–Kutta for additive noise."),
        _row("shark", diffrax.ShARK, True, False, "SDE 1.5", True,
             "ShARK: SRK for additive noise using space-time Lévy area."),
        _row("sea", diffrax.SEA, True, False, "SDE 1.0", False,
             "Shifted Euler: cheap SRK for additive noise."),
        _row("spark", diffrax.SPaRK, True, False, "SDE 1.5", True,
             "SPaRK: SRK built for adaptive stepping."),
        _row("general_shark", diffrax.GeneralShARK, True, False, "SDE 1.5", True,
             "ShARK for general (non-additive) noise."),
        _row("slow_rk", diffrax.SlowRK, True, False, "SDE 1.5", True,
             "SLOW-RK for commutative noise."),
        _row("bosh3", diffrax.Bosh3, False, True, "ODE 3", True,
             "Bogacki–Shampine 3(2)."),
        _row("tsit5", diffrax.Tsit5, False, True, "ODE 5", True,
             "Tsitouras 5(4): the usual adaptive default."),
        _row("dopri5", diffrax.Dopri5, False, True, "ODE 5", True,
             "Dormand–Prince 5(4), the RK45 of scipy and torchdiffeq."),
        _row("dopri8", diffrax.Dopri8, False, True, "ODE 8", True,
             "Dormand–Prince 8(7) for tight tolerances."),
    ]
)  # fmt: skip
"""Every solver name sdegen accepts, mapped to its [`sdegen.SolverInfo`][] row:
the diffrax class, whether it suits the reverse SDE and/or the probability-flow ODE,
its order, whether it can step adaptively, and a one-line description. The same
table is printed by `sdegen solvers`."""


def _normalise(name: str) -> str:
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def _unknown(name, kind: str | None) -> ValueError:
    names = [n for n, i in SOLVERS.items() if kind is None or getattr(i, kind)]
    what = "" if kind is None else f" {kind.upper()}"
    return ValueError(
        f"Unknown{what} solver {name!r}. Known{what} solver names: {', '.join(names)}. "
        "Any diffrax.AbstractSolver instance is accepted too."
    )


def solver(name: str | diffrax.AbstractSolver, kind: str | None = None) -> diffrax.AbstractSolver:
    """A diffrax solver from its name, or the instance itself.

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
    info = SOLVERS.get(_normalise(name))
    if info is None:
        raise _unknown(name, kind)
    if kind is not None and not getattr(info, kind):
        raise _unknown(name, kind)
    return info.make()


def solver_table() -> str:
    """The table of solver names as Markdown, for the CLI and the docs."""
    lines = [
        "| name | SDE | ODE | order | adaptive | description |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for n, i in SOLVERS.items():
        yes = lambda b: "yes" if b else "no"
        lines.append(
            f"| `{n}` | {yes(i.sde)} | {yes(i.ode)} | {i.order} | {yes(i.adaptive)} | "
            f"{i.description} |"
        )
    return "\n".join(lines)
