"""Score networks (equinox Modules called unbatched as `model(t, x)`), time and label
embeddings, and parametrisations that turn a network into a score.

May import: `_core`, `_processes`."""

from ._embedding import (
    AbstractEmbedding as AbstractEmbedding,
    FourierFeatures as FourierFeatures,
    LabelEmbedding as LabelEmbedding,
    SinusoidalEmbedding as SinusoidalEmbedding,
)
from ._mlp import MLP as MLP
from ._param import (
    AbstractParametrisation as AbstractParametrisation,
    EDMPreconditioner as EDMPreconditioner,
    NoiseParam as NoiseParam,
    ScoreParam as ScoreParam,
    VelocityParam as VelocityParam,
)
from ._plain_mlp import CentredCosine as CentredCosine, PlainMLP as PlainMLP
from ._unet import UNet as UNet
