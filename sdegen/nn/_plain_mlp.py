r"""A plain MLP on $[x; \phi(t)]$: the network of many small JAX diffusion examples."""

import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Float

from .._core._custom_types import KeyArray, RealScalarLike
from .._core._misc import default_float
from ._embedding import AbstractEmbedding, init_params


class CentredCosine(AbstractEmbedding):
    r"""The two time features $\phi(t) = [t - \tfrac12,\ \cos 2\pi t]$ of
    diffusionjax's examples, for times $t \in [0, 1]$; no parameters."""

    embed_dim: int = eqx.field(static=True, default=2)

    def __call__(self, t: RealScalarLike) -> Float[Array, " 2"]:
        t = jnp.asarray(t, default_float())
        return jnp.stack([t - 0.5, jnp.cos(2 * math.pi * t)])


class PlainMLP(eqx.Module):
    r"""A plain multilayer perceptron $F(t, x)$ for vector data $x \in \mathbb{R}^d$:
    the time enters once, as features concatenated to the input,

    $$h_0 = [x;\ \phi(t)],\qquad h_i = a(A_i h_{i-1} + b_i)\ (1 \le i \le
    \text{depth}),\qquad F = A_{\text{out}} h_{\text{depth}} + b_{\text{out}},$$

    with activation $a$ (ReLU by default) and time features $\phi$
    ([`sdegen.nn.CentredCosine`][], $[t - \frac12, \cos 2\pi t]$, by default, or any
    [`sdegen.nn.AbstractEmbedding`][]). There is no time sub-network and no
    per-layer conditioning: this is the network of many small JAX examples (e.g.
    diffusionjax's `examples/example.py`, 3 × 256 ReLU), with $(d + 2) w + (\text{depth}
    - 1)(w^2 + w) + w + (w + 1) d$ parameters ($w$ = `width`), against the
    [`sdegen.nn.MLP`][]'s time MLP and per-layer projections. Called unbatched as
    `model(t, x, *, key=None)`; wrap it in a parametrisation
    ([`sdegen.nn.NoiseParam`][] for noise prediction) to get a score.
    """

    embedding: AbstractEmbedding
    layers: list[eqx.nn.Linear]
    layer_out: eqx.nn.Linear
    activation: Callable = eqx.field(static=True)
    data_size: int = eqx.field(static=True)

    def __init__(
        self,
        data_size: int,
        width: int = 256,
        depth: int = 3,
        *,
        key: KeyArray,
        activation: Callable[[Array], Array] = jax.nn.relu,
        time_embedding: AbstractEmbedding | None = None,
    ):
        r"""**Arguments:**

        - `data_size`: dimension $d$ of the data.
        - `width`: hidden width $w$, default 256.
        - `depth`: number of hidden layers (at least 1), default 3.
        - `key`: PRNG key for the initial parameters (drawn as `eqx.nn.Linear`
          draws them, $\mathcal{U}(\pm 1/\sqrt{\text{fan-in}})$).
        - `activation`: $a$, default `jax.nn.relu`.
        - `time_embedding`: the time features $\phi$; default
          [`sdegen.nn.CentredCosine`][]`()`.
        """
        for name, v in (("data_size", data_size), ("width", width), ("depth", depth)):
            if isinstance(v, bool) or int(v) != v or v <= 0:
                raise ValueError(f"`{name}` must be a positive int, got {v!r}.")
        if time_embedding is None:
            time_embedding = CentredCosine()
        if not isinstance(time_embedding, AbstractEmbedding):
            raise ValueError(
                "`time_embedding` must be an sdegen.nn.AbstractEmbedding, got "
                f"{type(time_embedding).__name__}."
            )
        if not callable(activation):
            raise ValueError(f"`activation` must be callable, got {activation!r}.")
        data_size, width, depth = int(data_size), int(width), int(depth)
        sizes = [data_size + time_embedding.embed_dim] + [width] * depth
        dtype = default_float()

        def build(k):
            keys = jr.split(k, depth + 1)
            layers = [eqx.nn.Linear(a, b, dtype=dtype, key=kk)
                      for a, b, kk in zip(sizes[:-1], sizes[1:], keys[:-1])]  # fmt: skip
            return layers, eqx.nn.Linear(width, data_size, dtype=dtype, key=keys[-1])

        self.layers, self.layer_out = init_params(build, key)
        self.embedding = time_embedding
        self.activation = activation
        self.data_size = data_size

    def __call__(
        self,
        t: RealScalarLike,
        x: Float[ArrayLike, " d"],
        *,
        key: KeyArray | None = None,
    ) -> Float[Array, " d"]:
        """**Arguments:**

        - `t`: a scalar time.
        - `x`: one example of shape `(data_size,)`.
        - `key`: unused (the network is deterministic); accepted for a uniform
          signature.

        **Returns:** an array of shape `(data_size,)`.
        """
        del key
        x = jnp.asarray(x)
        if x.shape != (self.data_size,):
            raise ValueError(
                f"`x` must be one example of shape ({self.data_size},), got shape "
                f"{x.shape}; use jax.vmap for a batch."
            )
        h = jnp.concatenate([x, self.embedding(t).astype(x.dtype)])
        for lin in self.layers:
            h = self.activation(lin(h))
        return self.layer_out(h)
