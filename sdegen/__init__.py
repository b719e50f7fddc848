"""sdegen: score-based generative modelling with SDEs, in JAX.

The names below the `if TYPE_CHECKING:` line are imported on first use (see
`__getattr__`), so that `import sdegen` does not pay for optax, the networks, the data
sets or the metrics before a program needs them.
"""

import importlib.metadata
from typing import TYPE_CHECKING

from ._engine._brownian import GridBrownianPath as GridBrownianPath
from ._engine._grids import time_grid as time_grid
from ._engine._integrate import (
    RESULTS as RESULTS,
    SolveStats as SolveStats,
    adaptive_solve as adaptive_solve,
    fixed_solve as fixed_solve,
)
from ._engine._projections import decoupling_matrix as decoupling_matrix
from ._engine._solver_table import (
    REGISTRY as REGISTRY,
    SOLVERS as SOLVERS,
    SolverInfo as SolverInfo,
    solver as solver,
)
from ._engine._solvers import (
    DDIM as DDIM,
    AbstractCorrector as AbstractCorrector,
    AbstractDiffusionSolver as AbstractDiffusionSolver,
    AbstractLangevin as AbstractLangevin,
    AbstractProjection as AbstractProjection,
    Ancestral as Ancestral,
    AnnealedLangevinCorrector as AnnealedLangevinCorrector,
    DPMSolver2 as DPMSolver2,
    DPMSolver3 as DPMSolver3,
    DPMSolverPP2M as DPMSolverPP2M,
    DPMSolverPP2MSDE as DPMSolverPP2MSDE,
    EDMSampler as EDMSampler,
    LangevinCorrector as LangevinCorrector,
    PredictorCorrector as PredictorCorrector,
    Projected as Projected,
)
from ._guidance._classifier import (
    TimeClassifier as TimeClassifier,
    classifier_loss as classifier_loss,
    train_classifier as train_classifier,
)
from ._guidance._guidance import (
    Chain as Chain,
    ClassifierFreeGuidedScore as ClassifierFreeGuidedScore,
    ClassifierGuidedScore as ClassifierGuidedScore,
    DPSScore as DPSScore,
    chain as chain,
    classifier_free_guidance as classifier_free_guidance,
    classifier_guidance as classifier_guidance,
    dps_guidance as dps_guidance,
)
from ._guidance._inverse import (
    colorize as colorize,
    inpaint as inpaint,
    solve_inverse as solve_inverse,
)
from ._likelihood._bpd import bits_per_dim as bits_per_dim, dequantize as dequantize
from ._likelihood._likelihood import (
    LikelihoodStats as LikelihoodStats,
    log_likelihood as log_likelihood,
    log_likelihood_batch as log_likelihood_batch,
)
from ._processes._interpolants import (
    CosineInterpolant as CosineInterpolant,
    RectifiedFlow as RectifiedFlow,
)
from ._processes._schedules import (
    VPEpsModel as VPEpsModel,
    cosine_beta_schedule as cosine_beta_schedule,
    linear_beta_schedule as linear_beta_schedule,
    vp_alphas_cumprod as vp_alphas_cumprod,
    vp_betas as vp_betas,
    vp_eps_model as vp_eps_model,
)
from ._processes._sde import (
    EDMSDE as EDMSDE,
    VESDE as VESDE,
    VPSDE as VPSDE,
    AbstractSDE as AbstractSDE,
    SubVPSDE as SubVPSDE,
)
from ._processes._sde_custom import BetaSDE as BetaSDE, CustomSDE as CustomSDE
from ._processes._terms import (
    ScalarDiffusionTerm as ScalarDiffusionTerm,
    ScoreDrift as ScoreDrift,
    forward_terms as forward_terms,
    probability_flow_term as probability_flow_term,
    reverse_terms as reverse_terms,
)
from ._processes._transforms import (
    ChangedScore as ChangedScore,
    VelocityField as VelocityField,
    change_sde as change_sde,
    velocity as velocity,
)
from ._runs._checkpoint import (
    CheckpointError as CheckpointError,
    checkpoint_metadata as checkpoint_metadata,
    latest_checkpoint as latest_checkpoint,
    load_checkpoint as load_checkpoint,
    remove_stray_temp_files as remove_stray_temp_files,
    save_checkpoint as save_checkpoint,
)
from ._runs._distributed import (
    batch_sharding as batch_sharding,
    check_divisible as check_divisible,
    distributed_initialize as distributed_initialize,
    is_main_process as is_main_process,
    load_checkpoint_replicated as load_checkpoint_replicated,
    make_mesh as make_mesh,
    replicate as replicate,
    replicated_sharding as replicated_sharding,
    save_checkpoint_main as save_checkpoint_main,
    shard_batch as shard_batch,
    sharded_step as sharded_step,
    to_host as to_host,
)
from ._sampling._advise import (
    ADVISE_GRIDS as ADVISE_GRIDS,
    DEFAULT_SOLVERS as DEFAULT_SOLVERS,
    Advice as Advice,
    advise as advise,
)
from ._sampling._chunked import (
    log_likelihood_many as log_likelihood_many,
    map_in_chunks as map_in_chunks,
    sample_many as sample_many,
)
from ._sampling._discrete import (
    DiscreteVPSDE as DiscreteVPSDE,
    EpsScore as EpsScore,
    ddim_sample as ddim_sample,
    ddpm_sample as ddpm_sample,
)
from ._sampling._flow import decode as decode, encode as encode
from ._sampling._langevin import (
    annealed_langevin as annealed_langevin,
    max_pairwise_distance as max_pairwise_distance,
    sigma_ladder as sigma_ladder,
)
from ._sampling._pc import pc_sample as pc_sample
from ._sampling._sample import (
    BatchedScore as BatchedScore,
    sample_ode as sample_ode,
    sample_ode_batch as sample_ode_batch,
    sample_sde as sample_sde,
)


if TYPE_CHECKING:  # public names imported on first use: one import line per name
    from . import data as data, metrics as metrics, nn as nn
    from ._runs._export import (
        ModelMeta as ModelMeta,
        build_model as build_model,
        export_model as export_model,
        load_model as load_model,
        sde_from_dict as sde_from_dict,
        sde_to_dict as sde_to_dict,
    )
    from ._runs._logging import MetricsLogger as MetricsLogger
    from ._training._ema import (
        EMAS as EMAS,
        AbstractEMA as AbstractEMA,
        ConstantEMA as ConstantEMA,
        PowerEMA as PowerEMA,
        WarmupEMA as WarmupEMA,
        ema_update as ema_update,
    )
    from ._training._losses import (
        COUPLINGS as COUPLINGS,
        REDUCTIONS as REDUCTIONS,
        TIME_SAMPLINGS as TIME_SAMPLINGS,
        WEIGHTINGS as WEIGHTINGS,
        AbstractTimeSampling as AbstractTimeSampling,
        AbstractWeighting as AbstractWeighting,
        CFMWeighting as CFMWeighting,
        EDMWeighting as EDMWeighting,
        ImportanceTimes as ImportanceTimes,
        LikelihoodWeighting as LikelihoodWeighting,
        LogitNormalTimes as LogitNormalTimes,
        LogNormalTimes as LogNormalTimes,
        Sigma2Weighting as Sigma2Weighting,
        UniformTimes as UniformTimes,
        cfm_loss as cfm_loss,
        ddpm_loss as ddpm_loss,
        dsm_loss as dsm_loss,
        geometric_sigmas as geometric_sigmas,
        ism_loss as ism_loss,
        ncsn_loss as ncsn_loss,
        single_cfm_loss as single_cfm_loss,
        single_ddpm_loss as single_ddpm_loss,
        single_dsm_loss as single_dsm_loss,
        single_ism_loss as single_ism_loss,
        single_ncsn_loss as single_ncsn_loss,
        single_ssm_loss as single_ssm_loss,
        ssm_loss as ssm_loss,
    )
    from ._training._optim import (
        SCHEDULES as SCHEDULES,
        make_optimizer as make_optimizer,
        make_schedule as make_schedule,
    )
    from ._training._train import (
        TrainConfig as TrainConfig,
        TrainState as TrainState,
        make_step as make_step,
    )
    from ._training._train_loop import train as train
    from .data._posterior import (
        MixturePosterior as MixturePosterior,
        MixturePosteriorScore as MixturePosteriorScore,
        mixture_posterior as mixture_posterior,
    )

del TYPE_CHECKING  # not a public name


def __getattr__(name: str):
    from ._core._lazy import load

    return load(__name__, __file__, globals(), name)


def __dir__() -> list[str]:
    from ._core._lazy import lazy_names

    return sorted(set(globals()) | set(lazy_names(__name__, __file__)))


try:
    __version__ = importlib.metadata.version("sdegen")
except importlib.metadata.PackageNotFoundError:  # pragma: no cover
    __version__ = "0.0.0"
