r"""Image data: scikit-learn's 8×8 digits (embedded, no download), a Hugging Face
`datasets` adapter, and a deterministic shuffling batch iterator.

Every loader returns channels-first floating arrays scaled to $[-1, 1]$ (the
convention of DDPM and score_sde), plus integer labels when there are any.
"""

import math
import os
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from .._custom_types import KeyArray
from .._misc import default_float


def _check_finite_host(x: np.ndarray, name: str) -> None:
    if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
        bad = int(np.sum(~np.isfinite(x)))
        raise ValueError(f"`{name}` contains {bad} non-finite values (NaN or inf).")


def load_digits(
    dtype: Any = None,
) -> tuple[Float[Array, "1797 1 8 8"], Int[Array, " 1797"]]:
    r"""scikit-learn's handwritten digits (UCI optdigits test set): 1797 grey images
    of 8×8 pixels with integer intensities $v \in \{0, \dots, 16\}$, shipped with
    scikit-learn (nothing is downloaded).

    Scaled to $[-1, 1]$ by $x = v / 8 - 1$, channels first.

    **Arguments:**

    - `dtype`: floating dtype of the images (JAX's default float when `None`).

    **Returns:** `(images, labels)` of shapes `(1797, 1, 8, 8)` and `(1797,)`, the
    labels being the digits 0–9.
    """
    from sklearn.datasets import load_digits as _sk_load_digits

    bunch = _sk_load_digits()
    images = np.asarray(bunch.images, dtype=np.float64)[:, None] / 8.0 - 1.0
    dtype = default_float() if dtype is None else dtype
    return jnp.asarray(images, dtype), jnp.asarray(bunch.target, jnp.int32)


# ---------------------------------------------------------------- Hugging Face


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


def _pick_column(features, column: str | None) -> str:
    import datasets

    names = list(features)
    if column is not None:
        if column not in features:
            raise ValueError(
                f"`column` {column!r} is not a column of the data set; columns: "
                f"{', '.join(names)}."
            )
        return column
    for name, feat in features.items():
        if isinstance(feat, datasets.Image):
            return name
    for name, feat in features.items():
        if isinstance(feat, datasets.ClassLabel):
            continue
        if not isinstance(feat, datasets.Value) and _is_numeric(_leaf_dtype(feat)):
            return name
    raise ValueError(
        "No image or array column found (columns: "
        f"{', '.join(f'{n}: {type(f).__name__}' for n, f in features.items())}); "
        "pass `column=` explicitly."
    )


def _pick_labels(features, label_column: str | None, column: str) -> str | None:
    import datasets

    if label_column is None:
        return None
    if label_column != "auto":
        if label_column not in features:
            raise ValueError(
                f"`label_column` {label_column!r} is not a column of the data set; "
                f"columns: {', '.join(features)}."
            )
        return label_column
    labels = [n for n, f in features.items() if isinstance(f, datasets.ClassLabel)]
    if len(labels) == 1:
        return labels[0]
    for name in ("label", "labels"):
        if name in features and name != column:
            return name
    return None


def _image_to_array(img, size) -> np.ndarray:
    grey = img.mode in ("1", "L", "LA", "I", "I;16", "F")
    img = img.convert("L" if grey else "RGB")
    if size is not None and img.size != (size[1], size[0]):
        import PIL.Image

        img = img.resize((size[1], size[0]), PIL.Image.Resampling.BILINEAR)
    a = np.asarray(img, dtype=np.uint8)
    return a[None] if a.ndim == 2 else np.transpose(a, (2, 0, 1))


def _images_from_column(ds, column: str, image_size) -> np.ndarray:
    size = None
    if image_size is not None:
        size = (image_size, image_size) if isinstance(image_size, int) else image_size
        size = tuple(int(s) for s in size)
        if len(size) != 2 or min(size) <= 0:
            raise ValueError(
                f"`image_size` must be a positive int or (height, width), got "
                f"{image_size!r}."
            )
    arrays = [_image_to_array(img, size) for img in ds[column]]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ValueError(
            f"Images in column {column!r} have different shapes {sorted(shapes)[:4]}; "
            "pass `image_size=` to resize them to one size."
        )
    return np.stack(arrays).astype(np.float64) / 127.5 - 1.0


def _channels_first(x: np.ndarray) -> np.ndarray:
    if x.ndim == 3:  # (N, H, W): one channel
        return x[:, None]
    if x.ndim == 4 and x.shape[1] not in (1, 3, 4) and x.shape[-1] in (1, 3, 4):
        return np.transpose(x, (0, 3, 1, 2))
    return x


def _scale(x: np.ndarray, dtype: str | None, scale: str) -> np.ndarray:
    raw = x.astype(np.float64)
    _check_finite_host(raw, "data")
    if scale == "none":
        return raw
    lo, hi = float(raw.min()), float(raw.max())
    integer = dtype is not None and dtype.startswith(("int", "uint"))
    if scale == "auto" and integer and lo >= 0 and hi <= 255:
        return raw / 127.5 - 1.0
    if hi == lo:
        raise ValueError(
            f"The data are constant (every value is {lo}); they cannot be scaled to "
            "[-1, 1]."
        )
    return 2 * (raw - lo) / (hi - lo) - 1


def load_hf(
    name_or_path: str | os.PathLike,
    column: str | None = None,
    split: str = "train",
    *,
    label_column: str | None = "auto",
    scale: str = "auto",
    image_size: int | tuple[int, int] | None = None,
    max_examples: int | None = None,
    dtype: Any = None,
    **load_kwargs: Any,
) -> tuple[Float[Array, " N *shape"], Int[Array, " N"] | None]:
    r"""Load a Hugging Face `datasets` data set as one channels-first array in
    $[-1, 1]$.

    A local folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk` is
    read with `datasets.load_from_disk`; anything else goes to
    `datasets.load_dataset(name_or_path, split=split, **load_kwargs)` (a hub name, or a
    local data file / script folder).

    **Arguments:**

    - `name_or_path`: hub name or local path.
    - `column`: the data column. By default the first `Image` column, else the first
      numeric array column.
    - `split`: the split to use (for a saved `DatasetDict`, or the hub).
    - `label_column`: `"auto"` picks the only `ClassLabel` column or a column named
      `label`/`labels`; `None` loads no labels; or a column name.
    - `scale`: how values map to $[-1, 1]$. Images (8-bit) always use
      $x = v / 127.5 - 1$. For array columns, `"auto"` does the same for integer data
      in $[0, 255]$ and otherwise maps the data set's $[\min, \max]$ linearly onto
      $[-1, 1]$; `"minmax"` always does the latter; `"none"` keeps the values.
    - `image_size`: resize images to this size (an int or `(height, width)`); needed
      when images differ in size.
    - `max_examples`: use only the first `max_examples` rows.
    - `dtype`: floating dtype of the result (JAX's default float when `None`).

    **Returns:** `(data, labels)`: `data` of shape `(N, C, H, W)` for images, or
    `(N, *shape)` for array columns (2-D arrays get a channel axis; channels-last
    arrays are transposed to channels first); `labels` an int array of shape `(N,)` or
    `None`.

    **Raises:** `ValueError` for an unknown column, a split that does not exist,
    images of different sizes, non-finite values, or constant data.
    """
    import datasets

    if scale not in ("auto", "minmax", "none"):
        raise ValueError(f"`scale` must be 'auto', 'minmax' or 'none', got {scale!r}.")
    path = os.fspath(name_or_path)
    if os.path.isdir(path) and (
        os.path.exists(os.path.join(path, "dataset_info.json"))
        or os.path.exists(os.path.join(path, "dataset_dict.json"))
    ):
        ds = datasets.load_from_disk(path)
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise ValueError(
                    f"`split` {split!r} not found in {path!r}; splits: "
                    f"{', '.join(ds)}."
                )
            ds = ds[split]
    else:
        ds = datasets.load_dataset(path, split=split, **load_kwargs)
    if max_examples is not None:
        if int(max_examples) != max_examples or max_examples <= 0:
            raise ValueError(
                f"`max_examples` must be a positive int, got {max_examples!r}."
            )
        ds = ds.select(range(min(int(max_examples), len(ds))))
    if len(ds) == 0:
        raise ValueError(f"The data set {path!r} (split {split!r}) is empty.")
    features = ds.features
    column = _pick_column(features, column)
    label_name = _pick_labels(features, label_column, column)
    if isinstance(features[column], datasets.Image):
        x = _images_from_column(ds, column, image_size)
    else:
        leaf = _leaf_dtype(features[column])
        if not _is_numeric(leaf):
            raise ValueError(
                f"`column` {column!r} holds {features[column]}, which is neither an "
                "image nor a numeric array."
            )
        raw = np.asarray(ds.with_format("numpy", dtype=np.float64)[:][column])
        if raw.dtype == object:
            raise ValueError(
                f"Rows of column {column!r} have different shapes; they cannot be "
                "stacked into one array."
            )
        x = _channels_first(_scale(raw, leaf, scale))
        if x.ndim == 1:
            x = x[:, None]
    _check_finite_host(x, "data")
    labels = None
    if label_name is not None:
        labels = jnp.asarray(np.asarray(ds[label_name]), jnp.int32)
    dtype = default_float() if dtype is None else dtype
    return jnp.asarray(x, dtype), labels


# ---------------------------------------------------------------- batching


def _check_batch_args(data, batch_size, labels):
    n = int(np.shape(data)[0]) if np.ndim(data) > 0 else 0
    if n == 0:
        raise ValueError("`data` must be an array of shape (N, ...) with N > 0.")
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}.")
    if batch_size > n:
        raise ValueError(
            f"`batch_size` ({batch_size}) is larger than the data set ({n} examples)."
        )
    if labels is not None and np.shape(labels)[:1] != (n,):
        raise ValueError(
            f"`labels` must have shape ({n},) to match `data`, got {np.shape(labels)}."
        )
    if isinstance(data, jax.Array) and not isinstance(data, jax.core.Tracer):
        if jnp.issubdtype(data.dtype, jnp.inexact) and not bool(
            jnp.all(jnp.isfinite(data))
        ):
            raise ValueError("`data` contains non-finite values (NaN or inf).")
    else:
        _check_finite_host(np.asarray(data), "data")
    return n, int(batch_size)


def batch_indices(
    key: KeyArray, n: int, batch_size: int, step: int
) -> Int[Array, " batch_size"]:
    r"""The example indices of batch number `step` of [`sdegen.data.batches`][].

    Epoch $e = \lfloor \text{step} / m \rfloor$ with $m = \lfloor n / B \rfloor$ batches
    per epoch uses the permutation `jax.random.permutation(fold_in(key, e), n)`, and
    batch `step` is its slice $[B(\text{step} \bmod m), B(\text{step} \bmod m + 1))$.
    A pure function of `(key, step)`, so training can resume mid-epoch exactly.
    """
    per_epoch = n // batch_size
    epoch, i = divmod(int(step), per_epoch)
    perm = jr.permutation(jr.fold_in(key, epoch), n)
    return perm[i * batch_size : (i + 1) * batch_size]


def batches(
    key: KeyArray,
    data: Float[ArrayLike, " N *shape"],
    batch_size: int,
    *,
    labels: Int[ArrayLike, " num_labels"] | None = None,
    num_epochs: int | None = None,
    start_step: int = 0,
) -> Iterator[Any]:
    r"""Shuffled mini-batches, reshuffled every epoch, deterministic given `key`.

    Batch number $s$ (counting from 0 across epochs) is `data[batch_indices(key, N,
    batch_size, s)]`: each epoch is a fresh permutation of the $N$ examples, cut into
    $\lfloor N / B\rfloor$ full batches (the remainder of each permutation is left
    out, so every batch has the same shape and `jit` compiles once).

    **Arguments:**

    - `key`: PRNG key fixing all the shuffles.
    - `data`: array of shape `(N, ...)`, finite.
    - `batch_size`: $B \le N$.
    - `labels`: optional integer labels of shape `(N,)`; batches are then
      `(x, y)` pairs.
    - `num_epochs`: stop after this many epochs (counted from step 0); infinite when
      `None`.
    - `start_step`: the first batch number to yield (to resume a run).

    **Yields:** arrays of shape `(batch_size, ...)`, or `(x, y)` pairs.

    **Raises:** `ValueError` for an empty data set, `batch_size` not in $[1, N]$,
    labels of the wrong length, or non-finite data.
    """
    n, batch_size = _check_batch_args(data, batch_size, labels)
    data = jnp.asarray(data)
    labels = None if labels is None else jnp.asarray(labels)
    per_epoch = n // batch_size
    stop = math.inf if num_epochs is None else int(num_epochs) * per_epoch
    step, cached_epoch, perm = int(start_step), None, None
    while step < stop:
        epoch, i = divmod(step, per_epoch)
        if epoch != cached_epoch:
            perm = jr.permutation(jr.fold_in(key, epoch), n)
            cached_epoch = epoch
        idx = perm[i * batch_size : (i + 1) * batch_size]
        yield data[idx] if labels is None else (data[idx], labels[idx])
        step += 1
