"""sdegen: score-based generative modelling with SDEs, in JAX."""

import importlib.metadata

from . import data as data, metrics as metrics
from ._integrate import fixed_solve as fixed_solve
from ._sample import (
    decode as decode,
    encode as encode,
    sample_ode as sample_ode,
    sample_sde as sample_sde,
)
from ._sde import AbstractSDE as AbstractSDE, SubVPSDE as SubVPSDE, VESDE as VESDE, VPSDE as VPSDE
from ._solver_table import SOLVERS as SOLVERS, SolverInfo as SolverInfo, solver as solver
from ._terms import (
    forward_terms as forward_terms,
    probability_flow_term as probability_flow_term,
    reverse_terms as reverse_terms,
    ScalarDiffusionTerm as ScalarDiffusionTerm,
)


try:
    __version__ = importlib.metadata.version("sdegen")
except importlib.metadata.PackageNotFoundError:  # pragma: no cover
    __version__ = "0.0.0"
