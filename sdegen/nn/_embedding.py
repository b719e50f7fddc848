r"""Embeddings of a scalar time / noise level into a vector, for conditioning networks.

- [`sdegen.nn.FourierFeatures`][]: Gaussian random Fourier features
  $[\sin(2\pi t W), \cos(2\pi t W)]$ with fixed $W \sim \mathcal{N}(0, s^2)$
  (Tancik et al. 2020; used for continuous time by Song et al. 2021).
- [`sdegen.nn.SinusoidalEmbedding`][]: the transformer position encoding
  (Vaswani et al. 2017) used by DDPM (Ho et al. 2020) for integer steps, or for
  $\log\sigma$.
"""

import abc
import math
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from .._core._custom_types import KeyArray, RealScalarLike
from .._core._misc import default_float, is_concrete


def _check_embed_dim(embed_dim) -> int:
    if int(embed_dim) != embed_dim or embed_dim <= 0 or embed_dim % 2 != 0:
        raise ValueError(f"`embed_dim` must be a positive even int, got {embed_dim!r}.")
    return int(embed_dim)


class AbstractEmbedding(eqx.Module):
    r"""Maps a scalar $t$ (a time, a noise level or an integer step) to a vector of
    size `embed_dim`. Called as `embedding(t)` on one scalar."""

    embed_dim: eqx.AbstractVar[int]

    @abc.abstractmethod
    def __call__(self, t: RealScalarLike) -> Float[Array, " embed_dim"]:
        """**Arguments:** `t`, a scalar. **Returns:** a vector of size `embed_dim`."""


class FourierFeatures(AbstractEmbedding):
    r"""Gaussian random Fourier features of a scalar time,

    $$\gamma(t) = \big[\sin(2\pi t W_1), \dots, \sin(2\pi t W_{m}),
    \cos(2\pi t W_1), \dots, \cos(2\pi t W_m)\big],\qquad
    W_i \sim \mathcal{N}(0, s^2),\ m = \text{embed\_dim}/2.$$

    The frequencies $W$ are drawn once and are **not trained**: the call applies
    `jax.lax.stop_gradient` to them, so their gradient is exactly zero. Source:
    Tancik et al. 2020, "Fourier Features Let Networks Learn High Frequency
    Functions"; used for the time input of the continuous-time score networks of
    Song et al. 2021.
    """

    W: Float[Array, " half"]
    embed_dim: int = eqx.field(static=True)
    scale: float = eqx.field(static=True)

    def __init__(self, embed_dim: int = 64, scale: float = 16.0, *, key: KeyArray):
        r"""**Arguments:**

        - `embed_dim`: output size (even).
        - `scale`: standard deviation $s$ of the frequencies, default 16 (as in
          score_sde). For times in $[0, 1]$ values between 1 and 30 work; use smaller
          ones when the input has a larger range.
        - `key`: PRNG key for the frequencies.
        """
        self.embed_dim = _check_embed_dim(embed_dim)
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"`scale` must be finite and > 0, got {scale!r}.")
        self.scale = float(scale)
        self.W = self.scale * jr.normal(key, (self.embed_dim // 2,), default_float())

    def __call__(self, t: RealScalarLike) -> Float[Array, " embed_dim"]:
        W = jax.lax.stop_gradient(self.W)
        arg = 2 * math.pi * jnp.asarray(t, W.dtype) * W
        return jnp.concatenate([jnp.sin(arg), jnp.cos(arg)])


class SinusoidalEmbedding(AbstractEmbedding):
    r"""Transformer-style sinusoidal embedding of a scalar,

    $$\gamma(t) = \big[\sin(c\,t\,\omega_i)\big]_{i<m} \oplus
    \big[\cos(c\,t\,\omega_i)\big]_{i<m},\qquad
    \omega_i = P^{-i/m},\ m = \text{embed\_dim}/2,$$

    with maximum period $P$ (`max_period`) and input multiplier $c$ (`scale`). It has
    no parameters. Use `scale=1` for integer DDPM steps $n \in \{0, \dots, N-1\}$, and
    e.g. `scale=1000` for continuous $t \in [0, 1]$. Sources: Vaswani et al. 2017
    ("Attention Is All You Need"), Ho et al. 2020 (DDPM).
    """

    embed_dim: int = eqx.field(static=True)
    max_period: float = eqx.field(static=True)
    scale: float = eqx.field(static=True)

    def __init__(
        self, embed_dim: int = 64, max_period: float = 10000.0, scale: float = 1.0
    ):
        """**Arguments:**

        - `embed_dim`: output size (even).
        - `max_period`: the longest period $P$, default 10000.
        - `scale`: multiplier $c$ applied to the input first, default 1.
        """
        self.embed_dim = _check_embed_dim(embed_dim)
        if not (math.isfinite(max_period) and max_period > 1):
            raise ValueError(
                f"`max_period` must be finite and > 1, got {max_period!r}."
            )
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"`scale` must be finite and > 0, got {scale!r}.")
        self.max_period = float(max_period)
        self.scale = float(scale)

    def __call__(self, t: RealScalarLike) -> Float[Array, " embed_dim"]:
        half = self.embed_dim // 2
        dtype = default_float()
        freqs = jnp.exp(
            -math.log(self.max_period) * jnp.arange(half, dtype=dtype) / half
        )
        arg = self.scale * jnp.asarray(t, dtype) * freqs
        return jnp.concatenate([jnp.sin(arg), jnp.cos(arg)])


class LabelEmbedding(eqx.Module):
    r"""A learned embedding of a class label $y \in \{0, \dots, K-1\}$ with one extra
    **null** class $K$ (= `num_classes`) for the unconditional branch of
    classifier-free guidance (Ho & Salimans 2022). Called as `embedding(label)`;
    `label=None` selects the null class.
    """

    embedding: eqx.nn.Embedding
    num_classes: int = eqx.field(static=True)

    def __init__(self, num_classes: int, embed_dim: int, *, key: KeyArray):
        """**Arguments:**

        - `num_classes`: number $K$ of real classes; the table has $K + 1$ rows.
        - `embed_dim`: size of each embedding vector.
        - `key`: PRNG key for the initial table.
        """
        if int(num_classes) != num_classes or num_classes <= 0:
            raise ValueError(
                f"`num_classes` must be a positive int or None, got {num_classes!r}."
            )
        self.num_classes = int(num_classes)
        self.embedding = eqx.nn.Embedding(
            self.num_classes + 1, int(embed_dim), dtype=default_float(), key=key
        )

    @property
    def null_label(self) -> int:
        """The index of the null (unconditional) class, equal to `num_classes`."""
        return self.num_classes

    def __call__(self, label: Int[ArrayLike, ""] | None) -> Float[Array, " embed_dim"]:
        if label is None:
            index = jnp.asarray(self.num_classes)
        else:
            index = jnp.asarray(label)
            if not jnp.issubdtype(index.dtype, jnp.integer):
                raise ValueError(
                    f"`label` must be an integer, got dtype {index.dtype}."
                )
            if is_concrete(index):
                if not 0 <= int(index) <= self.num_classes:
                    raise ValueError(
                        f"`label` must be in [0, {self.num_classes}] "
                        f"({self.num_classes} = the null class), got {int(index)}."
                    )
            else:
                index = eqx.error_if(
                    index,
                    (index < 0) | (index > self.num_classes),
                    f"`label` must be in [0, {self.num_classes}].",
                )
        return self.embedding(index)


def check_label(label, label_embedding: "LabelEmbedding | None") -> None:
    """Raise if a label is given to an unconditional network."""
    if label is not None and label_embedding is None:
        raise ValueError(
            "`label` was given but the network is unconditional; build it with "
            "`num_classes=K` to condition on labels."
        )


def init_params(build: Callable[[Any], Any], key: KeyArray) -> Any:
    r"""Call `build(key)` to create a tree of layers, but draw the parameters on the
    host with NumPy (seeded from `key`'s raw data) instead of with one JAX random
    kernel per layer shape.

    Eager initialisation of a network with a few dozen differently-shaped layers
    compiles one small threefry kernel per shape, which costs tens of CPU seconds for
    a U-Net; here the structure comes from `eqx.filter_eval_shape` (no compilation)
    and the values from the same distributions equinox uses: $\mathcal{U}(-1/\sqrt{
    \text{fan-in}}, 1/\sqrt{\text{fan-in}})$ for `Linear`/`Conv` weights and biases,
    ones and zeros for `GroupNorm`/`LayerNorm`, $\mathcal{N}(0, 1)$ for `Embedding`,
    $\mathcal{N}(0, s^2)$ for [`sdegen.nn.FourierFeatures`][]. If `key` is traced
    (e.g. models built under `jax.vmap`), `build(key)` is called as is.
    """
    if not is_concrete(key):
        return build(key)
    skeleton = eqx.filter_eval_shape(build, key)
    raw = jr.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    rng = np.random.default_rng(np.asarray(raw).astype(np.uint32).ravel().tolist())
    dtype = default_float()

    def uniform(struct, lim):
        if struct is None:
            return None
        return jnp.asarray(rng.uniform(-lim, lim, struct.shape), struct.dtype)

    def fill(layer):
        if isinstance(layer, eqx.nn.Linear | eqx.nn.Conv):
            lim = 1 / math.sqrt(max(1, math.prod(layer.weight.shape[1:])))
            new = (uniform(layer.weight, lim), uniform(layer.bias, lim))
            return eqx.tree_at(
                lambda m: (m.weight, m.bias), layer, new, is_leaf=lambda x: x is None
            )
        if isinstance(layer, eqx.nn.GroupNorm | eqx.nn.LayerNorm):
            if layer.weight is None:
                return layer
            new = (
                jnp.ones(layer.weight.shape, layer.weight.dtype),
                jnp.zeros(layer.bias.shape, layer.bias.dtype),
            )
            return eqx.tree_at(lambda m: (m.weight, m.bias), layer, new)
        if isinstance(layer, eqx.nn.Embedding):
            w = rng.standard_normal(layer.weight.shape)
            return eqx.tree_at(lambda m: m.weight, layer, jnp.asarray(w, dtype))
        if isinstance(layer, FourierFeatures):
            w = layer.scale * rng.standard_normal(layer.W.shape)
            return eqx.tree_at(lambda m: m.W, layer, jnp.asarray(w, layer.W.dtype))
        return layer

    layer_types = (
        eqx.nn.Linear,
        eqx.nn.Conv,
        eqx.nn.GroupNorm,
        eqx.nn.LayerNorm,
        eqx.nn.Embedding,
        FourierFeatures,
    )
    out = jax.tree_util.tree_map(
        fill, skeleton, is_leaf=lambda x: isinstance(x, layer_types)
    )
    if any(
        isinstance(leaf, jax.ShapeDtypeStruct)
        for leaf in jax.tree_util.tree_leaves(out)
    ):
        # a layer type without a host-side rule: fall back to JAX initialisation
        return build(key)
    return out
