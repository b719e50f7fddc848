r"""Distances between sample sets, and an honest verdict on the samples of a trained
model.

- [`sdegen.metrics.verdict`][]: the Fréchet distance of the samples to a large
  reference over that of real held-out data at the same sample count, with a
  bootstrap interval and the kernel distance beside it; "cannot tell" when the
  interval covers the difference (docs: concepts/metrics);
- [`sdegen.metrics.kid`][]: the kernel distance, the unbiased squared MMD with the
  cubic polynomial kernel (Bińkowski et al. 2018);
- [`sdegen.metrics.frechet_distance`][]: the Fréchet distance between Gaussians fitted
  to two sample sets, on features (raw coordinates, PCA features, any map);
- [`sdegen.metrics.sample_report`][]: that distance against its data-vs-data floor at
  the same sample count, the samples' mean and std against the data's, and the
  fraction of values outside the data's range;
- [`sdegen.metrics.mmd`][]: the (biased, V-statistic) squared maximum mean discrepancy
  with a sum of Gaussian kernels over several bandwidths;
- [`sdegen.metrics.sliced_wasserstein`][]: the sliced 2-Wasserstein distance, exact in
  1-D along random directions;
- [`sdegen.metrics.component_fractions`][]: how many samples fall in each mixture
  component (by highest responsibility), to check mixture weights.

May import: `_core`, `data`.
"""

from ._distances import (
    PCAFeatures as PCAFeatures,
    component_fractions as component_fractions,
    digit_features as digit_features,
    frechet_distance as frechet_distance,
    gaussian_frechet_distance as gaussian_frechet_distance,
    mmd as mmd,
    sample_report as sample_report,
    sliced_wasserstein as sliced_wasserstein,
)
from ._kid import kid as kid
from ._verdict import verdict as verdict, verdict_text as verdict_text
