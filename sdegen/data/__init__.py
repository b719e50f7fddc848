"""Data with exact answers (Gaussian mixtures), toy sets and small loaders."""

from ._gmm import (
    eight_gaussians as eight_gaussians,
    GaussianMixture as GaussianMixture,
    GaussianMixtureScore as GaussianMixtureScore,
    NoiseConditionalScore as NoiseConditionalScore,
)
