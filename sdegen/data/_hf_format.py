r"""How the rows of a Hugging Face data set become arrays: the columns chosen, the
shape, the labels, and the [`sdegen.data.HFFormat`][] transform that converts a batch
of rows when it is read (see [`sdegen.data.load_hf`][])."""

import io
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class HFFormat:
    r"""How the rows of a data set loaded by [`sdegen.data.load_hf`][] become arrays:
    the transform of the returned `datasets.Dataset` (called on a batch of rows,
    `{column: [values]}`, it returns `{"x": (B, *shape), "label": (B,)}`) and the
    facts a model needs about the data.

    - `column`, `label_column`: the source columns (`label_column` `None`: no labels).
    - `kind`: `"image"` (an `Image` column) or `"array"` (a numeric array column).
    - `shape`: the shape of one example, channels first for images.
    - `num_classes`: $K$, labels being $0, \dots, K - 1$ (`None` without labels).
    - `label_names`: the names of a `ClassLabel` column (else `None`).
    - `image_size`: `(height, width)` images are resized to, or `None`.
    - `channels_last`: array examples are stored channels last and get transposed.
    - `value_range`: the raw range $[lo, hi]$ mapped linearly onto $[-1, 1]$,
      $x = 2 (v - lo) / (hi - lo) - 1$ ($[0, 255]$ for 8-bit images); `None` keeps
      the values.
    - `dtype`: the floating dtype of `x`.
    """

    column: str
    label_column: str | None
    kind: str
    shape: tuple[int, ...]
    num_classes: int | None = None
    label_names: tuple[str, ...] | None = None
    image_size: tuple[int, int] | None = None
    channels_last: bool = False
    value_range: tuple[float, float] | None = None
    dtype: str = "float32"
    name: str = field(default="", compare=False)

    def __call__(self, batch: Any) -> dict[str, np.ndarray]:
        if self.kind == "image":
            x = np.stack([self._image(v, i) for i, v in enumerate(batch[self.column])])
        else:
            x = self._array(batch[self.column])
        if self.value_range is not None:
            lo, hi = self.value_range
            x = (x - lo) * (2.0 / (hi - lo)) - 1.0
        out = {"x": x.astype(self.dtype, copy=False)}
        if self.label_column is not None:
            out["label"] = self._labels(batch[self.label_column])
        return out

    def _image(self, value: Any, i: int) -> np.ndarray:
        import PIL.Image

        img = _as_pil(value, self.column)
        img = img.convert("L" if self.shape[0] == 1 else "RGB")
        if self.image_size is not None and img.size != self.image_size[::-1]:
            img = img.resize(self.image_size[::-1], PIL.Image.Resampling.BILINEAR)
        a = np.asarray(img, dtype=np.float32)
        a = a[None] if a.ndim == 2 else np.transpose(a, (2, 0, 1))
        if a.shape != self.shape:
            raise ValueError(
                f"Images in column {self.column!r} differ in size: one is "
                f"{a.shape[1]}x{a.shape[2]}, the first was {self.shape[1]}x"
                f"{self.shape[2]}; pass `image_size` to resize them to one size."
            )
        return a

    def _array(self, values: Any) -> np.ndarray:
        try:
            x = np.asarray(values, dtype=np.float64)
        except ValueError:
            raise ValueError(
                f"Rows of column {self.column!r} have different shapes; they cannot "
                "be stacked into one array."
            ) from None
        if self.channels_last:
            x = np.moveaxis(x, -1, 1)
        if x.ndim == 1:
            x = x[:, None]
        elif x.ndim == 3 and len(self.shape) == 3:  # (B, H, W): one channel
            x = x[:, None]
        if x.shape[1:] != self.shape:
            raise ValueError(
                f"Rows of column {self.column!r} have different shapes: "
                f"{x.shape[1:]} and {self.shape}."
            )
        if not np.all(np.isfinite(x)):
            bad = int(np.sum(~np.isfinite(x)))
            raise ValueError(
                f"Column {self.column!r} contains {bad} non-finite values (NaN or inf)."
            )
        return x

    def _labels(self, values: Any) -> np.ndarray:
        y = np.asarray(values)
        if y.dtype.kind not in "iu":
            raise ValueError(
                f"`label_column` {self.label_column!r} holds {y.dtype} values; labels "
                "must be integer class indices."
            )
        if self.num_classes is not None and (
            y.size and (y.min() < 0 or y.max() >= self.num_classes)
        ):
            raise ValueError(
                f"`label_column` {self.label_column!r} holds labels outside "
                f"[0, {self.num_classes})."
            )
        return y.astype(np.int32)

    @property
    def num_dims(self) -> int:
        """Values per example, $D = \\prod$ `shape`."""
        return math.prod(self.shape)

    def to_dict(self) -> dict[str, Any]:
        """The format as a JSON-serialisable dict (inverse: `HFFormat.from_dict`)."""
        d = asdict(self)
        for k in ("shape", "label_names", "image_size", "value_range"):
            if d[k] is not None:
                d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "HFFormat":
        """Inverse of `to_dict`."""
        tuples = ("shape", "label_names", "image_size", "value_range")
        fixed = {k: None if d.get(k) is None else tuple(d[k]) for k in tuples}
        return cls(**{**d, **fixed})


def _as_pil(value: Any, column: str):
    import PIL.Image

    if isinstance(value, PIL.Image.Image):
        return value
    if isinstance(value, dict) and (value.get("bytes") or value.get("path")):
        src = io.BytesIO(value["bytes"]) if value.get("bytes") else value["path"]
        return PIL.Image.open(src)
    raise ValueError(f"Column {column!r} holds {type(value).__name__}, not an image.")


# ---------------------------------------------------------------- columns


def _leaf_dtype(feature) -> str | None:
    """The scalar dtype at the bottom of a (possibly nested) `datasets` feature."""
    import datasets

    if isinstance(feature, datasets.Value):
        return feature.dtype
    if isinstance(feature, datasets.ClassLabel):
        return "int64"
    if isinstance(feature, datasets.Array2D | datasets.Array3D | datasets.Array4D
                  | datasets.Array5D):  # fmt: skip
        return feature.dtype
    inner = getattr(feature, "feature", None)
    if inner is not None:
        return _leaf_dtype(inner)
    if isinstance(feature, list | tuple) and len(feature) == 1:
        return _leaf_dtype(feature[0])
    return None


def _is_numeric(dtype: str | None) -> bool:
    return dtype is not None and (
        dtype.startswith(("int", "uint", "float")) or dtype == "bool"
    )


def _describe(features) -> str:
    return ", ".join(f"{n} ({type(f).__name__})" for n, f in features.items())


def _pick_column(features, column: str | None) -> str:
    import datasets

    if column is not None:
        if column not in features:
            raise ValueError(
                f"`image_column` {column!r} is not a column of the data set; columns: "
                f"{_describe(features)}."
            )
        feat = features[column]
        if not isinstance(feat, datasets.Image) and not (
            not isinstance(feat, datasets.Value | datasets.ClassLabel)
            and _is_numeric(_leaf_dtype(feat))
        ):
            raise ValueError(
                f"`image_column` {column!r} holds {feat}, which is neither an image nor "
                "a numeric array."
            )
        return column
    for name, feat in features.items():
        if isinstance(feat, datasets.Image):
            return name
    for name, feat in features.items():
        if isinstance(feat, datasets.Value | datasets.ClassLabel):
            continue
        if _is_numeric(_leaf_dtype(feat)):
            return name
    raise ValueError(
        f"No image or array column found (columns: {_describe(features)}); pass "
        "`image_column=`."
    )


def _pick_labels(features, label_column: str | None, column: str) -> str | None:
    import datasets

    if label_column is None:
        return None
    if label_column != "auto":
        if label_column not in features:
            raise ValueError(
                f"`label_column` {label_column!r} is not a column of the data set; "
                f"columns: {_describe(features)}."
            )
        if label_column == column:
            raise ValueError(
                f"`label_column` {label_column!r} is also the image column."
            )
        feat = features[label_column]
        if not (isinstance(feat, datasets.ClassLabel) or (
            isinstance(feat, datasets.Value) and feat.dtype.startswith(("int", "uint"))
        )):  # fmt: skip
            raise ValueError(
                f"`label_column` {label_column!r} holds {feat}; labels must be integer "
                "class indices (a ClassLabel or an integer column)."
            )
        return label_column
    labels = [n for n, f in features.items() if isinstance(f, datasets.ClassLabel)]
    if len(labels) == 1:
        return labels[0]
    for name in ("label", "labels"):
        if name in features and name != column:
            return _pick_labels(features, name, column)
    return None


def _label_info(ds, label_column: str | None):
    import datasets

    if label_column is None:
        return None, None
    feat = ds.features[label_column]
    if isinstance(feat, datasets.ClassLabel):
        return int(feat.num_classes), tuple(feat.names)
    y = np.asarray(ds.with_format("numpy")[label_column])
    if y.size == 0:
        return None, None
    if int(y.min()) < 0:
        raise ValueError(
            f"`label_column` {label_column!r} holds negative labels ({int(y.min())}); "
            "class indices start at 0."
        )
    k, distinct = int(y.max()) + 1, int(np.unique(y).size)
    if k > 16 and k > 4 * distinct:  # a sparse labelling: one embedding per index
        raise ValueError(
            f"`label_column` {label_column!r} holds {distinct} distinct labels but the "
            f"largest is {k - 1}: a conditional model would have {k} classes (one "
            "embedding each). Relabel the classes to 0..K-1."
        )
    return k, None


def _check_size(image_size) -> tuple[int, int] | None:
    if image_size is None:
        return None
    size = (image_size, image_size) if isinstance(image_size, int) else image_size
    try:
        size = tuple(int(s) for s in size)
        ok = len(size) == 2 and min(size) > 0
    except (TypeError, ValueError):
        ok = False
    if not ok or isinstance(image_size, bool):
        raise ValueError(
            f"`image_size` must be a positive int or (height, width), got "
            f"{image_size!r}."
        )
    return size  # type: ignore[return-value]


def _image_format(ds, column, label_column, size, channels, dtype, nc, names):
    img = _as_pil(ds[0][column], column)
    if channels is None:
        channels = 1 if img.mode in ("1", "L", "LA", "I", "I;16", "F") else 3
    h, w = size if size is not None else (img.size[1], img.size[0])
    return HFFormat(column, label_column, "image", (channels, h, w), nc, names, size,
                    False, (0.0, 255.0), dtype)  # fmt: skip


def _array_format(ds, column, label_column, channels, scale, dtype, nc, names, size):
    if size is not None:
        raise ValueError(
            f"`image_size` applies to image columns only; {column!r} holds arrays."
        )
    first = np.asarray(ds.with_format("numpy", dtype=np.float64)[0][column])
    shape = first.shape if first.ndim else (1,)
    channels_last = (
        first.ndim == 3 and shape[0] not in (1, 3, 4) and shape[-1] in (1, 3, 4)
    )
    if channels_last:
        shape = (shape[-1], *shape[:-1])
    elif first.ndim == 2:  # (H, W): one channel
        shape = (1, *shape)
    if channels is not None and (len(shape) != 3 or shape[0] != channels):
        raise ValueError(
            f"`channels` is {channels}, but the examples of {column!r} have shape "
            f"{tuple(shape)} (channels first)."
        )
    leaf = _leaf_dtype(ds.features[column])
    fmt = HFFormat(column, label_column, "array", tuple(int(s) for s in shape), nc,
                   names, None, channels_last, None, dtype)  # fmt: skip
    if scale == "none":
        return fmt
    lo, hi = math.inf, -math.inf
    integer = leaf is not None and leaf.startswith(("int", "uint"))
    rows = ds.with_format("numpy", dtype=np.float64)
    for start in range(0, len(ds), 1024):
        x = fmt._array(rows[start : start + 1024][column])
        lo, hi = min(lo, float(x.min())), max(hi, float(x.max()))
    if scale == "auto" and integer and lo >= 0 and hi <= 255:
        lo, hi = 0.0, 255.0
    elif hi == lo:
        raise ValueError(
            f"Column {column!r} is constant (every value is {lo}); it cannot be scaled "
            "to [-1, 1] (pass scale='none')."
        )
    return HFFormat(fmt.column, label_column, "array", fmt.shape, nc, names, None,
                    channels_last, (lo, hi), dtype)  # fmt: skip


