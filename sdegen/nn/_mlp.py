r"""A time-conditioned MLP for vector data."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Float, Int

from .._core._custom_types import KeyArray, RealScalarLike
from .._core._misc import default_float
from ._embedding import (
    AbstractEmbedding,
    FourierFeatures,
    LabelEmbedding,
    check_label,
    init_params,
)


def _build_mlp(key, e, data_size, width, depth, num_classes):
    """Create the layers (all but the time embedding, of size `e`)."""
    dtype = default_float()
    kt1, kt2, klab, kin, kout, khid = jr.split(key, 6)
    time_mlp = (
        eqx.nn.Linear(e, width, dtype=dtype, key=kt1),
        eqx.nn.Linear(width, width, dtype=dtype, key=kt2),
    )
    label_embedding = (
        None if num_classes is None else LabelEmbedding(num_classes, width, key=klab)
    )
    layer_in = eqx.nn.Linear(data_size + width, width, dtype=dtype, key=kin)
    keys = jr.split(khid, 2 * (depth - 1)) if depth > 1 else []
    hidden = [
        eqx.nn.Linear(width, width, dtype=dtype, key=keys[2 * i])
        for i in range(depth - 1)
    ]
    cond_proj = [
        eqx.nn.Linear(width, width, dtype=dtype, key=keys[2 * i + 1])
        for i in range(depth - 1)
    ]
    layer_out = eqx.nn.Linear(width, data_size, dtype=dtype, key=kout)
    return dict(
        time_mlp=time_mlp,
        label_embedding=label_embedding,
        layer_in=layer_in,
        hidden=hidden,
        cond_proj=cond_proj,
        layer_out=layer_out,
    )


class MLP(eqx.Module):
    r"""A multilayer perceptron $F(t, x)$ for vector data $x \in \mathbb{R}^d$,
    conditioned on a scalar $t$ (and optionally a class label).

    With $c = W_2\,\mathrm{SiLU}(W_1 \gamma(t)) + e(y)$, where $\gamma$ is the time
    embedding ([`sdegen.nn.FourierFeatures`][] by default) and $e(y)$ the optional label
    embedding,

    $$h_0 = \mathrm{SiLU}(A_0 [x; c]),\qquad
    h_{i} = \mathrm{SiLU}(A_i h_{i-1} + B_i c)\ (1 \le i < \text{depth}),\qquad
    F = A_{\text{out}} h_{\text{depth}-1}:$$

    the conditioning is concatenated to the input and added again in every hidden
    layer. Called unbatched as `model(t, x, *, label=None, key=None)` and returns an
    array of `x`'s shape; wrap it in a parametrisation
    ([`sdegen.nn.ScoreParam`][], [`sdegen.nn.NoiseParam`][],
    [`sdegen.nn.EDMPreconditioner`][]) to get a score.
    """

    embedding: AbstractEmbedding
    time_mlp: tuple[eqx.nn.Linear, eqx.nn.Linear]
    label_embedding: LabelEmbedding | None
    layer_in: eqx.nn.Linear
    hidden: list[eqx.nn.Linear]
    cond_proj: list[eqx.nn.Linear]
    layer_out: eqx.nn.Linear
    data_size: int = eqx.field(static=True)

    def __init__(
        self,
        data_size: int,
        width: int = 256,
        depth: int = 3,
        *,
        key: KeyArray,
        embed_dim: int = 64,
        num_classes: int | None = None,
        time_embedding: AbstractEmbedding | None = None,
    ):
        r"""**Arguments:**

        - `data_size`: dimension $d$ of the data.
        - `width`: hidden width, default 256.
        - `depth`: number of hidden layers (at least 1), default 3.
        - `key`: PRNG key for the initial parameters.
        - `embed_dim`: size of the default Fourier time embedding, default 64.
        - `num_classes`: if given, condition on labels in $\{0, \dots, K-1\}$ plus the
          null label $K$ (`label=None`), for classifier-free guidance.
        - `time_embedding`: any [`sdegen.nn.AbstractEmbedding`][] of $t$; default
          `FourierFeatures(embed_dim, scale=16)`. Use
          `SinusoidalEmbedding(embed_dim)` for integer DDPM steps.
        """
        for name, v in (("data_size", data_size), ("width", width), ("depth", depth)):
            if int(v) != v or v <= 0:
                raise ValueError(f"`{name}` must be a positive int, got {v!r}.")
        if time_embedding is not None and not isinstance(
            time_embedding, AbstractEmbedding
        ):
            raise ValueError(
                "`time_embedding` must be an sdegen.nn.AbstractEmbedding, got "
                f"{type(time_embedding).__name__}."
            )
        data_size, width, depth = int(data_size), int(width), int(depth)
        kemb, kparts = jr.split(key)
        if time_embedding is None:
            time_embedding = init_params(
                lambda k: FourierFeatures(int(embed_dim), key=k), kemb
            )
        self.embedding = time_embedding
        e = time_embedding.embed_dim
        n = None if num_classes is None else int(num_classes)
        parts = init_params(
            lambda k: _build_mlp(k, e, data_size, width, depth, n), kparts
        )
        self.time_mlp = parts["time_mlp"]
        self.label_embedding = parts["label_embedding"]
        self.layer_in = parts["layer_in"]
        self.hidden = parts["hidden"]
        self.cond_proj = parts["cond_proj"]
        self.layer_out = parts["layer_out"]
        self.data_size = data_size

    def __call__(
        self,
        t: RealScalarLike,
        x: Float[ArrayLike, " d"],
        *,
        label: Int[ArrayLike, ""] | None = None,
        key: KeyArray | None = None,
    ) -> Float[Array, " d"]:
        """**Arguments:**

        - `t`: a scalar time (or noise level, or integer step).
        - `x`: one example of shape `(data_size,)`.
        - `label`: optional integer class label (requires `num_classes`); `None` is
          the null class.
        - `key`: unused (the MLP is deterministic); accepted for a uniform signature.

        **Returns:** an array of shape `(data_size,)`.
        """
        del key
        x = jnp.asarray(x)
        if x.shape != (self.data_size,):
            raise ValueError(
                f"`x` must be one example of shape ({self.data_size},), got shape "
                f"{x.shape}; use jax.vmap for a batch."
            )
        check_label(label, self.label_embedding)
        l1, l2 = self.time_mlp
        c = l2(jax.nn.silu(l1(self.embedding(t))))
        if self.label_embedding is not None:
            c = c + self.label_embedding(label)
        h = jax.nn.silu(self.layer_in(jnp.concatenate([x, c])))
        for lin, proj in zip(self.hidden, self.cond_proj):
            h = jax.nn.silu(lin(h) + proj(c))
        return self.layer_out(h)
