r"""Hugging Face `datasets` as a source of training data, streamed from disk.

[`sdegen.data.load_hf`][] opens a data set (a folder written by `save_to_disk`, a
local data folder or file, or a hub name) and returns it as a `datasets.Dataset`
whose rows read as `{"x": array, "label": int}`: images decoded, converted to a
fixed number of channels, resized, put channels first and scaled to $[-1, 1]$ (the
convention of DDPM and score_sde) *when a row is read*. Nothing is stacked in
memory, so a training loop can draw shuffled batches `ds[indices]` from a data set
larger than the machine's memory. [`sdegen.data.to_arrays`][] stacks a (small) one
into arrays; [`sdegen.data.hf_format`][] gives back how it was loaded.
"""

import dataclasses
import os
from typing import Any

import numpy as np

from .._core._misc import default_float
from ._hf_format import (
    HFFormat,
    _array_format,
    _check_size,
    _image_format,
    _label_info,
    _pick_column,
    _pick_labels,
)


# ---------------------------------------------------------------- opening


def _datasets():
    """The `datasets` package, or an error naming the extra that installs it."""
    try:
        import datasets
    except ImportError:
        raise ImportError(
            "loading Hugging Face data sets needs the `datasets` package; install the "
            "data extra: pip install 'sdegen[data]'."
        ) from None
    return datasets


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]


def _is_saved(path: str) -> bool:
    return os.path.isdir(path) and any(
        os.path.exists(os.path.join(path, f))
        for f in ("dataset_info.json", "state.json", "dataset_dict.json")
    )


def _looks_like_path(name: str) -> bool:
    return os.path.isabs(name) or name.startswith(("./", "../", "~", ".\\"))


def _open(name: str, split: str | None, load_kwargs: dict[str, Any]):
    datasets = _datasets()

    path = os.path.expanduser(name)
    if _is_saved(path):
        ds = datasets.load_from_disk(path)
        if isinstance(ds, datasets.DatasetDict):
            if split is None:
                split = "train" if "train" in ds or len(ds) != 1 else next(iter(ds))
            if split not in ds:
                raise ValueError(
                    f"`split` {split!r} not found in {name!r}; splits: {', '.join(ds)}."
                )
            ds = ds[split]
        elif split is not None and str(ds.split) != split:
            raise ValueError(
                f"`split` {split!r}: {name!r} holds one data set (split "
                f"{str(ds.split) if ds.split is not None else 'unnamed'}), not a "
                "DatasetDict; leave the split out."
            )
        return ds
    split = "train" if split is None else split
    if _looks_like_path(name) and not os.path.exists(path):
        raise ValueError(f"`name_or_path` {name!r}: no such file or folder.")
    try:
        ds = datasets.load_dataset(path, split=split, **load_kwargs)
    except (ConnectionError, FileNotFoundError) as e:
        where = "the local files" if os.path.exists(path) else "the Hugging Face hub"
        raise ValueError(
            f"`name_or_path` {name!r}: could not load it from {where} "
            f"({_first_line(e)}); check the name and the network, or pass a folder "
            "written by `Dataset.save_to_disk`."
        ) from None
    except ValueError as e:
        if "split" in str(e).lower():
            raise ValueError(f"`split` {split!r}: {_first_line(e)}") from None
        raise
    if not isinstance(ds, datasets.Dataset):
        raise ValueError(
            f"`name_or_path` {name!r} gave a {type(ds).__name__}, not a "
            "datasets.Dataset (a streaming data set?)."
        )
    return ds


def load_hf(
    name_or_path: str | os.PathLike,
    *,
    split: str | None = None,
    image_column: str | None = None,
    label_column: str | None = "auto",
    image_size: int | tuple[int, int] | None = None,
    channels: int | None = None,
    max_examples: int | None = None,
    scale: str = "auto",
    dtype: Any = None,
    **load_kwargs: Any,
):
    r"""Open a Hugging Face `datasets` data set as rows of channels-first arrays in
    $[-1, 1]$, converted when read.

    A folder written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk` is read
    with `datasets.load_from_disk`; anything else goes to
    `datasets.load_dataset(name_or_path, split=split, **load_kwargs)`: a local data
    folder or file (e.g. a folder of images), or a hub name such as `"ylecun/mnist"`.

    The result is a `datasets.Dataset` (memory-mapped Arrow on disk) with an
    [`sdegen.data.HFFormat`][] as its transform: `ds[i]` is
    `{"x": array of shape `shape`, "label": int}` and `ds[indices]` is a batch
    `{"x": (B, *shape), "label": (B,)}` (no `"label"` without a label column), so a
    training loop reads one shuffled batch at a time. Images are converted to
    `channels` channels (`"L"` or `"RGB"`), resized to `image_size` (bilinear) and
    scaled by $x = v / 127.5 - 1$.

    **Arguments:**

    - `name_or_path`: a saved folder, a local data folder or file, or a hub name.
    - `split`: the split to use, of a saved `DatasetDict` or of a hub data set
      (default `"train"`, or the only split of a saved `DatasetDict`); a folder that
      holds one saved `Dataset` has no splits to choose from.
    - `image_column`: the data column: an `Image` column or a numeric array column.
      By default the first `Image` column, else the first numeric array column.
    - `label_column`: a column of integer class labels (a `ClassLabel` or an integer
      column); `"auto"` picks the only `ClassLabel` column or a column named
      `label`/`labels` when there is one; `None`: no labels.
    - `image_size`: resize images to this size, an int or `(height, width)` (needed
      when the images differ in size).
    - `channels`: 1 (grey) or 3 (RGB) for images; by default that of the first
      image. For array columns, a check of the channel axis.
    - `max_examples`: use only the first `max_examples` rows.
    - `scale`: for array columns: `"auto"` scales integers in $[0, 255]$ as 8-bit
      images and otherwise maps the column's $[\min, \max]$ onto $[-1, 1]$ (one pass
      over the column); `"minmax"` always does the latter; `"none"` keeps the values.
    - `dtype`: floating dtype of `x` (JAX's default float when `None`).
    - `**load_kwargs`: passed to `datasets.load_dataset` (e.g. `revision=`).

    **Returns:** the `datasets.Dataset`; [`sdegen.data.hf_format`][]`(ds)` gives its
    [`sdegen.data.HFFormat`][] (shape, number of classes, scaling).

    **Raises:** `ValueError` (one line) for a hub name that cannot be reached or does
    not exist, a missing split, an unknown column, a column of the wrong type (an
    image column that holds text, a label column of floats or strings, negative
    labels), a bad `image_size`, `channels` or `max_examples`, an empty or constant
    data set; when a batch is read, for images of different sizes without
    `image_size` or non-finite values.

    !!! example

        ```python
        ds = sg.data.load_hf("path/to/saved", image_size=32, label_column="label")
        batch = ds[[0, 5, 7]]          # {"x": (3, C, 32, 32) in [-1, 1], "label": (3,)}
        x, labels = sg.data.to_arrays(ds.select(range(100)))
        ```
    """
    if scale not in ("auto", "minmax", "none"):
        raise ValueError(f"`scale` must be 'auto', 'minmax' or 'none', got {scale!r}.")
    if channels is not None and (
        isinstance(channels, bool) or not isinstance(channels, int) or channels < 1
    ):
        raise ValueError(f"`channels` must be a positive int (1 or 3 for images), got "
                         f"{channels!r}.")  # fmt: skip
    size = _check_size(image_size)
    if max_examples is not None and (
        isinstance(max_examples, bool) or int(max_examples) != max_examples
        or max_examples <= 0
    ):  # fmt: skip
        raise ValueError(f"`max_examples` must be a positive int, got {max_examples!r}.")
    name = os.fspath(name_or_path)
    ds = _open(name, split, load_kwargs)
    if max_examples is not None and max_examples < len(ds):
        ds = ds.select(range(int(max_examples)))
    if len(ds) == 0:
        raise ValueError(f"The data set {name!r} is empty.")
    column = _pick_column(ds.features, image_column)
    label_name = _pick_labels(ds.features, label_column, column)
    ds = ds.select_columns([column] + ([label_name] if label_name else []))
    nc, names = _label_info(ds, label_name)
    dtype = np.dtype(default_float() if dtype is None else dtype).name
    datasets = _datasets()
    if isinstance(ds.features[column], datasets.Image):
        if channels not in (None, 1, 3):
            raise ValueError(f"`channels` must be 1 or 3 for images, got {channels!r}.")
        fmt = _image_format(ds, column, label_name, size, channels, dtype, nc, names)
    else:
        fmt = _array_format(ds, column, label_name, channels, scale, dtype, nc, names,
                            size)  # fmt: skip
    fmt = dataclasses.replace(fmt, name=name)
    out = ds.with_transform(fmt)
    out[0]  # read one row now: a bad column or label fails here, not mid-training
    return out


def hf_format(ds: Any) -> HFFormat:
    """The [`sdegen.data.HFFormat`][] of a data set returned by
    [`sdegen.data.load_hf`][] (or a `select`/`shuffle` of it).

    **Raises:** `ValueError` for any other object.
    """
    fmt = getattr(ds, "format", {}) or {}
    t = fmt.get("format_kwargs", {}).get("transform") if isinstance(fmt, dict) else None
    if not isinstance(t, HFFormat):
        raise ValueError(
            "`ds` is not a data set returned by sdegen.data.load_hf (its rows have no "
            "sdegen format)."
        )
    return t


def to_arrays(ds: Any, *, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray | None]:
    r"""Stack a data set of [`sdegen.data.load_hf`][] into NumPy arrays: `(x, labels)`
    with `x` of shape `(N, *shape)` in the format's dtype and `labels` `(N,)` int32 or
    `None`. Reads `batch_size` rows at a time; meant for held-out sets and small data
    (a large data set should be streamed, e.g. by [`sdegen.train`][])."""
    fmt = hf_format(ds)
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}.")
    xs, ys = [], []
    for start in range(0, len(ds), int(batch_size)):
        b = ds[start : start + int(batch_size)]
        xs.append(b["x"])
        if fmt.label_column is not None:
            ys.append(b["label"])
    x = np.concatenate(xs) if xs else np.zeros((0, *fmt.shape), fmt.dtype)
    y = np.concatenate(ys) if fmt.label_column is not None and ys else None
    return x, y
