r"""SDEs and score functions as diffrax terms.

Given a forward SDE $\mathrm{d}x = f(x, t)\,\mathrm{d}t + g(t)\,\mathrm{d}W$ and a score
$s(t, x) \approx \nabla_x \log p_t(x)$:

- the reverse-time SDE (Anderson 1982) is
  $\mathrm{d}x = [f(x, t) - g(t)^2 s(t, x)]\,\mathrm{d}t + g(t)\,\mathrm{d}\bar W$,
  run from $t = T$ down to $t = \varepsilon$;
- the probability-flow ODE is $\mathrm{d}x = [f(x, t) - \tfrac12 g(t)^2 s(t, x)]\,
  \mathrm{d}t$, with the same marginals $p_t$.

All of these are ordinary diffrax terms: hand them to `diffrax.diffeqsolve` with any
solver, step-size controller, `SaveAt` and adjoint.
"""

from collections.abc import Callable

import diffrax
import equinox as eqx
import jax.numpy as jnp
import jax.tree_util as jtu

from ._custom_types import RealScalarLike, Scalar
from ._sde import AbstractSDE


def _check_sde(sde) -> None:
    if not isinstance(sde, AbstractSDE):
        raise ValueError(
            f"`sde` must be an sdegen.AbstractSDE (e.g. sdegen.VPSDE()), got "
            f"{type(sde).__name__}."
        )


def _check_score(score) -> None:
    if not callable(score):
        raise ValueError(
            f"`score` must be a callable score(t, x) -> Array, got {type(score).__name__}."
        )


def _check_brownian(brownian) -> None:
    if not isinstance(brownian, diffrax.AbstractPath):
        raise ValueError(
            "`brownian` must be a diffrax Brownian path (e.g. diffrax.VirtualBrownianTree "
            f"or diffrax.UnsafeBrownianPath) of the data's shape, got "
            f"{type(brownian).__name__}."
        )


class ScalarDiffusionTerm(diffrax.AbstractTerm):
    r"""The noise term $g(t)\,\mathrm{d}W$ of an SDE whose diffusion is a scalar times
    the identity: the vector field is the scalar $g(t)$ and the product with the
    Brownian increment is elementwise, so it costs $O(D)$ for data of any shape (no
    $D \times D$ matrix). The noise is additive (independent of $x$), so Itô and
    Stratonovich solvers agree and the additive-noise SRK solvers (SRA1, ShARK, SEA)
    apply.
    """

    diffusion: Callable[[RealScalarLike], Scalar]
    control: diffrax.AbstractPath

    def vf(self, t, y, args):
        return self.diffusion(t)

    def contr(self, t0, t1, **kwargs):
        return self.control.evaluate(t0, t1, **kwargs)

    def prod(self, vf, control):
        return jtu.tree_map(lambda c: (vf * c).astype(c.dtype), control)


ScalarDiffusionTerm.__init__.__doc__ = """**Arguments:**

- `diffusion`: a callable `g(t) -> scalar`.
- `control`: a diffrax Brownian path with the data's shape.
"""


class _Drift(eqx.Module):
    sde: AbstractSDE

    def __call__(self, t, x, args):
        return self.sde.drift(t, x)


class _Diffusion(eqx.Module):
    sde: AbstractSDE
    reversed_time: bool = False

    def __call__(self, t):
        if self.reversed_time:
            t = self.sde.T - t
        return self.sde.diffusion(t)


class _ScoreDrift(eqx.Module):
    r"""$f(x, t) - w\,g(t)^2 s(t, x)$, with $w = 1$ for the reverse SDE and $w = 1/2$
    for the probability-flow ODE. With `reversed_time`, the argument is $u = T - t$
    and the sign flips, so that integrating forwards in $u$ runs backwards in $t$."""

    sde: AbstractSDE
    score: Callable
    weight: float
    reversed_time: bool = False

    def __call__(self, t, x, args):
        if self.reversed_time:
            t = self.sde.T - t
        g2 = self.sde.diffusion(t) ** 2
        s = jnp.asarray(self.score(t, x))
        out = self.sde.drift(t, x) - self.weight * g2 * s
        out = out.astype(jnp.result_type(x))
        return -out if self.reversed_time else out


def forward_terms(sde: AbstractSDE, brownian: diffrax.AbstractPath) -> diffrax.MultiTerm:
    r"""The forward SDE $\mathrm{d}x = f(x, t)\,\mathrm{d}t + g(t)\,\mathrm{d}W$ as
    `MultiTerm(ODETerm(f), ScalarDiffusionTerm(g, brownian))`, to integrate from
    $t_0 = 0$ to $t_1 \le T$.

    **Arguments:**

    - `sde`: an [`sdegen.AbstractSDE`][].
    - `brownian`: a diffrax Brownian path over $[0, T]$ with the data's shape.

    **Returns:** a `diffrax.MultiTerm`.
    """
    _check_sde(sde)
    _check_brownian(brownian)
    return diffrax.MultiTerm(
        diffrax.ODETerm(_Drift(sde)), ScalarDiffusionTerm(_Diffusion(sde), brownian)
    )


def reverse_terms(
    sde: AbstractSDE,
    score: Callable,
    brownian: diffrax.AbstractPath,
    *,
    reversed_time: bool = False,
) -> diffrax.MultiTerm:
    r"""The reverse-time SDE
    $\mathrm{d}x = [f(x, t) - g(t)^2 \nabla_x\log p_t(x)]\,\mathrm{d}t + g(t)\,
    \mathrm{d}\bar W$ (Anderson 1982; Song et al. 2021, eq. 6).

    By default the terms are written in the SDE's own time $t$: integrate from
    $t_0 = T$ to $t_1 = \varepsilon$ with a negative `dt0`, using a Brownian path over
    $[\varepsilon, T]$.

    With `reversed_time=True` they are written in $u = T - t$ instead,
    $\mathrm{d}x = -[f(x, T-u) - g(T-u)^2 s(T-u, x)]\,\mathrm{d}u + g(T-u)\,
    \mathrm{d}W_u$, to integrate *forwards* from $u_0 = 0$ to $u_1 = T - \varepsilon$
    with a Brownian path over $[0, T - \varepsilon]$. This form is correct for every
    diffrax solver; diffrax's stochastic Runge–Kutta solvers (SRA1, ShARK, SPaRK, ...)
    are wrong when integrating backwards in time (diffrax issue 598), so use it with
    them. sdegen's samplers always use it.

    **Arguments:**

    - `sde`: an [`sdegen.AbstractSDE`][].
    - `score`: a callable `score(t, x)` for one example `x`.
    - `brownian`: a diffrax Brownian path with the data's shape.
    - `reversed_time`: write the terms in $u = T - t$ (see above).

    **Returns:** a `diffrax.MultiTerm` of the drift and the noise.
    """
    _check_sde(sde)
    _check_score(score)
    _check_brownian(brownian)
    return diffrax.MultiTerm(
        diffrax.ODETerm(_ScoreDrift(sde, score, 1.0, reversed_time)),
        ScalarDiffusionTerm(_Diffusion(sde, reversed_time), brownian),
    )


def probability_flow_term(
    sde: AbstractSDE, score: Callable, *, reversed_time: bool = False
) -> diffrax.ODETerm:
    r"""The probability-flow ODE $\frac{\mathrm{d}x}{\mathrm{d}t} = f(x, t) -
    \tfrac12 g(t)^2 \nabla_x \log p_t(x)$ (Song et al. 2021, eq. 13), whose solution has
    the same marginals $p_t$ as the SDE.

    Integrate from $\varepsilon$ to $T$ to encode data, or from $T$ to $\varepsilon$ to
    sample (ODEs may be solved backwards in diffrax). With `reversed_time=True` the
    term is written in $u = T - t$ (integrate forwards from $0$ to $T - \varepsilon$
    to sample).

    **Returns:** a `diffrax.ODETerm`.
    """
    _check_sde(sde)
    _check_score(score)
    return diffrax.ODETerm(_ScoreDrift(sde, score, 0.5, reversed_time))


