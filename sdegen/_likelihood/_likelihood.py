r"""Exact likelihoods through the probability-flow ODE.

The probability-flow ODE $\dot x = \tilde f(x, t) = f(t)x - \tfrac12 g(t)^2
\nabla_x\log p_t(x)$ transports $p_\varepsilon$ to $p_T$. Along a solution the
instantaneous change of variables (Chen et al. 2018, "Neural Ordinary Differential
Equations") gives $\frac{\mathrm{d}}{\mathrm{d}t}\log p_t(x(t)) =
-\nabla\cdot\tilde f(x(t), t)$, hence

$$\log p_\varepsilon(x) = \log p_T(x(T))
+ \int_\varepsilon^T \nabla\cdot\tilde f(x(t), t)\,\mathrm{d}t,$$

with $p_T$ replaced by the SDE's prior (Song et al. 2021, §4.3 and appendix D.2). The
state $x$ and the running integral are one augmented ODE, solved by sdegen's engine
(adaptive: `diffrax.diffeqsolve` with a PID controller; or fixed steps).

The divergence is the exact Jacobian trace (one Jacobian–vector product per input
dimension: for low dimension), or the Hutchinson–Skilling estimate
$\nabla\cdot\tilde f \approx \frac1m\sum_{j=1}^m v_j^\top (\partial_x\tilde f)\, v_j$
with probes $v_j$, $\mathbb{E}[v v^\top] = I$, drawn once and held fixed over the solve
(Grathwohl et al. 2019, "FFJORD"; Hutchinson 1989; Skilling 1989).
"""

import math
from collections.abc import Callable
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float

from .._core._checks import (
    as_float_array,
    check_choice,
    check_eps,
    check_int,
    check_score,
    check_tols,
    error_if_not_finite,
)
from .._core._custom_types import BatchLike, DataLike, KeyArray, RealScalarLike, Scalar
from .._core._misc import is_concrete
from .._engine._solve import finish, is_adaptive
from .._engine._solver_table import solver as get_solver
from .._processes._sde import AbstractSDE, check_sde
from ._augmented import LikelihoodStats, _draw_probes, _solve


_TRACES = ("exact", "hutchinson")
_PROBES = ("rademacher", "gaussian", "orthogonal")


# ---------------------------------------------------------------- validation


def _options(sde, score, solver, rtol, atol, trace, eps, num_probes, probe, adjoint,
             num_steps, prior_logp):  # fmt: skip
    check_sde(sde)
    check_score(score)
    check_choice("trace", trace, _TRACES)
    check_choice("probe", probe, _PROBES)
    check_int("num_probes", num_probes)
    eps = check_eps(sde, eps)
    if not isinstance(adjoint, diffrax.AbstractAdjoint):
        raise ValueError(
            "`adjoint` must be a diffrax.AbstractAdjoint (e.g. "
            "diffrax.RecursiveCheckpointAdjoint() or diffrax.BacksolveAdjoint()), got "
            f"{type(adjoint).__name__}."
        )
    if prior_logp is not None and not callable(prior_logp):
        raise ValueError(
            f"`prior_logp` must be a callable z -> scalar or None, got "
            f"{type(prior_logp).__name__}."
        )
    solver_obj = get_solver(solver, kind="ode")
    if num_steps is None:
        rtol, atol = check_tols(rtol, atol)
        if not is_adaptive(solver_obj):
            raise ValueError(
                f"`solver` {solver!r} has no error estimate, so it cannot step "
                "adaptively; give `num_steps` for fixed steps, or use e.g. 'tsit5'."
            )
    else:
        num_steps = check_int("num_steps", num_steps)
    return solver_obj, num_steps, (eps, rtol, atol)  # (staged when traced)


def _probes_for(key, x, trace, num_probes, probe):
    if trace == "exact":
        return None
    if key is None:
        raise ValueError(
            "`key` is required for trace='hutchinson' (it draws the probe vectors); "
            "pass e.g. key=jax.random.key(0)."
        )
    return _draw_probes(key, x, int(num_probes), probe)


def _concrete_check_finite(x, name):
    """Raise now for a concrete non-finite `x`; for a traced one, return the flag that
    `finish` folds into its single error check."""
    if is_concrete(x):
        error_if_not_finite(x, name)
        return False
    return ~jnp.all(jnp.isfinite(x))


def _check_orthogonal(probe, num_probes, d):
    if probe == "orthogonal" and num_probes > d:
        raise ValueError(
            f"`num_probes` must be at most the data dimension {d} for "
            f"probe='orthogonal', got {num_probes}."
        )


# ---------------------------------------------------------------- public API


def log_likelihood(
    sde: AbstractSDE,
    score: Callable,
    x: DataLike,
    key: KeyArray | None = None,
    solver: str | diffrax.AbstractSolver = "tsit5",
    rtol: RealScalarLike = 1e-5,
    atol: RealScalarLike = 1e-5,
    trace: str = "exact",
    eps: RealScalarLike = 1e-5,
    *,
    num_probes: int = 1,
    probe: str = "rademacher",
    adjoint: Any = diffrax.RecursiveCheckpointAdjoint(),
    num_steps: int | None = None,
    dt0: RealScalarLike | None = None,
    max_steps: int = 16**4,
    prior_logp: Callable | None = None,
    args: Any = None,
    throw: bool = True,
) -> tuple[Scalar, LikelihoodStats]:
    r"""Log-likelihood of one example under the model defined by a score and an SDE,
    through the probability-flow ODE (Song et al. 2021, §4.3):

    $$\log p_\varepsilon(x) = \log p_T(x(T)) + \int_\varepsilon^T
    \nabla\cdot\tilde f(x(t), t)\,\mathrm{d}t, \qquad
    \tilde f(x, t) = f(t)x - \tfrac12 g(t)^2 s(t, x),$$

    where $x(\cdot)$ solves $\dot x = \tilde f$ from $x(\varepsilon) = x$ and $p_T$ is
    the SDE's prior. $x$ and the integral are solved together in one jitted solve of
    sdegen's engine (no host round trips), from $\varepsilon$ to $T$.

    *Accuracy.* The result is the density of the model's $p_\varepsilon$ (close to
    $p_0$ for small $\varepsilon$). Two errors remain: the solver's (set by
    `rtol`/`atol`) and the mismatch between the true $p_T$ and the prior, which is
    $\log p_T(x(T)) - \log\mathcal{N}(x(T); 0, s^2 I)$ at the latent; pass the exact
    `prior_logp` to remove the latter when it is known.

    *Divergence.* `trace="exact"` takes the trace of the Jacobian from $D$
    Jacobian–vector products (cost $\approx D$ forward passes per evaluation: for low
    dimension). `trace="hutchinson"` uses the Hutchinson–Skilling estimator
    $\frac1m\sum_j v_j^\top \partial_x\tilde f\, v_j$ with `num_probes` $= m$ probes
    drawn once from `key` and held fixed over the solve: an unbiased estimate of the
    log-likelihood's integral term (its variance falls as $1/m$). Probes are
    `"rademacher"` ($\pm 1$, the lowest variance of i.i.d. probes),
    `"gaussian"`, or `"orthogonal"` (the first $m$ columns of a random orthogonal
    matrix times $\sqrt D$; still $\mathbb{E}[vv^\top] = I$, lower variance than
    i.i.d. probes, and exact at $m = D$).

    *Gradients.* `jax.grad` flows through the solve (with respect to `x` and to any
    arrays inside `score`, e.g. an Equinox model) by the diffrax `adjoint`.
    `diffrax.RecursiveCheckpointAdjoint()` (default) differentiates the solver's own
    steps: gradients exact for the discretised solve, memory $O(\sqrt{n})$ in the
    number of steps $n$. `diffrax.BacksolveAdjoint()` solves the adjoint ODE
    backwards: memory $O(1)$ in the number of steps, but the gradient is only as
    accurate as that second solve.

    **Arguments:**

    - `sde`: the forward SDE, e.g. [`sdegen.VPSDE`][].
    - `score`: `score(t, x)` for one example.
    - `x`: one example (any shape).
    - `key`: PRNG key for the Hutchinson probes (required for
      `trace="hutchinson"`, unused for `"exact"`).
    - `solver`: an ODE solver name from [`sdegen.SOLVERS`][] or a diffrax solver.
    - `rtol`, `atol`: tolerances of the PID step-size controller.
    - `trace`: `"exact"` or `"hutchinson"`.
    - `eps`: starting time $\varepsilon \in (0, T)$.
    - `num_probes`, `probe`: Hutchinson settings (see above).
    - `adjoint`: a diffrax adjoint for gradients (see above).
    - `num_steps`: fixed uniform steps instead of adaptive ones.
    - `dt0`: initial step of an adaptive solve (by default chosen automatically).
    - `max_steps`: cap on the number of steps.
    - `prior_logp`: a callable `z -> scalar` to use instead of `sde.prior_logp`.
    - `args`: passed to the score (see [`sdegen.sample_sde`][]).
    - `throw`: raise if the solve fails (else inspect `stats.result`).

    **Returns:** `(logp, stats)`: the log-likelihood in nats (a scalar) and a
    [`sdegen.LikelihoodStats`][] with `nfe`, `prior_logp`, `delta_logp`, the latent
    `z`, step counts and the result code.

    **Raises:** `ValueError` for an unknown `trace`/`probe`/solver, a missing `key`
    with `trace="hutchinson"`, `eps` outside $(0, T)$, bad tolerances, or a
    non-finite `x`; an error saying non-finite (with the time) if the score returns
    NaN or infinity during the solve.
    """
    solver_obj, num_steps, (eps, rtol, atol) = _options(sde, score, solver, rtol, atol, trace, eps,
                                     num_probes, probe, adjoint, num_steps,
                                     prior_logp)  # fmt: skip
    x = as_float_array(x, "x")
    bad_input = _concrete_check_finite(x, "x")
    if trace == "hutchinson":
        _check_orthogonal(probe, num_probes, x.size)
    probes = _probes_for(key, x, trace, num_probes, probe)
    logp, stats, st = _solve(sde, score, x, probes, eps, solver_obj, rtol, atol, dt0,
                             num_steps, adjoint, max_steps, trace, prior_logp, False,
                             args)  # fmt: skip
    logp = finish(logp, st, "log_likelihood", throw, bad_input=bad_input)
    return logp, stats


@eqx.filter_jit
def _chunk(sde, score, xs, idx, key, eps, solver, rtol, atol, dt0, num_steps, adjoint,
           max_steps, trace, prior_logp, num_probes, probe, per_sample_solves,
           args):  # fmt: skip
    probes = None
    if trace == "hutchinson":
        keys = jax.vmap(lambda i: jr.fold_in(key, i))(idx)
        probes = jax.vmap(lambda k, x: _draw_probes(k, x, num_probes, probe))(keys, xs)
    if per_sample_solves:
        one = lambda x, p: _solve(sde, score, x, p, eps, solver, rtol, atol, dt0,
                                  num_steps, adjoint, max_steps, trace, prior_logp,
                                  False, args)  # fmt: skip
        return jax.vmap(one, in_axes=(0, None if probes is None else 0))(xs, probes)
    if probes is not None:
        probes = jnp.swapaxes(probes, 0, 1)  # (num_probes, batch, ...)
    return _solve(sde, score, xs, probes, eps, solver, rtol, atol, dt0, num_steps,
                  adjoint, max_steps, trace, prior_logp, True, args)  # fmt: skip


def log_likelihood_batch(
    sde: AbstractSDE,
    score: Callable,
    xs: BatchLike,
    key: KeyArray | None = None,
    solver: str | diffrax.AbstractSolver = "tsit5",
    rtol: RealScalarLike = 1e-5,
    atol: RealScalarLike = 1e-5,
    trace: str = "exact",
    eps: RealScalarLike = 1e-5,
    *,
    num_probes: int = 1,
    probe: str = "rademacher",
    adjoint: Any = diffrax.RecursiveCheckpointAdjoint(),
    num_steps: int | None = None,
    dt0: RealScalarLike | None = None,
    max_steps: int = 16**4,
    prior_logp: Callable | None = None,
    args: Any = None,
    throw: bool = True,
    batch_size: int | None = 1024,
    per_sample_solves: bool = True,
    progress: bool = False,
) -> tuple[Float[Array, " batch"], LikelihoodStats]:
    r"""[`sdegen.log_likelihood`][] of every example of a batch, in chunks of
    `batch_size` so that memory stays bounded.

    - `per_sample_solves=True` (default): each example gets its own adaptive solve
      (`jax.vmap` of [`sdegen.log_likelihood`][]): its error is controlled on its own
      and its result does not depend on the rest of the batch; the vmapped loop runs
      until the slowest example of the chunk is done.
    - `per_sample_solves=False`: each chunk is one solve of the stacked augmented
      system with shared steps — the drift of the whole chunk in one call and one
      Jacobian–vector product per probe over the chunk — whose error norm is the
      largest of the examples' own RMS norms, so every example still meets the
      tolerance. More throughput; the steps (and so the rounding) depend on the
      chunk's other examples.

    Hutchinson probes for example $i$ come from `jax.random.fold_in(key, i)`, so
    results do not depend on `batch_size`. Every chunk has the same shape (the last
    one is padded), so the solve compiles once.

    **Arguments:** as [`sdegen.log_likelihood`][], with `xs` a batch (leading axis),
    plus:

    - `batch_size`: examples per chunk (`None`: the whole batch at once).
    - `per_sample_solves`: see above.
    - `progress`: show a `tqdm` progress bar over chunks.

    **Returns:** `(logp, stats)`: log-likelihoods in nats of shape `(batch,)` and a
    [`sdegen.LikelihoodStats`][] whose fields have a leading batch axis (with
    `per_sample_solves=False`, the step counts are those of the shared solve).
    """
    solver_obj, num_steps, (eps, rtol, atol) = _options(sde, score, solver, rtol, atol, trace, eps,
                                     num_probes, probe, adjoint, num_steps,
                                     prior_logp)  # fmt: skip
    xs = as_float_array(xs, "xs")
    if xs.ndim < 1 or xs.shape[0] < 1:
        raise ValueError(
            f"`xs` must be a non-empty batch with a leading batch axis, got shape "
            f"{xs.shape}."
        )
    bad_input = _concrete_check_finite(xs, "xs")
    n = xs.shape[0]
    batch_size = n if batch_size is None else check_int("batch_size", batch_size)
    batch_size = min(batch_size, n)
    if trace == "hutchinson":
        _check_orthogonal(probe, num_probes, math.prod(xs.shape[1:]))
        if key is None:
            _probes_for(None, xs[0], trace, num_probes, probe)
    starts = range(0, n, batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="log-likelihood", unit="chunk")
    outs = []
    for start in starts:
        stop = min(start + batch_size, n)
        idx = jnp.arange(start, start + batch_size)
        chunk = xs[start:stop]
        if stop - start < batch_size:
            pad = jnp.broadcast_to(xs[:1], (batch_size - (stop - start),) + xs.shape[1:])
            chunk = jnp.concatenate([chunk, pad], axis=0)
        logp, stats, st = _chunk(sde, score, chunk, idx, key, eps, solver_obj, rtol, atol,
                                 dt0, num_steps, adjoint, max_steps, trace, prior_logp,
                                 int(num_probes), probe, per_sample_solves, args)  # fmt: skip
        logp = finish(logp, st, "log_likelihood_batch", throw, input_name="xs",
                      bad_input=bad_input)
        outs.append(jax.tree_util.tree_map(lambda a: a[: stop - start], (logp, stats)))
    if len(outs) == 1:
        return outs[0]
    return jax.tree_util.tree_map(lambda *a: jnp.concatenate(a, axis=0), *outs)
