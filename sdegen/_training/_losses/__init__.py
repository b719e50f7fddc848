r"""Score-matching losses.

Each loss comes in two forms: `single_*_loss(model, ..., x0, key)` for one clean
example, and `*_loss(model, ..., batch, key)`, which splits `key` into one key per
example, `jax.vmap`s the single-example loss and returns the **batch mean** (so a
given example's contribution does not depend on the batch size). Within one example
the squared norms are **summed over its entries** by default (`reduction="sum"`, the
convention of score_sde) or averaged (`reduction="mean"`). `model(t, x)` is a score
function of one example: an [`sdegen.nn.AbstractParametrisation`][] or any callable.

- `dsm_loss`: $\lambda(t)\lVert s(t, x_t) + z/\sigma(t)\rVert^2$ (Song et al. 2021,
  eq. 7), with the weightings and time samplings of `_weighting.py`;
- `ncsn_loss`: $\tfrac12\sigma_i^2\lVert s(\sigma_i, x_0 + \sigma_i z) +
  z/\sigma_i\rVert^2$ (Song & Ermon 2019);
- `ddpm_loss`: $\lVert z - \hat\varepsilon(n, \sqrt{\bar\alpha_n}x_0 +
  \sqrt{1-\bar\alpha_n} z)\rVert^2$ (Ho et al. 2020);
- `ssm_loss`: $\lambda(t)[v^\top J v + \tfrac12 (v^\top s)^2]$ at $x_t$ (Song et al.
  2019, sliced score matching);
- `ism_loss`: $\lambda(t)[\operatorname{tr} J + \tfrac12\lVert s\rVert^2]$ at $x_t$
  (Hyvärinen 2005);
- `cfm_loss`: $\lVert \hat v(t, x_t) - (\alpha'(t) x_0 + \sigma'(t) z)\rVert^2$
  (conditional flow matching, Lipman et al. 2023), with the couplings of
  `_couplings.py` (Tong et al. 2023),

with $x_t = \alpha(t) x_0 + \sigma(t) z$, $z \sim \mathcal{N}(0, I)$ and
$J = \partial s / \partial x$.
"""

from ..._engine._solver_table import REGISTRY as _REGISTRY
from ._cfm import (
    CFMWeighting as CFMWeighting,
    cfm_loss as cfm_loss,
    single_cfm_loss as single_cfm_loss,
)
from ._common import REDUCTIONS as REDUCTIONS
from ._couplings import COUPLINGS as COUPLINGS
from ._ddpm import ddpm_loss as ddpm_loss, single_ddpm_loss as single_ddpm_loss
from ._dsm import dsm_loss as dsm_loss, single_dsm_loss as single_dsm_loss
from ._implicit import (
    ism_loss as ism_loss,
    single_ism_loss as single_ism_loss,
    single_ssm_loss as single_ssm_loss,
    ssm_loss as ssm_loss,
)
from ._ncsn import (
    geometric_sigmas as geometric_sigmas,
    ncsn_loss as ncsn_loss,
    single_ncsn_loss as single_ncsn_loss,
)
from ._weighting import (
    AbstractTimeSampling as AbstractTimeSampling,
    AbstractWeighting as AbstractWeighting,
    EDMWeighting as EDMWeighting,
    ImportanceTimes as ImportanceTimes,
    LikelihoodWeighting as LikelihoodWeighting,
    LogitNormalTimes as LogitNormalTimes,
    LogNormalTimes as LogNormalTimes,
    Sigma2Weighting as Sigma2Weighting,
    UniformTimes as UniformTimes,
)


WEIGHTINGS: tuple[str, ...] = tuple(_REGISTRY["weighting"])
"""Names accepted by the `weighting` argument of the continuous-time losses (rows of
kind `"weighting"` of the one name table)."""

TIME_SAMPLINGS: tuple[str, ...] = tuple(_REGISTRY["time"])
"""Names accepted by the `times` argument of [`sdegen.dsm_loss`][] (rows of kind
`"time"` of the one name table)."""
