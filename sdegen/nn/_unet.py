r"""A small time-conditioned U-Net for images, after DDPM (Ho et al. 2020)."""

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


def _subkey(key, i: int):
    return None if key is None else jr.fold_in(key, i)


class _ResBlock(eqx.Module):
    r"""$h = \mathrm{Conv}(\mathrm{Drop}(\mathrm{SiLU}(\mathrm{GN}(\mathrm{Conv}(
    \mathrm{SiLU}(\mathrm{GN}(x))) + W e))))$, output $\mathrm{skip}(x) + h$."""

    norm1: eqx.nn.GroupNorm
    conv1: eqx.nn.Conv2d
    temb_proj: eqx.nn.Linear
    norm2: eqx.nn.GroupNorm
    dropout: eqx.nn.Dropout
    conv2: eqx.nn.Conv2d
    skip: eqx.nn.Conv2d | None

    def __init__(self, c_in, c_out, temb_dim, num_groups, dropout, *, key):
        k1, k2, k3, k4 = jr.split(key, 4)
        dtype = default_float()
        self.norm1 = eqx.nn.GroupNorm(num_groups, c_in, dtype=dtype)
        self.conv1 = eqx.nn.Conv2d(c_in, c_out, 3, padding=1, dtype=dtype, key=k1)
        self.temb_proj = eqx.nn.Linear(temb_dim, c_out, dtype=dtype, key=k2)
        self.norm2 = eqx.nn.GroupNorm(num_groups, c_out, dtype=dtype)
        self.dropout = eqx.nn.Dropout(dropout)
        self.conv2 = eqx.nn.Conv2d(c_out, c_out, 3, padding=1, dtype=dtype, key=k3)
        self.skip = (
            None
            if c_in == c_out
            else eqx.nn.Conv2d(c_in, c_out, 1, dtype=dtype, key=k4)
        )

    def __call__(self, x, temb, key):
        h = self.conv1(jax.nn.silu(self.norm1(x)))
        h = h + self.temb_proj(jax.nn.silu(temb))[:, None, None]
        h = jax.nn.silu(self.norm2(h))
        h = self.dropout(h, key=key, inference=key is None)
        h = self.conv2(h)
        if self.skip is not None:
            x = self.skip(x)
        return x + h


class _Attention(eqx.Module):
    r"""Residual multi-head self-attention over the $H W$ pixels of a GroupNorm-ed
    feature map."""

    norm: eqx.nn.GroupNorm
    attention: eqx.nn.MultiheadAttention

    def __init__(self, channels, num_heads, num_groups, *, key):
        dtype = default_float()
        self.norm = eqx.nn.GroupNorm(num_groups, channels, dtype=dtype)
        self.attention = eqx.nn.MultiheadAttention(
            num_heads, channels, dtype=dtype, key=key
        )

    def __call__(self, x):
        c, h, w = x.shape
        y = self.norm(x).reshape(c, h * w).T
        y = self.attention(y, y, y)
        return x + y.T.reshape(c, h, w)


class _Level(eqx.Module):
    blocks: list[_ResBlock]
    attentions: list[_Attention | None]
    resample: eqx.nn.Conv2d | None


def _build_unet(
    key,
    embed_dim,
    in_channels,
    base_channels,
    mults,
    num_res_blocks,
    attn_ds,
    num_heads,
    num_groups,
    dropout,
    num_classes,
):
    """Create the U-Net's layers (all but the time embedding, of size `embed_dim`)."""
    dtype = default_float()
    keys = iter(jr.split(key, 64 + 8 * len(mults) * (num_res_blocks + 2)))
    temb_dim = 4 * base_channels
    time_mlp = (
        eqx.nn.Linear(embed_dim, temb_dim, dtype=dtype, key=next(keys)),
        eqx.nn.Linear(temb_dim, temb_dim, dtype=dtype, key=next(keys)),
    )
    label_embedding = (
        None
        if num_classes is None
        else LabelEmbedding(num_classes, temb_dim, key=next(keys))
    )
    conv_in = eqx.nn.Conv2d(
        in_channels, base_channels, 3, padding=1, dtype=dtype, key=next(keys)
    )

    def block(c_in, c_out):
        return _ResBlock(c_in, c_out, temb_dim, num_groups, dropout, key=next(keys))

    def attention(ch, use):
        return _Attention(ch, num_heads, num_groups, key=next(keys)) if use else None

    ch = base_channels
    skip_channels = [ch]
    down = []
    for i, m in enumerate(mults):
        blocks, attns = [], []
        for _ in range(num_res_blocks):
            blocks.append(block(ch, base_channels * m))
            ch = base_channels * m
            attns.append(attention(ch, 2**i in attn_ds))
            skip_channels.append(ch)
        resample = None
        if i != len(mults) - 1:
            resample = eqx.nn.Conv2d(
                ch, ch, 3, stride=2, padding=1, dtype=dtype, key=next(keys)
            )
            skip_channels.append(ch)
        down.append(_Level(blocks, attns, resample))
    down = down
    mid = (block(ch, ch), attention(ch, True), block(ch, ch))
    up = []
    for i in reversed(range(len(mults))):
        m = mults[i]
        blocks, attns = [], []
        for _ in range(num_res_blocks + 1):
            blocks.append(block(ch + skip_channels.pop(), base_channels * m))
            ch = base_channels * m
            attns.append(attention(ch, 2**i in attn_ds))
        resample = None
        if i != 0:
            resample = eqx.nn.Conv2d(ch, ch, 3, padding=1, dtype=dtype, key=next(keys))
        up.append(_Level(blocks, attns, resample))
    up = up
    norm_out = eqx.nn.GroupNorm(num_groups, ch, dtype=dtype)
    conv_out = eqx.nn.Conv2d(ch, in_channels, 3, padding=1, dtype=dtype, key=next(keys))
    return dict(
        time_mlp=time_mlp,
        label_embedding=label_embedding,
        conv_in=conv_in,
        down=down,
        mid=mid,
        up=up,
        norm_out=norm_out,
        conv_out=conv_out,
    )


class UNet(eqx.Module):
    r"""A U-Net $F(t, x)$ for images $x$ of shape `(C, H, W)` (channels first),
    conditioned on a scalar $t$ and optionally a class label, after the DDPM network
    (Ho et al. 2020; Song et al. 2021 use the same skeleton):

    - the time embedding $e = W_2\,\mathrm{SiLU}(W_1\gamma(t))$ (+ the label
      embedding) is added inside every residual block;
    - residual blocks: GroupNorm, SiLU, 3x3 convolution, + projected $e$, GroupNorm,
      SiLU, dropout, 3x3 convolution, with a 1x1 convolution on the skip path when the
      channel count changes;
    - level $i$ has `base_channels * channel_mults[i]` channels and works at
      resolution $H/2^i$; levels are joined by a stride-2 convolution (down) and
      nearest-neighbour upsampling + a 3x3 convolution (up);
    - residual multi-head self-attention after each residual block of the levels
      whose downsampling factor $2^i$ is in `attention_resolutions`, and always in
      the middle block (lowest resolution);
    - every activation of the down path is concatenated to the matching block of the
      up path (skip connections).

    Called unbatched as `model(t, x, *, label=None, key=None)`; `key` is only used by
    dropout (no key = inference mode). $H$ and $W$ must be divisible by
    $2^{L-1}$ with $L$ = `len(channel_mults)`. The defaults are small (about 0.7 M
    parameters) so that 8x8 digits train on a CPU in minutes.
    """

    embedding: AbstractEmbedding
    time_mlp: tuple[eqx.nn.Linear, eqx.nn.Linear]
    label_embedding: LabelEmbedding | None
    conv_in: eqx.nn.Conv2d
    down: list[_Level]
    mid: tuple[_ResBlock, _Attention, _ResBlock]
    up: list[_Level]
    norm_out: eqx.nn.GroupNorm
    conv_out: eqx.nn.Conv2d
    in_channels: int = eqx.field(static=True)
    num_levels: int = eqx.field(static=True)

    def __init__(
        self,
        in_channels: int,
        *,
        key: KeyArray,
        base_channels: int = 32,
        channel_mults: tuple[int, ...] = (1, 2),
        num_res_blocks: int = 1,
        attention_resolutions: tuple[int, ...] = (2,),
        num_heads: int = 1,
        num_groups: int = 8,
        dropout: float = 0.0,
        embed_dim: int = 64,
        num_classes: int | None = None,
        time_embedding: AbstractEmbedding | None = None,
    ):
        r"""**Arguments:**

        - `in_channels`: number of image channels $C$ (the output has the same).
        - `key`: PRNG key for the initial parameters.
        - `base_channels`: channels of the first level, default 32 (must be divisible
          by `num_groups`).
        - `channel_mults`: channel multiplier of each level, default `(1, 2)` (two
          levels: one downsampling).
        - `num_res_blocks`: residual blocks per level on the down path (the up path
          has one more), default 1.
        - `attention_resolutions`: downsampling factors $2^i$ of the levels that get
          self-attention (the convention of guided-diffusion's `attention_ds`), default
          `(2,)`: the second level. The middle block always has attention.
        - `num_heads`: attention heads (must divide the channels there), default 1.
        - `num_groups`: GroupNorm groups, default 8.
        - `dropout`: dropout probability in the residual blocks, default 0.
        - `embed_dim`: size of the default Fourier time embedding, default 64.
        - `num_classes`: if given, condition on labels in $\{0, \dots, K-1\}$ plus the
          null label $K$ (`label=None`).
        - `time_embedding`: any [`sdegen.nn.AbstractEmbedding`][]; default
          `FourierFeatures(embed_dim, scale=16)`.
        """
        ints = {
            "in_channels": in_channels,
            "base_channels": base_channels,
            "num_res_blocks": num_res_blocks,
            "num_heads": num_heads,
            "num_groups": num_groups,
        }
        for name, v in ints.items():
            if int(v) != v or v <= 0:
                raise ValueError(f"`{name}` must be a positive int, got {v!r}.")
        mults = tuple(channel_mults)
        if len(mults) == 0 or any(int(m) != m or m <= 0 for m in mults):
            raise ValueError(
                f"`channel_mults` must be a non-empty tuple of positive ints, got "
                f"{channel_mults!r}."
            )
        if base_channels % num_groups != 0:
            raise ValueError(
                f"`base_channels` ({base_channels}) must be divisible by `num_groups` "
                f"({num_groups})."
            )
        if not 0 <= dropout < 1:
            raise ValueError(f"`dropout` must be in [0, 1), got {dropout!r}.")
        attn_ds = {int(a) for a in attention_resolutions}
        valid_ds = {2**i for i in range(len(mults))}
        if not attn_ds <= valid_ds:
            raise ValueError(
                f"`attention_resolutions` must hold downsampling factors among "
                f"{sorted(valid_ds)}, got {tuple(attention_resolutions)!r}."
            )
        for i, m in enumerate(mults):
            if (2**i in attn_ds or i == len(mults) - 1) and (
                base_channels * m
            ) % num_heads != 0:
                raise ValueError(
                    f"`num_heads` ({num_heads}) must divide the channels "
                    f"({base_channels * m}) of every level with attention."
                )
        if time_embedding is not None and not isinstance(
            time_embedding, AbstractEmbedding
        ):
            raise ValueError(
                "`time_embedding` must be an sdegen.nn.AbstractEmbedding, got "
                f"{type(time_embedding).__name__}."
            )
        kemb, kparts = jr.split(key)
        if time_embedding is None:
            time_embedding = init_params(
                lambda k: FourierFeatures(int(embed_dim), key=k), kemb
            )
        self.embedding = time_embedding
        build = lambda k: _build_unet(
            k,
            time_embedding.embed_dim,
            int(in_channels),
            int(base_channels),
            tuple(int(m) for m in mults),
            int(num_res_blocks),
            tuple(sorted(attn_ds)),
            int(num_heads),
            int(num_groups),
            float(dropout),
            None if num_classes is None else int(num_classes),
        )
        parts = init_params(build, kparts)
        self.time_mlp = parts["time_mlp"]
        self.label_embedding = parts["label_embedding"]
        self.conv_in = parts["conv_in"]
        self.down = parts["down"]
        self.mid = parts["mid"]
        self.up = parts["up"]
        self.norm_out = parts["norm_out"]
        self.conv_out = parts["conv_out"]
        self.in_channels = int(in_channels)
        self.num_levels = len(mults)

    def __call__(
        self,
        t: RealScalarLike,
        x: Float[ArrayLike, "c h w"],
        *,
        label: Int[ArrayLike, ""] | None = None,
        key: KeyArray | None = None,
    ) -> Float[Array, "c h w"]:
        """**Arguments:**

        - `t`: a scalar time (or noise level, or integer step).
        - `x`: one image of shape `(in_channels, H, W)`.
        - `label`: optional integer class label (requires `num_classes`); `None` is
          the null class.
        - `key`: PRNG key for dropout; `None` runs in inference mode.

        **Returns:** an array of shape `(in_channels, H, W)`.
        """
        x = jnp.asarray(x)
        factor = 2 ** (self.num_levels - 1)
        if (
            x.ndim != 3
            or x.shape[0] != self.in_channels
            or x.shape[1] % factor
            or x.shape[2] % factor
        ):
            raise ValueError(
                f"`x` must be one image of shape ({self.in_channels}, H, W) with H and "
                f"W divisible by {factor}, got shape {x.shape}; use jax.vmap for a "
                "batch."
            )
        check_label(label, self.label_embedding)
        l1, l2 = self.time_mlp
        temb = l2(jax.nn.silu(l1(self.embedding(t))))
        if self.label_embedding is not None:
            temb = temb + self.label_embedding(label)
        n = 0
        h = self.conv_in(x)
        hs = [h]
        for level in self.down:
            for blk, attn in zip(level.blocks, level.attentions):
                h = blk(h, temb, _subkey(key, n))
                n += 1
                if attn is not None:
                    h = attn(h)
                hs.append(h)
            if level.resample is not None:
                h = level.resample(h)
                hs.append(h)
        b1, attn, b2 = self.mid
        h = b2(attn(b1(h, temb, _subkey(key, n))), temb, _subkey(key, n + 1))
        n += 2
        for level in self.up:
            for blk, attn in zip(level.blocks, level.attentions):
                h = blk(jnp.concatenate([h, hs.pop()]), temb, _subkey(key, n))
                n += 1
                if attn is not None:
                    h = attn(h)
            if level.resample is not None:
                h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)
                h = level.resample(h)
        return self.conv_out(jax.nn.silu(self.norm_out(h)))
