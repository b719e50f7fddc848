r"""Portable models: one file holding a trained score model's weights and everything
needed to use it (the SDE, the network's hyper-parameters, the data's shape, the
number of classes, the data's scaling), loaded back with one call.

    model, meta = sg.load_model("digits.sdegen")
    x = sg.sample_ode(key, meta.sde, model, meta.shape)

The file is an sdegen checkpoint ([`sdegen.save_checkpoint`][]): a JSON header, then
the weights serialised by `equinox.tree_serialise_leaves`, written atomically and
checked by size and SHA-256 when read. Only the weights are stored, never code: the
model is rebuilt from its hyper-parameters and the weights are loaded into it.
"""

import dataclasses
import math
import os
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from .._core._misc import default_float
from .._processes import _interpolants, _sde
from ._checkpoint import (
    CheckpointError,
    checkpoint_metadata,
    load_checkpoint,
    remove_stray_temp_files,
    save_checkpoint,
)


MODEL_FORMAT = 1
NETS = ("mlp", "unet", "plain")
PARAMS = ("noise", "score", "edm", "velocity")


# ---------------------------------------------------------------- SDEs as JSON


def _sde_classes() -> dict[str, type]:
    return {
        name: obj
        for name, obj in {**vars(_sde), **vars(_interpolants)}.items()
        if isinstance(obj, type)
        and issubclass(obj, _sde.AbstractSDE)
        and not name.startswith(("Abstract", "_"))
    }


def sde_to_dict(sde: Any) -> dict[str, Any]:
    """An SDE of sdegen as a JSON-serialisable dict `{"class": name, **fields}`
    (inverse: [`sdegen.sde_from_dict`][]).

    **Raises:** `ValueError` for an object that is not one of sdegen's SDE classes, or
    whose fields are not plain numbers.
    """
    cls = type(sde)
    if _sde_classes().get(cls.__name__) is not cls:
        raise ValueError(
            f"`sde` must be one of sdegen's SDEs ({', '.join(_sde_classes())}), got "
            f"{cls.__name__}."
        )
    out: dict[str, Any] = {"class": cls.__name__}
    for f in dataclasses.fields(sde):
        v = getattr(sde, f.name)
        if isinstance(v, bool | int | float | str) or v is None:
            out[f.name] = v
        elif np.ndim(v) == 0 and isinstance(v, np.generic | jax.Array):
            out[f.name] = float(v)
        else:
            raise ValueError(
                f"`sde` field {f.name!r} of {cls.__name__} is not a plain number "
                f"({type(v).__name__}); it cannot be written as JSON."
            )
    return out


def sde_from_dict(d: dict[str, Any]) -> Any:
    """The SDE described by a dict of [`sdegen.sde_to_dict`][].

    **Raises:** `ValueError` for an unknown class or unknown fields.
    """
    if not isinstance(d, dict) or "class" not in d:
        raise ValueError(f"An SDE dict needs a 'class' entry, got {d!r}.")
    classes = _sde_classes()
    cls = classes.get(d["class"])
    if cls is None:
        raise ValueError(
            f"Unknown SDE class {d['class']!r}; known: {', '.join(classes)}."
        )
    fields = {k: v for k, v in d.items() if k != "class"}
    names = {f.name for f in dataclasses.fields(cls)}
    if set(fields) - names:
        raise ValueError(
            f"Unknown fields {sorted(set(fields) - names)} for {d['class']}."
        )
    return cls(**fields)


# ---------------------------------------------------------------- networks


class _Flattened(eqx.Module):
    """Runs a network for vectors on flattened examples (an MLP on images)."""

    net: eqx.Module
    shape: tuple[int, ...] = eqx.field(static=True)

    def __call__(self, t, x, *, label=None, key=None):
        kwargs = {} if label is None else {"label": label}  # PlainMLP takes none
        y = self.net(t, jnp.reshape(x, (-1,)), key=key, **kwargs)
        return jnp.reshape(y, self.shape)


def check_network(network: dict[str, Any], shape: tuple[int, ...]) -> dict[str, Any]:
    """Validate and complete a network description (see [`sdegen.export_model`][])."""
    if not isinstance(network, dict):
        raise ValueError(f"`network` must be a dict, got {type(network).__name__}.")
    net = {"net": "mlp", "width": 128, "depth": 3, "param": "noise",
           "sigma_data": 0.5, **network}  # fmt: skip
    unknown = set(net) - {"net", "width", "depth", "param", "sigma_data"}
    if unknown:
        raise ValueError(f"`network` has unknown entries {sorted(unknown)}.")
    if net["net"] not in NETS:
        raise ValueError(f"`network['net']` must be one of {NETS}, got {net['net']!r}.")
    if net["param"] not in PARAMS:
        raise ValueError(
            f"`network['param']` must be one of {PARAMS}, got {net['param']!r}."
        )
    for k in ("width", "depth"):
        v = net[k]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"`network[{k!r}]` must be a positive int, got {v!r}.")
    if net["net"] == "unet" and len(shape) != 3:
        raise ValueError(
            f"A U-Net needs images (C, H, W), but the data have shape {shape}; use "
            "net='mlp'."
        )
    if not (math.isfinite(float(net["sigma_data"])) and float(net["sigma_data"]) > 0):
        raise ValueError(
            f"`network['sigma_data']` must be finite and > 0, got {net['sigma_data']!r}."
        )
    return net


def build_model(sde: Any, shape: tuple[int, ...], network: dict[str, Any], *,
                num_classes: int | None = None, key: Any) -> eqx.Module:  # fmt: skip
    r"""A score model from its description: an [`sdegen.nn.MLP`][] or a
    [`sdegen.nn.PlainMLP`][] (on the flattened example) or an [`sdegen.nn.UNet`][]
    wrapped in a parametrisation
    ([`sdegen.nn.NoiseParam`][], [`sdegen.nn.ScoreParam`][],
    [`sdegen.nn.VelocityParam`][] or [`sdegen.nn.EDMPreconditioner`][]), label-conditional when `num_classes` is set.

    `network` holds `net` (`"mlp"`, `"plain"` or `"unet"`; `"plain"` is not
    label-conditional), `width` (MLP width / U-Net base
    channels), `depth` (MLP hidden layers / U-Net levels, fewer when the image size
    does not halve that often), `param` (`"noise"`, `"score"`, `"edm"` or `"velocity"`) and
    `sigma_data` (EDM's $\sigma_\text{data}$).
    """
    from .. import nn

    shape = tuple(int(s) for s in shape)
    net_cfg = check_network(network, shape)
    width, depth = int(net_cfg["width"]), int(net_cfg["depth"])
    if net_cfg["net"] == "plain" and num_classes is not None:
        raise ValueError("network['net'] = 'plain' (sdegen.nn.PlainMLP) is not "
                         "label-conditional; use net='mlp' with `num_classes`.")  # fmt: skip
    if net_cfg["net"] in ("mlp", "plain"):
        if net_cfg["net"] == "plain":
            net = nn.PlainMLP(math.prod(shape), width, depth, key=key)
        else:
            net = nn.MLP(math.prod(shape), width, depth, key=key,
                         num_classes=num_classes)  # fmt: skip
        if len(shape) != 1:
            net = _Flattened(net, shape)
    else:
        levels = max(1, depth)
        while levels > 1 and any(s % 2 ** (levels - 1) for s in shape[1:]):
            levels -= 1
        net = nn.UNet(shape[0], key=key, base_channels=width,
                      channel_mults=(1,) + (2,) * (levels - 1),
                      num_groups=math.gcd(width, 8), attention_resolutions=(),
                      num_classes=num_classes)  # fmt: skip
    if net_cfg["param"] == "noise":
        return nn.NoiseParam(net, sde)
    if net_cfg["param"] == "score":
        return nn.ScoreParam(net, sde)
    if net_cfg["param"] == "velocity":
        return nn.VelocityParam(net, sde)
    return nn.EDMPreconditioner(net, sde, float(net_cfg["sigma_data"]))


# ---------------------------------------------------------------- files


@dataclasses.dataclass(frozen=True)
class ModelMeta:
    """What [`sdegen.load_model`][] knows about a model besides its weights.

    - `sde`: the forward SDE it was trained with (an sdegen SDE object).
    - `shape`: the shape of one example, e.g. `(1, 28, 28)`.
    - `num_classes`: $K$ for a label-conditional model (labels $0..K-1$; `None`:
      unconditional). Call it as `model(t, x, label=y)`; `model(t, x)` is the
      unconditional branch (the null label of classifier-free guidance).
    - `network`: the network's hyper-parameters (see [`sdegen.export_model`][]).
    - `data`: how the data were scaled to the model's space (e.g. the
      [`sdegen.data.HFFormat`][] as a dict, with its `value_range`; `levels`, the
      number of quantisation levels, when known), or `None`.
    - `transform`: the data transform the model was trained behind (an
      [`sdegen.data.AffineTransform`][]: the model's space is `transform.forward` of
      the data), or `None`.
    - `info`: anything else stored (training step, data set name, ...).
    - `dtype`: the floating dtype of the stored weights.
    """

    sde: Any
    shape: tuple[int, ...]
    num_classes: int | None
    network: dict[str, Any]
    data: dict[str, Any] | None = None
    transform: Any = None
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    dtype: str = "float32"

    def to_data(self, x: Any) -> np.ndarray:
        r"""Map samples from the model's space back to the data's own values: undo
        `transform` (`transform.inverse`), then the scaling of `data["value_range"]`,
        $[lo, hi] \to [-1, 1]$. Quantised data (`data["levels"]` $= L$ levels
        $lo + j (hi - lo)/(L - 1)$, or an image format, whose pixels are the integers
        of $[lo, hi]$) are rounded to the nearest level and clipped to $[lo, hi]$, in
        the data's dtype: `uint8` for integer levels within $0..255$ (8-bit images
        give `uint8` 0..255), else `int64` for other integer levels, float64
        otherwise. Data without a known quantisation stay float64, unclipped."""
        y = np.asarray(x, np.float64)
        if self.transform is not None:
            y = np.asarray(self.transform.inverse(y), np.float64)
        data = self.data or {}
        rng = data.get("value_range")
        if rng is None:
            return y
        lo, hi = float(rng[0]), float(rng[1])
        y = (y + 1.0) * ((hi - lo) / 2.0) + lo
        levels = data.get("levels")
        if levels is None and data.get("kind") == "image":
            levels = int(round(hi - lo)) + 1
        if levels is None or int(levels) < 2:
            return y
        step = (hi - lo) / (int(levels) - 1)
        y = lo + np.round((np.clip(y, lo, hi) - lo) / step) * step
        if step == 1.0 and lo == round(lo):
            dtype = np.uint8 if 0 <= lo and hi <= 255 else np.int64
            return np.round(y).astype(dtype)
        return y


def _is_array(x: Any) -> bool:
    return eqx.is_array(x) or isinstance(x, jax.ShapeDtypeStruct)


def _layout(model: Any) -> tuple[Any, list[tuple[int, ...]]]:
    """The tree structure of a model's arrays and their shapes."""
    arrays = eqx.filter(model, _is_array)
    leaves, treedef = jax.tree_util.tree_flatten(arrays)
    return treedef, [tuple(x.shape) for x in leaves]


def _weights_dtype(model: Any) -> str:
    leaves = [x for x in jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array))]
    dtypes = {np.dtype(x.dtype).name for x in leaves}
    if len(dtypes) != 1:
        raise ValueError(f"The model's weights mix floating dtypes {sorted(dtypes)}.")
    return dtypes.pop()


def _cast(tree: Any, dtype: Any) -> Any:
    return jax.tree_util.tree_map(
        lambda x: x.astype(dtype) if eqx.is_inexact_array(x) else x, tree
    )


def export_model(
    path: str | os.PathLike,
    model: Any,
    *,
    sde: Any,
    shape: tuple[int, ...],
    network: dict[str, Any],
    num_classes: int | None = None,
    data: dict[str, Any] | None = None,
    transform: Any = None,
    info: dict[str, Any] | None = None,
) -> Path:
    r"""Write a score model to one portable file, atomically: a JSON header (the SDE,
    the network's hyper-parameters, the data's shape, the number of classes, the data's
    scaling and transform) and the weights (`equinox.tree_serialise_leaves`), with a
    SHA-256 checksum. [`sdegen.load_model`][] reads it back.

    **Arguments:**

    - `path`: the file to write (its folder is created).
    - `model`: the score model, as built by [`sdegen.build_model`][]`(sde, shape,
      network, num_classes=...)` (e.g. the EMA model of a run).
    - `sde`: the forward SDE (one of sdegen's SDE classes).
    - `shape`: the shape of one example.
    - `network`: the hyper-parameters `build_model` takes: `net`, `width`, `depth`,
      `param`, `sigma_data`.
    - `num_classes`: $K$ for a label-conditional model, else `None`.
    - `data`: how the data were scaled into the model's space (JSON-serialisable,
      e.g. `sdegen.data.hf_format(ds).to_dict()`).
    - `transform`: the data transform applied before training (an
      [`sdegen.data.AffineTransform`][] or its `to_dict()`), or `None`.
    - `info`: any other JSON-serialisable facts (step, data set name, ...).

    **Returns:** the path written.

    **Raises:** `ValueError` when `model` does not have the structure `build_model`
    gives for this description (so that the file could not be loaded back), or when
    `path` would overwrite a file that is not an exported model (a checkpoint, a run's
    `config.json`, data) or lies in a run's `checkpoints/` folder.
    """
    check_destination(path)
    shape = tuple(int(s) for s in shape)
    network = check_network(network, shape)
    if num_classes is not None and (isinstance(num_classes, bool)
                                    or int(num_classes) != num_classes
                                    or num_classes < 1):  # fmt: skip
        raise ValueError(f"`num_classes` must be a positive int or None, got "
                         f"{num_classes!r}.")  # fmt: skip
    header_sde = sde_to_dict(sde)
    skeleton = eqx.filter_eval_shape(
        build_model, sde, shape, network, num_classes=num_classes, key=jr.key(0)
    )
    if _layout(skeleton) != _layout(model):
        raise ValueError(
            "`model` does not match `network`, `shape` and `num_classes`: "
            "sdegen.build_model(sde, shape, network, num_classes=...) gives another "
            "structure, so the file could not be loaded back."
        )
    if transform is not None and not isinstance(transform, dict):
        if not hasattr(transform, "to_dict"):
            raise ValueError(
                "`transform` must be a dict or have a `to_dict()` method, got "
                f"{type(transform).__name__}."
            )
        transform = transform.to_dict()
    header = {
        "sdegen_model": MODEL_FORMAT,
        "sde": header_sde,
        "shape": list(shape),
        "num_classes": None if num_classes is None else int(num_classes),
        "network": network,
        "data": data,
        "transform": transform,
        "info": info or {},
        "dtype": _weights_dtype(model),
    }
    model = eqx.filter(model, eqx.is_array)
    return save_checkpoint(path, model, header, step=(info or {}).get("step"))


def check_destination(path: str | os.PathLike) -> None:
    """An export may create a new file or replace an earlier export, nothing else;
    the temporary file of an interrupted export to `path` is removed first."""
    p = Path(path)
    d = p.parent
    if d.name == "checkpoints" and (d.parent / "config.json").is_file():
        raise ValueError(
            f"`path` {str(p)!r} lies in the checkpoints folder of the run "
            f"{str(d.parent)!r}; exporting there would mix a model file into the run's "
            "checkpoints. Write it elsewhere."
        )
    if p.is_file():
        try:
            is_model = checkpoint_metadata(p).get("hparams", {}).get("sdegen_model")
        except CheckpointError:
            is_model = None
        if is_model is None:
            raise ValueError(
                f"`path` {str(p)!r} exists and is not an exported model; an export "
                "only replaces an earlier export. Choose another file name."
            )
    remove_stray_temp_files(d, target=p.name)


def load_model(path: str | os.PathLike, *, dtype: Any = None) -> tuple[Any, ModelMeta]:
    r"""Load a model written by [`sdegen.export_model`][] (or `sdegen export`).

    **Arguments:**

    - `path`: the file.
    - `dtype`: cast the weights to this floating dtype (default: JAX's default float,
      so the model matches the samplers' dtype whether or not x64 is enabled).

    **Returns:** `(model, meta)`: the score model, called as `model(t, x)` (and
    `model(t, x, label=y)` when `meta.num_classes` is set), and a
    [`sdegen.ModelMeta`][] whose `sde` and `shape` are what the samplers need:
    `sg.sample_ode(key, meta.sde, model, meta.shape)`.

    **Raises:** [`sdegen.CheckpointError`][] naming the file when it is missing,
    truncated, corrupt, not an exported model, or does not match its header.
    """
    header = checkpoint_metadata(path).get("hparams", {})
    where = f"{str(path)!r}"
    if header.get("sdegen_model") != MODEL_FORMAT:
        raise CheckpointError(
            f"{where} is an sdegen checkpoint but not an exported model (no model "
            "header); export one with `sdegen export` or sdegen.export_model."
        )
    try:
        sde = sde_from_dict(header["sde"])
        shape = tuple(int(s) for s in header["shape"])
        num_classes = header.get("num_classes")
        network = check_network(header["network"], shape)
        transform = header.get("transform")
        if transform is not None:
            from ..data import transform_from_dict

            transform = transform_from_dict(transform)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{where} has an invalid model header: {e}") from None
    stored = header.get("dtype", "float32")
    skeleton = build_model(sde, shape, network, num_classes=num_classes, key=jr.key(0))
    skeleton = _cast(skeleton, stored)
    arrays, static = eqx.partition(skeleton, eqx.is_array)
    arrays = load_checkpoint(path, arrays)
    model = _cast(eqx.combine(arrays, static), default_float() if dtype is None else dtype)
    meta = ModelMeta(sde=sde, shape=shape, num_classes=num_classes, network=network,
                     data=header.get("data"), transform=transform,
                     info=header.get("info", {}), dtype=stored)  # fmt: skip
    return model, meta
