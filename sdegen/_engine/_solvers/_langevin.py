r"""The Langevin corrector: score-based MCMC that leaves $p_t$ invariant (Song et al.
2021, Algorithms 4–5; annealed over a ladder of noise levels, Song & Ermon 2019,
Algorithm 1). Every step is

$$x \leftarrow x + \epsilon\,s(t, x) + \sqrt{2\epsilon}\,z,\qquad z \sim \mathcal{N}(0, I),$$

and the correctors differ only in the step size $\epsilon$.
"""

import abc
from typing import Any

import equinox as eqx
import jax.lax as lax
import jax.numpy as jnp

from ..._core._checks import check_choice, check_int, check_positive
from ..._core._custom_types import RealScalarLike
from ..._processes._terms import ScoreDrift
from .._brownian import STREAM_CORRECT
from ._base import standard_normal


class AbstractCorrector(eqx.Module):
    r"""MCMC steps that target $p_t$ at the end $t$ of a predictor step from
    $t_\text{prev}$ (used by [`sdegen.PredictorCorrector`][])."""

    @abc.abstractmethod
    def correct(self, drift: ScoreDrift, noise: Any, u_prev: Any, u: Any, x: Any,
                args: Any) -> Any:  # fmt: skip
        """**Returns:** the corrected state at the integration time `u` (the step began
        at `u_prev`); `noise` is the noise term whose Brownian path gives the normals."""

    @abc.abstractmethod
    def evals_per_step(self) -> int:
        """Score evaluations per call of `correct`."""


class AbstractLangevin(AbstractCorrector):
    r"""`n_steps` Langevin steps $x \leftarrow x + \epsilon s + \sqrt{2\epsilon} z$;
    subclasses give the step size $\epsilon$."""

    n_steps: eqx.AbstractVar[int]

    @abc.abstractmethod
    def step_size(self, drift: ScoreDrift, t_prev: Any, t: Any, s: Any, z: Any) -> Any:
        r"""$\epsilon$ for one step at the SDE time $t$ (after a step from
        $t_\text{prev}$), given the score $s$ and the noise $z$ of that step."""

    def evals_per_step(self) -> int:
        return self.n_steps

    def correct(self, drift, noise, u_prev, u, x, args):
        t_prev, t = drift.sde_time(u_prev), drift.sde_time(u)

        def one(j, x):
            s = drift.score_at(t, x, args)
            z = standard_normal(noise, u_prev, u, STREAM_CORRECT + j)
            eps = jnp.asarray(self.step_size(drift, t_prev, t, s, z)).astype(x.dtype)
            return (x + eps * s + jnp.sqrt(2 * eps) * z).astype(x.dtype)

        if self.n_steps <= 4:
            for j in range(self.n_steps):
                x = one(j, x)
            return x
        return lax.fori_loop(0, self.n_steps, one, x)


class LangevinCorrector(AbstractLangevin):
    r"""Langevin MCMC with the signal-to-noise step size of Song et al. 2021
    (Algorithm 4; score_sde `LangevinCorrector`):

    $$\epsilon = 2\,a\,\Big(r\,\frac{\lVert z\rVert}{\lVert s(t, x)\rVert}\Big)^2,
    \qquad a = \frac{\alpha(t_\text{prev})^2}{\alpha(t)^2}$$

    with $r$ the target signal-to-noise ratio `snr` ($a$ is the $1 - \beta_i$ of the
    discrete VP chain, 1 for VE). score_sde averages both norms over the batch. sdegen
    is unbatched, so `step_rule` chooses what stands in for those averages:

    - `"gaussian"` (default): the norms' values for Gaussian noise of the current
      level, $\lVert z\rVert^2 = D$ and $\lVert s\rVert^2 = D/\sigma(t)^2$, so
      $\epsilon = 2 a r^2 \sigma(t)^2$: the large-$D$ limit of the batch rule,
      deterministic and stable in any dimension.
    - `"sample"`: the norms of this one sample. Close to the batch rule in high
      dimension; in low dimension the step blows up where $\lVert s\rVert \approx 0$
      (near modes: $\mathbb{E}[1/\chi^2_D] = \infty$ for $D \le 2$). A zero score
      gives a zero step.
    """

    snr: RealScalarLike = 0.16
    n_steps: int = eqx.field(static=True, default=1)
    step_rule: str = eqx.field(static=True, default="gaussian")

    def __check_init__(self):
        check_positive("snr", self.snr)
        check_int("corrector_steps", self.n_steps)
        check_choice("step_rule", self.step_rule, ("gaussian", "sample"))

    def step_size(self, drift, t_prev, t, s, z):
        sde = drift.sde
        a = (sde._alpha(t_prev) / sde._alpha(t)) ** 2
        if self.step_rule == "gaussian":
            return 2 * a * self.snr**2 * sde._sigma(t) ** 2
        s_norm = jnp.sqrt(jnp.sum(s**2))
        z_norm = jnp.sqrt(jnp.sum(z**2))
        ratio = self.snr * z_norm / jnp.where(s_norm > 0, s_norm, 1.0)
        return jnp.where(s_norm > 0, 2 * a * ratio**2, 0.0)


class AnnealedLangevinCorrector(AbstractLangevin):
    r"""The step of annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1): at
    noise level $\sigma_i = \sigma(t)$, $\alpha_i = \epsilon_\text{lr}\,\sigma_i^2/
    \sigma_L^2$ and $x \leftarrow x + \tfrac{\alpha_i}{2}s + \sqrt{\alpha_i}\,z$, i.e.
    $\epsilon = \alpha_i/2$ above; `n_steps` steps per level."""

    step_lr: RealScalarLike = 2e-5
    sigma_min: RealScalarLike = 0.01
    n_steps: int = eqx.field(static=True, default=100)

    def __check_init__(self):
        check_positive("step_lr", self.step_lr)
        check_positive("sigma_min", self.sigma_min)
        check_int("steps_per_level", self.n_steps)

    def step_size(self, drift, t_prev, t, s, z):
        return 0.5 * self.step_lr * (drift.sde._sigma(t) / self.sigma_min) ** 2


LangevinCorrector.__init__.__doc__ = """**Arguments:**

- `snr`: the target signal-to-noise ratio $r > 0$ (0.16 is score_sde's CIFAR-10 VE
  value; smaller is gentler).
- `n_steps`: Langevin steps per noise level ($\\ge 1$).
- `step_rule`: `"gaussian"` or `"sample"` (see above).
"""
AnnealedLangevinCorrector.__init__.__doc__ = """**Arguments:**

- `step_lr`: $\\epsilon_\\text{lr} > 0$, the step size at the last level.
- `sigma_min`: $\\sigma_L$, the last (smallest) level.
- `n_steps`: Langevin steps per level.
"""
