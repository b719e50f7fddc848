"""Data with exact answers (Gaussian mixtures), toy sets and small loaders."""

from ._gmm import (
    GaussianMixture as GaussianMixture,
    GaussianMixtureScore as GaussianMixtureScore,
    NoiseConditionalScore as NoiseConditionalScore,
    eight_gaussians as eight_gaussians,
)
from ._posterior import (
    MixturePosterior as MixturePosterior,
    MixturePosteriorScore as MixturePosteriorScore,
    mixture_posterior as mixture_posterior,
)
from ._images import (
    batch_indices as batch_indices,
    batches as batches,
    load_digits as load_digits,
    load_hf as load_hf,
)
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
