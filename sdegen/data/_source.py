r"""Batches drawn from a Hugging Face `datasets.Dataset` without stacking it in memory.

[`sdegen.data.DatasetSource`][] gathers the rows of one batch at a time from the
Arrow table behind the data set (memory-mapped from disk for a saved or downloaded
data set) in NumPy format, so training on a data set larger than memory costs one
batch of memory. [`sdegen.train`][] accepts it as `data`; the order of the rows is the
per-epoch permutation of [`sdegen.data.batch_indices`][], drawn from the run's key,
so a run on a `DatasetSource` sees exactly the batches of a run on the same data
stacked into an array, and resumes as exactly.
"""

from collections.abc import Callable
from typing import Any

import numpy as np

from .._core._checks import check_callable


class DatasetSource:
    """A batch source over a `datasets.Dataset` (final; not a pytree).

    The column must hold numeric arrays of one shape per row (images already
    decoded, resized and converted, e.g. by `sdegen.data.load_hf`'s loader or by
    `Dataset.map`); `transform` is applied to each gathered batch on the host (e.g.
    a scaling to $[-1, 1]$ or an [`sdegen.data.AffineTransform`][]'s `forward`).

    **Arguments:**

    - `dataset`: a `datasets.Dataset` (not a `DatasetDict`: pick a split).
    - `column`: the column of the examples.
    - `label_column`: optional integer column of class labels; batches are then
      `(x, labels)` pairs.
    - `transform`: optional `transform(x) -> x` on a NumPy batch `(B, *shape)`.
    - `dtype`: floating dtype of the batches (JAX's default float when `None`).

    **Raises:** `ValueError` naming the column for a missing column, a non-numeric or
    ragged column, or non-integer labels.
    """

    def __init__(
        self,
        dataset: Any,
        column: str,
        label_column: str | None = None,
        *,
        transform: Callable[[np.ndarray], np.ndarray] | None = None,
        dtype: Any = None,
    ):
        try:
            import datasets
        except ImportError:  # pragma: no cover - a core dependency
            raise ValueError("DatasetSource needs the `datasets` package.") from None
        if not isinstance(dataset, datasets.Dataset):
            raise ValueError(
                "`dataset` must be a datasets.Dataset (for a DatasetDict pick a split, "
                f"e.g. ds['train']), got {type(dataset).__name__}."
            )
        if transform is not None:
            check_callable("transform", transform, "transform(x) -> x")
        if len(dataset) == 0:
            raise ValueError("`dataset` is empty.")
        if dtype is None:
            import jax.numpy as jnp

            dtype = jnp.zeros(()).dtype
        self.dtype = np.dtype(dtype)
        self.column = column
        self.label_column = label_column
        self.transform = transform
        self.dataset = dataset
        self._views = [dataset]
        if dataset.format.get("type") in (None, "python", "arrow"):
            # Plain columns: read the examples as NumPy in our dtype (the NumPy format
            # would give float32 otherwise) and the labels as they are. A data set with
            # its own format or transform (e.g. from sdegen.data.load_hf) is read as
            # it is.
            cols = dataset.column_names
            self._views = [
                dataset.with_format("numpy", columns=[c], **kw)
                for c, kw in ((column, {"dtype": self.dtype}), (label_column, {}))
                if c in cols
            ]
        keys = [k for v in self._views for k in v[[0]].keys()]
        for name, col in (("column", column), ("label_column", label_column)):
            if col is not None and (not isinstance(col, str) or col not in keys):
                raise ValueError(
                    f"`{name}` {col!r} is not a column of the data set; its rows have "
                    f"the columns {keys}."
                )
        first = self._rows(np.array([0]))
        x0 = first[0] if label_column is not None else first
        self.shape: tuple[int, ...] = tuple(x0.shape[1:])
        """The shape of one example (after `transform`)."""

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def has_labels(self) -> bool:
        return self.label_column is not None

    def _rows(self, idx: np.ndarray):
        rows = {}
        for view in self._views:
            rows.update(view[idx])
        try:
            x = np.asarray(rows[self.column])
        except ValueError:  # NumPy refuses ragged rows
            x = np.empty(0, object)
        if x.dtype == object:
            raise ValueError(
                f"Column {self.column!r} holds examples of different shapes or types; "
                "resize/convert them to one shape first."
            )
        if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
            raise ValueError(
                f"Column {self.column!r} must hold numbers, got dtype {x.dtype}."
            )
        x = np.asarray(x, self.dtype)
        if self.transform is not None:
            x = np.asarray(self.transform(x), self.dtype)
        if self.label_column is None:
            return x
        y = np.asarray(rows[self.label_column])
        if not np.issubdtype(y.dtype, np.integer):
            raise ValueError(
                f"`label_column` {self.label_column!r} must hold integers, got dtype "
                f"{y.dtype}."
            )
        return x, y.astype(np.int32)

    def batch(self, indices: Any):
        """The examples at `indices` (in that order): an array `(B, *shape)`, or an
        `(x, labels)` pair when there is a label column."""
        return self._rows(np.asarray(indices, np.int64))

    def __repr__(self) -> str:
        return (f"DatasetSource({len(self)} rows, column={self.column!r}, "
                f"label_column={self.label_column!r}, shape={self.shape})")  # fmt: skip
