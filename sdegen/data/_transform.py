r"""Data transforms recorded with a run and undone on its samples.

A score model learns best on data that is centred and of known scale (EDM's
preconditioning assumes the data's standard deviation $\sigma_d$; Karras et al. 2022,
§5). [`sdegen.data.AffineTransform`][] maps data $x$ to $y = (x - m)/s$ for training
and samples back by $x = s\,y + m$; [`sdegen.data.standardize`][] fits it to a data
set. Data bounded in $[a, b]$ (images in $[-1, 1]$) can first go through
[`sdegen.data.LogitTransform`][], so that samples stay (almost) inside the range;
[`sdegen.data.ChainTransform`][] composes transforms. It is JSON-serialisable (`to_dict` / [`sdegen.data.transform_from_dict`][]), so a
run records it in its config and every later command undoes it.
"""

import abc
import math
from typing import Any

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from .._core._checks import check_choice


class AbstractDataTransform(eqx.Module):
    """An invertible map between the data and the space the model is trained in."""

    @abc.abstractmethod
    def forward(self, x: Any) -> Any:
        """Data -> training space (a batch or one example; NumPy in, NumPy out)."""

    @abc.abstractmethod
    def inverse(self, y: Any) -> Any:
        """Training space -> data (e.g. on samples)."""

    @abc.abstractmethod
    def log_det_jacobian(self, x: Any, example_ndim: int) -> Any:
        r"""$\log\lvert\det \partial y/\partial x\rvert$ of `forward` per example,
        for `x` of shape `(*batch, *example)` with `example_ndim` example axes:
        shape `batch`. A density $p_Y$ of the model in the training space is the
        density $p_X(x) = p_Y(y(x))\,\lvert\det\partial y/\partial x\rvert$ of the
        data, so `log p_X = log p_Y + log_det_jacobian(x)` (bits/dim of the data)."""

    @abc.abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description, read back by
        [`sdegen.data.transform_from_dict`][]."""


def _sum_example(v: Any, x: Any, example_ndim: int):
    """`v` (broadcastable to `x`) broadcast to `x` and summed over its last
    `example_ndim` axes."""
    xp = _xp(x)
    if not (isinstance(example_ndim, int) and 0 <= example_ndim <= np.ndim(x)):
        raise ValueError(
            f"`example_ndim` must be an int in [0, x.ndim = {np.ndim(x)}], got "
            f"{example_ndim!r}."
        )
    v = xp.broadcast_to(v, np.shape(x))
    return xp.sum(v, axis=tuple(range(np.ndim(x) - example_ndim, np.ndim(x))))


def _as_param(v: Any, name: str) -> np.ndarray:
    a = np.asarray(v, np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"`{name}` must be finite.")
    return a


def _cast(p: np.ndarray, x: Any):
    """`p` in `x`'s dtype, with leading axes so that it broadcasts against a batch
    (JAX may forbid implicit rank promotion)."""
    ndim = np.ndim(x)
    if p.ndim > ndim:
        raise ValueError(
            f"A transform parameter of shape {p.shape} does not fit an input of shape "
            f"{np.shape(x)}."
        )
    p = p.reshape((1,) * (ndim - p.ndim) + p.shape)
    if isinstance(x, np.ndarray | np.generic):
        return p.astype(x.dtype)
    return jnp.asarray(p, jnp.asarray(x).dtype)


class AffineTransform(AbstractDataTransform):
    r"""$y = (x - m)/s$ and back $x = s\,y + m$, with a shift $m$ and a positive
    scale $s$, each a scalar or an array that broadcasts against one example (e.g.
    the per-pixel mean image)."""

    shift: np.ndarray
    scale: np.ndarray

    def __init__(self, shift: Any = 0.0, scale: Any = 1.0):
        """**Arguments:** `shift` ($m$) and `scale` ($s > 0$): floats or arrays of
        (a shape broadcastable to) one example's shape."""
        self.shift = _as_param(shift, "shift")
        self.scale = _as_param(scale, "scale")
        if np.any(self.scale <= 0):
            raise ValueError("`scale` must be > 0.")

    def forward(self, x):
        return (x - _cast(self.shift, x)) / _cast(self.scale, x)

    def inverse(self, y):
        return y * _cast(self.scale, y) + _cast(self.shift, y)

    def log_det_jacobian(self, x, example_ndim):
        return -_sum_example(_xp(x).log(_cast(self.scale, x)), x, example_ndim)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "affine", "shift": self.shift.tolist(),
                "scale": self.scale.tolist()}  # fmt: skip


CENTRES = ("mean", "pixel", "none")


def standardize(
    data: Any, *, center: str = "mean", target_std: float = 1.0
) -> AffineTransform:
    r"""Fit an [`sdegen.data.AffineTransform`][] that centres `data` and scales it to
    standard deviation `target_std`.

    - `center="mean"`: subtract the scalar mean of all entries;
    - `center="pixel"`: subtract the mean example (per entry: pixels that never change,
      such as the blank border of the digits, become exactly 0);
    - `center="none"`: no shift (EDM's convention: then pass the data's std as
      `sigma_data` to [`sdegen.nn.EDMPreconditioner`][] instead of rescaling, or use
      `target_std` to fix it).

    The scale is one scalar, $s = \operatorname{std}(x - m)/\text{target\_std}$ over
    all entries (a per-entry std would blow up constant pixels).

    **Arguments:** `data` of shape `(N, *shape)`; `center`; `target_std` > 0.

    **Returns:** the fitted transform.
    """
    check_choice("center", center, CENTRES)
    if not (isinstance(target_std, int | float) and math.isfinite(target_std)
            and target_std > 0):  # fmt: skip
        raise ValueError(f"`target_std` must be a finite float > 0, got {target_std!r}.")
    x = np.asarray(data, np.float64)
    if x.ndim < 2 or x.shape[0] < 2:
        raise ValueError(
            f"`data` must have shape (N, *shape) with N >= 2, got shape {x.shape}."
        )
    if center == "mean":
        shift = np.asarray(x.mean())
    elif center == "pixel":
        shift = x.mean(axis=0)
    else:
        shift = np.asarray(0.0)
    std = float(np.std(x - shift))
    if not std > 0:
        raise ValueError("`data` is constant; it cannot be scaled to unit std.")
    return AffineTransform(shift, std / target_std)


def _xp(x: Any):
    return np if isinstance(x, np.ndarray | np.generic | float | int) else jnp


class LogitTransform(AbstractDataTransform):
    r"""The logit transform of data bounded in $[a, b]$ (Dinh et al. 2017, RealNVP,
    §4.1; also Glow and FFJORD):

    $$y = \operatorname{logit}\big(\alpha + (1 - 2\alpha)\,u\big),\quad
    u = \frac{x - a}{b - a};\qquad
    x = a + (b - a)\,\frac{\operatorname{sigmoid}(y) - \alpha}{1 - 2\alpha}.$$

    A model trained on $y$ (unbounded) gives samples $x$ inside
    $\big(a - \tfrac{\alpha}{1 - 2\alpha}(b - a),\ b + \tfrac{\alpha}{1 - 2\alpha}(b -
    a)\big)$ — $(-1.111, 1.111)$ for $[-1, 1]$ and $\alpha = 0.05$ — whatever the
    model: errors near the ends of the range are squashed by the sigmoid instead of
    spilling beyond them. Values at the ends (the blank pixels of an image) map to
    $\pm\operatorname{logit}(\alpha)$, finite. Usually chained with
    [`sdegen.data.standardize`][] ([`sdegen.data.ChainTransform`][]).
    """

    low: float = -1.0
    high: float = 1.0
    alpha: float = 0.05

    def __check_init__(self):
        if not (math.isfinite(self.low) and math.isfinite(self.high)
                and self.high > self.low):  # fmt: skip
            raise ValueError(
                f"`low` and `high` must be finite with low < high, got {self.low!r}, "
                f"{self.high!r}."
            )
        if not 0 < self.alpha < 0.5:
            raise ValueError(f"`alpha` must be in (0, 0.5), got {self.alpha!r}.")

    def _p(self, x):
        p = self.alpha + (1 - 2 * self.alpha) * (x - self.low) / (self.high - self.low)
        if isinstance(x, np.ndarray | np.generic | float | int) and not np.all(
            (p > 0) & (p < 1)
        ):
            margin = self.alpha / (1 - 2 * self.alpha) * (self.high - self.low)
            raise ValueError(
                f"LogitTransform: the data must lie in ({self.low - margin:.6g}, "
                f"{self.high + margin:.6g}) (the range [{self.low}, {self.high}] "
                f"widened by alpha / (1 - 2 alpha) of its width)."
            )
        return p

    def forward(self, x):
        xp = _xp(x)
        p = self._p(x)
        return xp.log(p) - xp.log1p(-p)

    def log_det_jacobian(self, x, example_ndim):
        r"""$\sum_i \log\frac{1 - 2\alpha}{(b - a)\,p_i(1 - p_i)}$ with
        $p_i = \alpha + (1 - 2\alpha)u_i$."""
        xp = _xp(x)
        p = self._p(x)
        c = math.log((1 - 2 * self.alpha) / (self.high - self.low))
        return _sum_example(c - xp.log(p) - xp.log1p(-p), x, example_ndim)

    def inverse(self, y):
        xp = _xp(y)
        p = 0.5 * (1 + xp.tanh(0.5 * y))  # the sigmoid, without overflow
        return self.low + (self.high - self.low) * (p - self.alpha) / (1 - 2 * self.alpha)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "logit", "low": self.low, "high": self.high,
                "alpha": self.alpha}  # fmt: skip


class ChainTransform(AbstractDataTransform):
    """Transforms applied in order (`forward`) and undone in reverse order
    (`inverse`), e.g. `ChainTransform((LogitTransform(), standardize(...)))`."""

    transforms: tuple[AbstractDataTransform, ...]

    def __check_init__(self):
        if not self.transforms or not all(
            isinstance(t, AbstractDataTransform) for t in self.transforms
        ):
            raise ValueError(
                "`transforms` must be a non-empty tuple of "
                "sdegen.data.AbstractDataTransform."
            )

    def forward(self, x):
        for t in self.transforms:
            x = t.forward(x)
        return x

    def inverse(self, y):
        for t in reversed(self.transforms):
            y = t.inverse(y)
        return y

    def log_det_jacobian(self, x, example_ndim):
        total = 0.0
        for t in self.transforms:
            total = total + t.log_det_jacobian(x, example_ndim)
            x = t.forward(x)
        return total

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "chain", "transforms": [t.to_dict() for t in self.transforms]}


def transform_from_dict(d: dict[str, Any]) -> AbstractDataTransform:
    """The transform described by `AbstractDataTransform.to_dict()`."""
    kind = d.get("kind") if isinstance(d, dict) else None
    if kind == "affine":
        return AffineTransform(d["shift"], d["scale"])
    if kind == "logit":
        return LogitTransform(float(d["low"]), float(d["high"]), float(d["alpha"]))
    if kind == "chain":
        return ChainTransform(tuple(transform_from_dict(t) for t in d["transforms"]))
    raise ValueError(f"Unknown data transform description {d!r}.")
