"""sdegen's own `diffrax.AbstractSolver`s: exponential integrators (DDIM, DPM-Solver,
DPM-Solver++), ancestral sampling, EDM's sampler, the Langevin corrector, and the
predictor–corrector and projection wrappers. One idea a file."""

from ._base import (
    AbstractDiffusionSolver as AbstractDiffusionSolver,
    AbstractGridAware as AbstractGridAware,
    on_grid as on_grid,
)
from ._edm import EDMSampler as EDMSampler
from ._exponential import (
    DDIM as DDIM,
    Ancestral as Ancestral,
    DPMSolver2 as DPMSolver2,
    DPMSolver3 as DPMSolver3,
    DPMSolverPP2M as DPMSolverPP2M,
    DPMSolverPP2MSDE as DPMSolverPP2MSDE,
)
from ._langevin import (
    AbstractCorrector as AbstractCorrector,
    AbstractLangevin as AbstractLangevin,
    AnnealedLangevinCorrector as AnnealedLangevinCorrector,
    LangevinCorrector as LangevinCorrector,
)
from ._wrappers import (
    AbstractProjection as AbstractProjection,
    AbstractWrapper as AbstractWrapper,
    PredictorCorrector as PredictorCorrector,
    Projected as Projected,
)
