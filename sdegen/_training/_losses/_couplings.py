r"""Couplings of a batch's data with its noise for conditional flow matching.

CFM draws pairs $(x_0, \varepsilon)$ and regresses the velocity of the path
$x_t = \alpha(t) x_0 + \sigma(t)\varepsilon$ between them. The pairs need not be
independent: any coupling $\pi(x_0, \varepsilon)$ with the right marginals trains a
flow between the same two distributions (Tong et al. 2023, "Improving and
generalizing flow-based generative models with minibatch optimal transport"; Pooladian
et al. 2023, "Multisample flow matching").

- `"independent"`: $\pi = p_{\text{data}} \otimes \mathcal{N}(0, I)$, the batch as drawn.
- `"ot"` (OT-CFM): the exact optimal assignment of the batch, the permutation $\pi$
  minimising $\sum_b \lVert x_0^{(b)} - \sigma(T)\varepsilon^{(\pi_b)}\rVert^2$
  between the data and the prior samples $\sigma(T)\varepsilon$: by default
  scipy's `linear_sum_assignment` on the host through `jax.pure_callback`, or the
  Hungarian algorithm of `ott.tools.unreg.hungarian` (optax's pure-JAX
  implementation), the same permutation. Paths between assigned pairs cross less,
  so the learned flow is straighter and needs fewer steps.
- `"sb"` (SB-CFM): the entropic plan $P$ with regularisation $\varepsilon_{\text{reg}} =
  2\sigma_{\min}^2$ of the same cost (Sinkhorn, `ott.solvers.linear.solve`), $B$ pairs
  drawn from $P$ with replacement, and a Brownian bridge of noise $\sigma_{\min}$
  around the path (see [`sdegen.cfm_loss`][]); the static Schrödinger bridge between
  the two batches.

Everything here runs inside the compiled training step (jit-compatible).
"""

import warnings

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, Int

from ..._core._custom_types import KeyArray


COUPLINGS = ("independent", "ot", "sb")
"""Names accepted by the `coupling` argument of [`sdegen.cfm_loss`][]."""


Batch = Float[Array, "batch *data"]
Index = Int[Array, " batch"]
Plan = Float[Array, "batch batch2"]


def _ott():
    """ott-jax's modules, imported on first use (ott imports jaxopt, which warns
    that it is no longer maintained; sdegen uses none of jaxopt)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "JAXopt is no longer maintained",
                                DeprecationWarning)  # fmt: skip
        from ott.geometry import geometry
        from ott.solvers import linear
        from ott.tools import unreg
    return geometry, linear, unreg


def _flat(x: Array) -> Array:
    return x.reshape(x.shape[0], -1)


def sq_cost(x0: Batch, y: Batch) -> Array:
    r"""The cost matrix $C_{ij} = \lVert x_0^{(i)} - y^{(j)}\rVert^2$, shape `(B, B)`."""
    a, b = _flat(x0), _flat(y)
    c = jnp.sum(a**2, 1)[:, None] + jnp.sum(b**2, 1)[None] - 2 * a @ b.T
    return jnp.maximum(c, 0.0)


def ot_pairs(
    x0: Batch, y: Batch, *,
    solver: str = "scipy",
) -> Index:
    r"""The exact optimal assignment: `perm` with `y[perm[b]]` paired to `x0[b]`,
    minimising $\sum_b \lVert x_0^{(b)} - y^{(\text{perm}_b)}\rVert^2$.

    `solver="scipy"` (default): `scipy.optimize.linear_sum_assignment` (a maintained
    C implementation of the shortest augmenting path method) on the host through
    `jax.pure_callback`, so it also runs inside a compiled step; `solver="ott"`:
    the Hungarian algorithm of `ott.tools.unreg.hungarian` (optax's pure-JAX
    implementation; no host round trip, but on a CPU about 10x slower at a batch of
    256, docs/benchmarks.md). Both return the same optimal permutation when it is
    unique."""
    cost = jax.lax.stop_gradient(sq_cost(x0, y))
    if solver == "ott":
        geometry, _, unreg = _ott()
        with jax.numpy_rank_promotion("allow"):
            _, out = unreg.hungarian(geometry.Geometry(cost_matrix=cost))
        i, j = out.paired_indices
        return jnp.zeros_like(j).at[i].set(j)
    if solver != "scipy":
        raise ValueError(f"`solver` must be 'scipy' or 'ott', got {solver!r}.")

    def host(c):
        from scipy.optimize import linear_sum_assignment

        return linear_sum_assignment(np.asarray(c))[1].astype(np.int32)

    shape = jax.ShapeDtypeStruct(cost.shape[:1], jnp.int32)
    return jax.pure_callback(host, shape, cost, vmap_method="sequential")


def sb_plan(
    x0: Batch, y: Batch, epsilon: float
) -> Plan:
    r"""The entropic optimal-transport plan $P$ between the uniform measures on the
    rows of `x0` and of `y`, cost $\lVert x_0 - y\rVert^2$, regularisation
    `epsilon` (Sinkhorn in log space, `ott.solvers.linear.solve`); its rows and
    columns each sum to $1/B$ to the solver's tolerance."""
    geometry, linear, _ = _ott()
    cost = jax.lax.stop_gradient(sq_cost(x0, y))
    with jax.numpy_rank_promotion("allow"):  # ott broadcasts implicitly
        out = linear.solve(geometry.Geometry(cost_matrix=cost, epsilon=epsilon),
                           implicit_diff=None, max_iterations=500)  # fmt: skip
    return out.matrix


def sb_pairs(
    x0: Batch, y: Batch, epsilon: float,
    key: KeyArray,
) -> tuple[Index, Index]:
    r"""$B$ index pairs `(i, j)` drawn with replacement from the entropic plan
    [`sb_plan`][sdegen._training._losses._couplings.sb_plan] (as torchcfm's
    `OTPlanSampler`)."""
    p = sb_plan(x0, y, epsilon)
    n, m = p.shape
    cdf = jnp.cumsum(jnp.maximum(p.reshape(-1), 0.0))  # inverse-CDF draws: O(B^2)
    u = jr.uniform(key, (n,), cdf.dtype) * cdf[-1]
    k = jnp.minimum(jnp.searchsorted(cdf, u, side="right"), n * m - 1)
    return k // m, k % m


def couple(coupling: str, x0: Array, y: Array, key: KeyArray, sigma_min: float):
    """`(i, j)`: data rows `x0[i]` paired with noise rows `y[j]` for a coupling name."""
    n = x0.shape[0]
    if coupling == "independent":
        idx = jnp.arange(n)
        return idx, idx
    if coupling == "ot":
        return jnp.arange(n), ot_pairs(x0, y)
    return sb_pairs(x0, y, 2 * sigma_min**2, key)
