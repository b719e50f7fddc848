r"""Exponential moving averages (EMA) of the weights, $\bar\theta_{s+1} = \beta_s
\bar\theta_s + (1 - \beta_s)\theta_{s+1}$, with a decay $\beta_s$ that may depend on
the step $s$ (counted from 0, the first update).

Why a schedule: with a constant $\beta = 0.999$ the random initial weights keep the
weight $\beta^s$ in the average, 8 % after 2500 steps, and the EMA model of a short
run is worse than the raw one. A decay that starts small forgets the start at once.
"""

import abc
import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from .._core._checks import concrete_float


EMAS = ("warmup", "power", "constant")
"""EMA schedules of [`sdegen.TrainConfig`][] (`ema=`)."""


class AbstractEMA(eqx.Module):
    r"""An EMA decay schedule: `decay(step)` is $\beta_s$ for the update after step
    $s \ge 0$ (a traced integer inside the training step)."""

    @abc.abstractmethod
    def decay(self, step: Any) -> Any:
        r"""$\beta_s$."""


class ConstantEMA(AbstractEMA):
    r"""$\beta_s = \beta$ (the classic EMA of score_sde and DDPM)."""

    beta: float = 0.999

    def __check_init__(self):
        _check_beta("ema_decay", self.beta)

    def decay(self, step):
        return jnp.asarray(self.beta)


class WarmupEMA(AbstractEMA):
    r"""$\beta_s = \min\big(\beta, \tfrac{1 + s}{10 + s}\big)$: the EMA warm-up of
    diffusers' `EMAModel` (its default, `use_ema_warmup=False`; after TensorFlow's
    `ExponentialMovingAverage` with `num_updates`). The first update keeps 90 % of
    the new weights; until $\beta$ is reached, at $s = (10\beta - 1)/(1 - \beta)$
    (8990 steps for $\beta = 0.999$), the averaging window $1/(1 - \beta_s) =
    (10 + s)/9$ spans about the last ninth of the run, so the initial weights are
    forgotten at once."""

    beta: float = 0.999

    def __check_init__(self):
        _check_beta("ema_decay", self.beta)

    def decay(self, step):
        s = jnp.asarray(step).astype(jnp.zeros(()).dtype)
        return jnp.minimum(self.beta, (1 + s) / (10 + s))


class PowerEMA(AbstractEMA):
    r"""The power-function EMA of Karras et al. 2024 ("Analyzing and Improving the
    Training Dynamics of Diffusion Models", EDM2, eq. 3):
    $\beta_s = (1 - 1/(s + 1))^{\gamma + 1}$, so that $\bar\theta_s$ averages all
    weights so far with weights $\propto \tau^\gamma$: a width relative to the run
    length ($\sigma_{\text{rel}} = (\gamma + 1)^{1/2}(\gamma + 2)^{-1}(\gamma +
    3)^{-1/2}$; $\gamma = 6.94$ gives $\sigma_{\text{rel}} = 0.10$) instead of a fixed
    number of steps. $\beta_0 = 0$: the first update copies the weights."""

    gamma: float = 6.94

    def __check_init__(self):
        g = concrete_float("ema_gamma", self.gamma)
        if g is not None and not (math.isfinite(g) and g > 0):
            raise ValueError(f"`ema_gamma` must be finite and > 0, got {g}.")

    def decay(self, step):
        s = jnp.asarray(step).astype(jnp.zeros(()).dtype)
        return (1 - 1 / (s + 1)) ** (self.gamma + 1)


def _check_beta(name: str, v: Any) -> None:
    b = concrete_float(name, v)
    if b is not None and not (0 <= b < 1):
        raise ValueError(f"`{name}` must be in [0, 1), got {b!r}.")


def make_ema(kind: str, decay: float, gamma: float) -> AbstractEMA:
    """The EMA schedule of a [`sdegen.TrainConfig`][]."""
    if kind == "constant":
        return ConstantEMA(decay)
    if kind == "warmup":
        return WarmupEMA(decay)
    return PowerEMA(gamma)


def ema_update(ema_model: Any, model: Any, decay: Any) -> Any:
    r"""$\bar\theta \leftarrow \beta\,\bar\theta + (1 - \beta)\,\theta$ on the inexact
    array leaves (weights); everything else is taken from `model`.

    **Arguments:** `ema_model` ($\bar\theta$), `model` ($\theta$), `decay` ($\beta$,
    a float or a scalar array)."""
    params = eqx.filter(model, eqx.is_inexact_array)
    ema_params, _ = eqx.partition(ema_model, eqx.is_inexact_array)
    _, static = eqx.partition(model, eqx.is_inexact_array)

    def mix(e, p):
        d = jnp.asarray(decay, p.dtype)
        return (d * e + (1 - d) * p).astype(p.dtype)

    return eqx.combine(jax.tree_util.tree_map(mix, ema_params, params), static)
