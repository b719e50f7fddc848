"""Data with exact answers (Gaussian mixtures), toy sets and small loaders.

May import: `_core`, `_processes`, `_engine`."""

from ._gmm import (
    GaussianMixture as GaussianMixture,
    GaussianMixtureScore as GaussianMixtureScore,
    NoiseConditionalScore as NoiseConditionalScore,
    eight_gaussians as eight_gaussians,
)
from ._hf import (
    HFFormat as HFFormat,
    hf_format as hf_format,
    load_hf as load_hf,
    to_arrays as to_arrays,
)
from ._images import (
    batch_indices as batch_indices,
    batches as batches,
    load_digits as load_digits,
)
from ._posterior import (
    MixturePosterior as MixturePosterior,
    MixturePosteriorScore as MixturePosteriorScore,
    mixture_posterior as mixture_posterior,
)
from ._source import DatasetSource as DatasetSource
from ._toy import (
    TOY_DATASETS as TOY_DATASETS,
    ToyInfo as ToyInfo,
    checkerboard as checkerboard,
    eight_gaussians_sampler as eight_gaussians_sampler,
    rings as rings,
    swiss_roll as swiss_roll,
    toy as toy,
    two_moons as two_moons,
)
from ._transform import (
    AbstractDataTransform as AbstractDataTransform,
    AffineTransform as AffineTransform,
    ChainTransform as ChainTransform,
    LogitTransform as LogitTransform,
    standardize as standardize,
    transform_from_dict as transform_from_dict,
)
