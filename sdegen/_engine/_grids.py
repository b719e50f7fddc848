r"""Time grids for fixed-step samplers, by name.

Every grid runs from $T$ down to $\varepsilon$ in `num_steps` steps ($N + 1$ points,
both ends exact):

- `"uniform"`: $t_i = T + \tfrac{i}{N}(\varepsilon - T)$, i.e. `linspace(T, eps)`.
- `"logsnr"`: uniform in the half log signal-to-noise ratio
  $\lambda(t) = \log(\alpha(t)/\sigma(t))$, the time variable of DPM-Solver (Lu et al.
  2022): $t_i = t_\lambda\big(\lambda(T) + \tfrac{i}{N}(\lambda(\varepsilon) -
  \lambda(T))\big)$.
- `"karras"`: uniform in $\tilde\sigma^{1/\rho}$ (Karras et al. 2022, eq. 5), where
  $\tilde\sigma(t) = \sigma(t)/\alpha(t) = e^{-\lambda(t)}$ is the noise-to-signal
  ratio (EDM's $\sigma$; $\sigma(t)$ itself for VE and the EDM SDE):
  $\tilde\sigma_i = \big(\tilde\sigma_{\max}^{1/\rho} + \tfrac{i}{N}
  (\tilde\sigma_{\min}^{1/\rho} - \tilde\sigma_{\max}^{1/\rho})\big)^\rho$,
  $\rho = 7$ by default.

On a path that ends in pure noise ($\alpha(T) = 0$: [`sdegen.RectifiedFlow`][],
[`sdegen.CosineInterpolant`][]) $\lambda(T) = -\infty$ and $\tilde\sigma(T) = \infty$;
the `"logsnr"` and `"karras"` grids then space their points as if
$\lambda(T) = -\lambda(\varepsilon)$ (the mirror image of the last point,
$\tilde\sigma_{\max} = 1/\tilde\sigma_{\min}$) and keep their first point exactly $T$.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._core._checks import check_eps, check_grid, check_int, check_positive, staged
from .._core._misc import default_float, is_concrete, jit_when_eager
from .._processes._sde import AbstractSDE, check_sde
from ._solver_table import lookup


def uniform_grid(sde: AbstractSDE, num_steps: int, eps: Any, dtype: Any) -> Array:
    r"""`linspace(T, eps, num_steps + 1)`."""
    return jnp.linspace(sde.T, eps, num_steps + 1, dtype=dtype)


def _exact_ends(ts: Array, sde: AbstractSDE, eps: Any) -> Array:
    return ts.at[0].set(sde.T).at[-1].set(eps)


def logsnr_grid(sde: AbstractSDE, num_steps: int, eps: Any, dtype: Any) -> Array:
    r"""Uniform in $\lambda(t) = \log(\alpha/\sigma)$ from $\lambda(T)$ to
    $\lambda(\varepsilon)$."""
    T = jnp.asarray(sde.T, dtype)
    lo, hi = sde._lambda(T), sde._lambda(jnp.asarray(eps, dtype))
    lo = jnp.where(jnp.isfinite(lo), lo, -jnp.abs(hi))  # alpha(T) = 0: the mirror
    lam = jnp.linspace(lo, hi, num_steps + 1, dtype=dtype)
    ts = jax.vmap(sde._inverse_lambda)(lam)
    return _exact_ends(ts, sde, eps)


def karras_grid(sde: AbstractSDE, num_steps: int, eps: Any, dtype: Any,
                rho: float = 7.0) -> Array:  # fmt: skip
    r"""Uniform in $\tilde\sigma^{1/\rho}$, $\tilde\sigma = \sigma/\alpha$ (EDM)."""
    T = jnp.asarray(sde.T, dtype)
    # In logs: log root_i = log((1 - f_i) s_max^(1/rho) + f_i s_min^(1/rho)), with
    # log s^(1/rho) = -lambda / rho, so that a huge s_max (a VP SDE with a large
    # beta_max: lambda(T) = -2500) does not overflow.
    a = -sde._lambda(T) / rho
    b = -sde._lambda(jnp.asarray(eps, dtype)) / rho
    a = jnp.where(jnp.isfinite(a), a, -b)  # alpha(T) = 0: s_max is the mirror 1 / s_min
    frac = jnp.linspace(0.0, 1.0, num_steps + 1, dtype=dtype)
    log_root = jnp.logaddexp(jnp.log1p(-frac) + a, jnp.log(frac) + b)
    ts = jax.vmap(sde._inverse_lambda)(-rho * log_root)
    return _exact_ends(ts, sde, eps)


def time_grid(
    sde: AbstractSDE,
    num_steps: int,
    kind: str = "uniform",
    *,
    eps: Any = 1e-3,
    rho: float = 7.0,
    dtype: Any = None,
) -> Float[Array, " num_steps_plus_1"]:
    r"""The decreasing time grid $T = t_0 > t_1 > \dots > t_N = \varepsilon$ of a
    fixed-step sampler, by name (see the module docstring for the formulas).

    **Arguments:**

    - `sde`: the [`sdegen.AbstractSDE`][] (its $\alpha$, $\sigma$ and $t(\lambda)$).
    - `num_steps`: $N \ge 1$.
    - `kind`: `"uniform"`, `"logsnr"` or `"karras"`.
    - `eps`: the last time $\varepsilon \in (0, T)$.
    - `rho`: the exponent $\rho > 0$ of the `"karras"` grid (7, as EDM).
    - `dtype`: floating dtype (JAX's default).

    **Returns:** the grid, shape `(num_steps + 1,)`, first point exactly $T$ and last
    exactly $\varepsilon$.

    **Raises:** `ValueError` for an unknown `kind` (listing the known ones), `eps`
    outside $(0, T)$ or a non-positive `num_steps`.
    """
    return _time_grid(sde, num_steps, kind, eps, rho, dtype, staged_check=True)


def _time_grid(sde, num_steps, kind, eps, rho, dtype, *, staged_check):
    check_sde(sde)
    num_steps = check_int("num_steps", num_steps)
    eps = check_eps(sde, eps)
    check_positive("rho", rho)
    row = lookup("grid", kind, arg="grid")
    dtype = default_float() if dtype is None else dtype
    extra = (float(rho),) if row.name == "karras" else ()
    ts = _make_grid(row.make(), sde, num_steps, eps, dtype, *extra)
    return _check_made_grid(ts, row.name, sde, staged_check)


def _check_made_grid(ts: Array, kind: str, sde: AbstractSDE, staged_check: bool) -> Array:
    """A grid sdegen made must be finite and strictly decreasing; if not, say it is
    the grid's fault (not the score's), and where. A traced grid is checked by a
    staged check, or (`staged_check=False`, the samplers) by the engine, which
    reports `RESULTS.invalid_grid` through the solve's one error check."""
    what = (f"`grid` {kind!r} of {type(sde).__name__} (T={sde.T}) is not a valid "
            "time grid")  # fmt: skip
    hint = ("λ(t) = log(α/σ) or its inverse is not representable in "
            f"{ts.dtype} there; use `grid='uniform'`, fewer `num_steps`, a larger "
            "`eps`, or enable float64")  # fmt: skip
    if is_concrete(ts):
        a = np.asarray(ts)
        bad = int(np.sum(~np.isfinite(a)))
        if bad:
            raise ValueError(f"{what}: {bad} of {a.size} times are NaN or inf ({hint}).")
        if not np.all(np.diff(a) < 0):
            k = int(np.argmax(np.diff(a) >= 0))
            raise ValueError(
                f"{what}: it is not strictly decreasing (t[{k}] = {a[k]}, t[{k + 1}] = "
                f"{a[k + 1]}; {hint})."
            )
        return ts
    if not staged_check:
        return ts
    ok = jnp.all(jnp.isfinite(ts)) & jnp.all(jnp.diff(ts) < 0)
    return staged(ts, ~ok, f"{what}: NaN, inf or not strictly decreasing ({hint}).")


@jit_when_eager
def _make_grid(make, sde, num_steps, eps, dtype, *extra):
    # One compiled program per grid (not one per operation when run eagerly).
    return make(sde, num_steps, eps, dtype, *extra)


def resolve_grid(sde: AbstractSDE, *, num_steps: Any, grid: str, ts: Any, eps: Any,
                 dtype: Any, checked: bool = False) -> Array:  # fmt: skip
    r"""The decreasing grid of a fixed-step sampler: `ts` validated when given, else
    [`sdegen.time_grid`][]`(sde, num_steps, grid, eps=eps)`: one compiled program when
    called eagerly, and part of the caller's program under `jit` (no sub-program of
    its own compiled at trace time: the first call's cost). A made grid that is
    traced is checked by the engine it goes to (`fixed_solve`: one error check for
    the whole solve), not by a check of its own; `checked=True` stages one (a grid
    that does not go to `fixed_solve`)."""
    if ts is not None:
        ts = check_grid(sde, ts, decreasing=True)
        return ts.astype(dtype)
    return _time_grid(sde, num_steps, grid, eps, 7.0, dtype, staged_check=checked)
