r"""A time-dependent classifier $p_t(y \mid x_t)$ for classifier guidance.

Classifier guidance (Song et al. 2021, §5 and Appendix I.1; Dhariwal & Nichol 2021)
needs the class posterior of the *noised* data at every time $t$. It is trained by
cross-entropy on $x_t = \alpha(t) x_0 + \sigma(t) z$ with $t \sim U(\varepsilon, T)$:

$$\mathcal{L} = \mathbb{E}_{t, x_0, y, z}\big[-\log p_\theta(y \mid x_t, t)\big].$$
"""

import math
from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Float, Int

from .._core._checks import as_float_array, check_shape_arg
from .._core._custom_types import Data, KeyArray, RealScalarLike, Scalar
from .._core._misc import default_float
from .._processes._sde import AbstractSDE, check_sde


class _TimeFeatures(eqx.Module):
    r"""Random Fourier features of $t$: $[\sin(2\pi W t), \cos(2\pi W t)]$ with fixed
    $W \sim \mathcal{N}(0, s^2)$ (Tancik et al. 2020; Song et al. 2021)."""

    freqs: Array

    def __call__(self, t):
        arg = 2 * math.pi * self.freqs * jnp.asarray(t, self.freqs.dtype)
        return jnp.concatenate([jnp.sin(arg), jnp.cos(arg)])


class TimeClassifier(eqx.Module):
    r"""A time-conditioned classifier returning the logits of $p_t(y \mid x)$ for one
    example.

    Vectors (`data_shape = (d,)`) go through an MLP on $[x, \phi(t)]$; images
    (`data_shape = (C, H, W)`, channels first) through a small convolutional net
    (stride-2 convolutions with SiLU, the time features added per channel after each
    block, global average pooling, a linear head). $\phi(t)$ are Gaussian random
    Fourier features of $t$.
    """

    data_shape: tuple[int, ...] = eqx.field(static=True)
    num_classes: int = eqx.field(static=True)
    time_features: _TimeFeatures
    layers: tuple[Any, ...]
    time_proj: tuple[Any, ...]
    head: eqx.nn.Linear

    def __init__(
        self,
        data_shape: Sequence[int],
        num_classes: int,
        *,
        width: int = 64,
        depth: int = 2,
        time_dim: int = 16,
        time_scale: float = 16.0,
        key: KeyArray,
    ):
        data_shape = check_shape_arg("data_shape", tuple(data_shape))
        if len(data_shape) not in (1, 3):
            raise ValueError(
                "`data_shape` must be (d,) for vectors or (C, H, W) for images, got "
                f"{data_shape}."
            )
        ints = dict(
            num_classes=num_classes, width=width, depth=depth, time_dim=time_dim
        )
        for name, v in ints.items():
            if isinstance(v, bool) or int(v) != v or v < 1:
                raise ValueError(f"`{name}` must be a positive int, got {v!r}.")
        self.data_shape = data_shape
        self.num_classes = int(num_classes)
        dtype = default_float()
        kf, kh, *keys = jr.split(key, 2 + 2 * depth)
        self.time_features = _TimeFeatures(
            time_scale * jr.normal(kf, (time_dim // 2 or 1,), dtype)
        )
        tdim = 2 * (time_dim // 2 or 1)
        layers, proj = [], []
        if len(data_shape) == 1:
            in_dim = data_shape[0] + tdim
            for i in range(depth):
                lin = eqx.nn.Linear(in_dim, width, key=keys[2 * i], dtype=dtype)
                layers.append(lin)
                in_dim = width
        else:
            in_ch = data_shape[0]
            for i in range(depth):
                layers.append(
                    eqx.nn.Conv2d(in_ch, width, 3, stride=2, padding=1, key=keys[2 * i],
                                  dtype=dtype)  # fmt: skip
                )
                lin = eqx.nn.Linear(tdim, width, key=keys[2 * i + 1], dtype=dtype)
                proj.append(lin)
                in_ch = width
        self.layers = tuple(layers)
        self.time_proj = tuple(proj)
        self.head = eqx.nn.Linear(width, self.num_classes, key=kh, dtype=dtype)

    def __call__(
        self, t: RealScalarLike, x: Data, *, key: KeyArray | None = None
    ) -> Float[Array, " num_classes"]:
        x = jnp.asarray(x)
        if tuple(x.shape) != self.data_shape:
            raise ValueError(
                f"`x` must be one example of shape {self.data_shape}, got shape "
                f"{tuple(x.shape)}; use jax.vmap for a batch."
            )
        emb = self.time_features(t).astype(x.dtype)
        if len(self.data_shape) == 1:
            h = jnp.concatenate([x, emb])
            for layer in self.layers:
                h = jax.nn.silu(layer(h))
        else:
            h = x
            for layer, proj in zip(self.layers, self.time_proj):
                h = jax.nn.silu(layer(h) + proj(emb)[:, None, None])
            h = jnp.mean(h, axis=(1, 2))
        return self.head(h)


TimeClassifier.__init__.__doc__ = r"""**Arguments:**

- `data_shape`: one example's shape, `(d,)` or `(C, H, W)`.
- `num_classes`: the number of classes $K$.
- `width`: hidden units (MLP) or channels (conv net).
- `depth`: hidden layers (MLP) or stride-2 conv blocks.
- `time_dim`: number of Fourier features of $t$.
- `time_scale`: std of the random frequencies.
- `key`: PRNG key for the initial weights (keyword-only).
"""


def classifier_loss(
    classifier: Any,
    sde: AbstractSDE,
    batch: Float[ArrayLike, " batch *data"],
    labels: Int[ArrayLike, " nlabels"],
    key: KeyArray,
    *,
    eps: RealScalarLike = 1e-5,
) -> Scalar:
    r"""Mean cross-entropy $-\log p_\theta(y \mid x_t, t)$ of a time-dependent
    classifier on noised data, $x_t = \alpha(t) x_0 + \sigma(t) z$ with one
    $t \sim U(\varepsilon, T)$ and one $z \sim \mathcal{N}(0, I)$ per example.

    **Arguments:**

    - `classifier`: `classifier(t, x) -> logits` for one example (e.g. a
      [`sdegen.TimeClassifier`][]).
    - `sde`: the forward SDE.
    - `batch`: clean examples $x_0$, shape `(batch, *data)`.
    - `labels`: integer classes, shape `(batch,)`.
    - `key`: PRNG key for $t$ and $z$.
    - `eps`: smallest time $\varepsilon$.

    **Returns:** the batch mean of the cross-entropy (a scalar, in nats).

    **Raises:** `ValueError` when `labels` does not have one entry per example.
    """
    check_sde(sde)
    batch = as_float_array(batch, "batch")
    labels = jnp.asarray(labels)
    if labels.shape != batch.shape[:1]:
        raise ValueError(
            f"`labels` must have shape ({batch.shape[0]},), one class per example of "
            f"`batch`, got shape {labels.shape}."
        )
    n = batch.shape[0]
    kt, kz = jr.split(key)
    t = jr.uniform(kt, (n,), batch.dtype, minval=eps, maxval=sde.T)
    z = jr.normal(kz, batch.shape, batch.dtype)

    def one(t_, x0, z_, y):
        mean, std = sde.marginal(t_, x0)
        logits = classifier(t_, mean + std * z_)
        return -jax.nn.log_softmax(logits)[y]

    return jnp.mean(jax.vmap(one)(t, batch, z, labels))


def train_classifier(
    key: KeyArray,
    classifier: Any,
    sde: AbstractSDE,
    data: Float[ArrayLike, " n *data"],
    labels: Int[ArrayLike, " nlabels"],
    *,
    num_steps: int = 1000,
    batch_size: int = 256,
    optimizer: Any = None,
    eps: RealScalarLike = 1e-5,
) -> tuple[Any, Float[Array, " num_steps"]]:
    r"""Fit a time-dependent classifier with [`sdegen.classifier_loss`][] and optax.

    Each step draws a minibatch (with replacement) and takes one optimiser step; the
    loop is one jitted `jax.lax.scan`.

    **Arguments:**

    - `key`: PRNG key for minibatches and noise.
    - `classifier`: the initial model (an equinox Module, e.g.
      [`sdegen.TimeClassifier`][]).
    - `sde`: the forward SDE.
    - `data`: clean examples, shape `(n, *data)`.
    - `labels`: integer classes, shape `(n,)`.
    - `num_steps`: optimiser steps.
    - `batch_size`: examples per step.
    - `optimizer`: an `optax.GradientTransformation` (default `optax.adam(1e-3)`).
    - `eps`: smallest time in the loss.

    **Returns:** `(classifier, losses)`: the trained model and the loss per step.

    **Raises:** `ValueError` for mismatched `data` and `labels` or bad step counts.
    """
    import optax

    check_sde(sde)
    data = as_float_array(data, "data")
    labels = jnp.asarray(labels)
    if labels.shape != data.shape[:1]:
        raise ValueError(
            f"`labels` must have shape ({data.shape[0]},) to match `data`, got shape "
            f"{labels.shape}."
        )
    for name, v in (("num_steps", num_steps), ("batch_size", batch_size)):
        if isinstance(v, bool) or int(v) != v or v < 1:
            raise ValueError(f"`{name}` must be a positive int, got {v!r}.")
    if optimizer is None:
        optimizer = optax.adam(1e-3)
    params, static = eqx.partition(classifier, eqx.is_inexact_array)
    opt_state = optimizer.init(params)
    n = data.shape[0]

    # The data are arguments of the compiled loop, not constants folded into it.
    @eqx.filter_jit
    def run(params, opt_state, key, data, labels):
        def step(carry, k):
            params, opt_state = carry
            kb, kl = jr.split(k)
            idx = jr.randint(kb, (int(batch_size),), 0, n)

            def loss_fn(p):
                model = eqx.combine(p, static)
                return classifier_loss(model, sde, data[idx], labels[idx], kl, eps=eps)

            loss, grads = jax.value_and_grad(loss_fn)(params)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            params = eqx.apply_updates(params, updates)
            return (params, opt_state), loss

        return jax.lax.scan(step, (params, opt_state), jr.split(key, int(num_steps)))

    (params, _), losses = run(params, opt_state, key, data, labels)
    return eqx.combine(params, static), losses

