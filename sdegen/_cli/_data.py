"""`--dataset` and its options, resolved into training data and a held-out set.

- `digits`: the embedded 8x8 digits (arrays; labels `label`).
- a toy name (`moons`, ...): a sampler drawing fresh points every step.
- anything else: [`sdegen.data.load_hf`][] (a saved folder, local data, or a hub
  name; `hf:NAME` forces the hub), whose rows are read batch by batch.

A tenth of the examples (at most 2000, and at most 2^24 values), in a fixed random
order, is held out for the evaluation loss, the sample metrics and `sdegen
likelihood`; the rest is the training set.
"""

from dataclasses import dataclass
from typing import Any

import numpy as np

from ._errors import CLIError, flag_names


TOY_HELD_OUT = 2000

# The library arguments of `load_hf` that come straight from a flag.
HF_FLAGS = {"name_or_path": "--dataset", "split": "--split",
            "image_column": "--image-column", "label_column": "--label-column",
            "image_size": "--image-size", "channels": "--channels",
            "max_examples": "--max-examples"}  # fmt: skip


@dataclass
class RunData:
    """The data of a run: `train` is an array, an `(x, labels)` pair, a sampler
    `f(key, n)` or a `datasets.Dataset` of rows `{"x", "label"}`; `held_out` (and
    `held_out_labels`) are NumPy arrays."""

    name: str
    kind: str  # "image" or "vector"
    shape: tuple[int, ...]
    train: Any
    held_out: np.ndarray
    held_out_labels: np.ndarray | None
    num_classes: int | None
    format: dict[str, Any] | None  # how raw values were scaled to the model's space
    levels: int | None  # number of quantisation levels of the raw values (bits/dim)


def data_spec(args: Any) -> dict[str, Any]:
    """The data flags as a JSON-serialisable dict (stored in `config.json`)."""
    size = getattr(args, "image_size", None)
    return {
        "dataset": args.dataset,
        "split": getattr(args, "split", None),
        "image_column": getattr(args, "image_column", None),
        "label_column": getattr(args, "label_column", None),
        "image_size": None if size is None else list(size),
        "channels": getattr(args, "channels", None),
        "max_examples": getattr(args, "max_examples", None),
    }


def _toy_names() -> list[str]:
    from .. import data

    return list(data.TOY_DATASETS)


def _is_toy(name: str) -> bool:
    from ..data._toy import _normalise

    return _normalise(name) in _toy_names()


def _reject(spec: dict[str, Any], what: str, flags: tuple[str, ...]) -> None:
    for key in flags:
        if spec.get(key) is not None:
            flag = "--" + key.replace("_", "-")
            raise CLIError(f"{flag} does not apply to {what}.")


def _held_out_size(n: int, num_dims: int) -> int:
    if n < 2:
        raise CLIError(f"--dataset has {n} example(s); at least 2 are needed.")
    return max(1, min(n // 10, 2000, 2**24 // max(1, num_dims)))


def _permutation(n: int) -> np.ndarray:
    import jax.random as jr

    # The order `sdegen demo` has always used (and examples/_common.digits_split).
    return np.asarray(jr.permutation(jr.key(0), n))


def _digits(spec: dict[str, Any]) -> RunData:
    import sdegen as sg

    _reject(spec, "the built-in digits", ("split", "image_column", "image_size",
                                          "channels"))  # fmt: skip
    label = spec.get("label_column")
    if label not in (None, "label", "auto"):
        raise CLIError(
            f"--label-column {label!r}: the digits have one label column, 'label'."
        )
    x, y = sg.data.load_digits()
    x, y = np.asarray(x), np.asarray(y)
    if spec.get("max_examples") is not None:
        x, y = x[: spec["max_examples"]], y[: spec["max_examples"]]
    perm = _permutation(len(x))
    n_val = len(x) // 10 if len(x) >= 20 else _held_out_size(len(x), 64)
    tr, va = perm[n_val:], perm[:n_val]
    conditional = label is not None
    train = (x[tr], y[tr]) if conditional else x[tr]
    return RunData("digits", "image", (1, 8, 8), train, x[va],
                   y[va] if conditional else None, 10 if conditional else None,
                   {"value_range": [0.0, 16.0]}, 17)  # fmt: skip


def _toy(spec: dict[str, Any], seed: int) -> RunData:
    import jax.random as jr

    import sdegen as sg

    _reject(spec, "a 2-D toy data set", ("split", "image_column", "label_column",
                                         "image_size", "channels", "max_examples"))  # fmt: skip
    sampler = sg.data.toy(spec["dataset"])
    held_out = np.asarray(sampler(jr.key(10_000 + seed), TOY_HELD_OUT))
    return RunData(spec["dataset"], "vector", (2,), sampler, held_out, None, None,
                   None, None)  # fmt: skip


def _hf(spec: dict[str, Any]) -> RunData:
    import sdegen as sg

    name = spec["dataset"]
    if name.startswith("hf:"):
        name = name[3:]
    size = spec.get("image_size")
    label = spec.get("label_column")
    with flag_names(HF_FLAGS):
        ds = sg.data.load_hf(name, split=spec.get("split"),
                             image_column=spec.get("image_column"),
                             label_column=label, image_size=None if size is None
                             else tuple(size), channels=spec.get("channels"),
                             max_examples=spec.get("max_examples"))  # fmt: skip
        fmt = sg.data.hf_format(ds)
        if label is not None and fmt.num_classes is None:
            raise CLIError(f"--label-column {label!r}: the data set has no labels.")
        if label is not None and fmt.num_classes < 2:
            raise CLIError(
                f"--label-column {label!r} holds a single class; a class-conditional "
                "model needs at least 2."
            )
        perm = _permutation(len(ds))
        n_val = _held_out_size(len(ds), fmt.num_dims)
        held, labels = sg.data.to_arrays(ds.select(np.sort(perm[:n_val])))
    train = ds.select(perm[n_val:])
    kind = "image" if len(fmt.shape) == 3 else "vector"
    levels = 256 if fmt.kind == "image" else None
    return RunData(name, kind, tuple(fmt.shape), train, held, labels, fmt.num_classes,
                   fmt.to_dict(), levels)  # fmt: skip


def load_data(spec: dict[str, Any], seed: int = 0) -> RunData:
    """The training data and held-out set of a data spec (see `data_spec`)."""
    name = spec["dataset"]
    if name == "digits":
        return _digits(spec)
    if not name.startswith("hf:") and _is_toy(name):
        return _toy(spec, seed)
    try:
        return _hf(spec)
    except CLIError as e:
        if "/" in name or "Hugging Face hub" not in str(e):
            raise
        builtin = ", ".join(["digits", *_toy_names()])
        raise CLIError(f"{e} Built-in data sets: {builtin}.") from None


# ---------------------------------------------------------------- transform


def fit_transform(kind: str, data: RunData):
    r"""`--transform`: the data transform of a new run, fitted on (up to 2000)
    training examples, or `None` for `none`.

    - `logit` ([`sdegen.data.LogitTransform`][] with $\alpha = 0.05$ on $[-1, 1]$,
      then centred by the mean example and scaled to unit std): images, whose
      samples then stay within $(-1.11, 1.11)$ whatever the model. For quantised
      data ($L$ levels) the logit's range is the dequantised one,
      $[-1 - h, 1 + h]$ with $h = 1/(L-1)$, so that every dequantisation bin, the
      blank pixels' included, maps to a bounded interval with a bounded log-det
      (on $[-1, 1]$ the bin of $-1$ would reach $p \to 0$ of the logit);
    - `pixel` / `mean`: [`sdegen.data.standardize`][] centred by the mean example /
      the mean value;
    - `auto`: `logit` for images, `none` for vectors.
    """
    import jax.random as jr

    import sdegen as sg

    if kind == "auto":
        kind = "logit" if data.kind == "image" else "none"
    if kind == "none":
        return None
    if kind == "logit" and data.kind != "image":
        raise CLIError(
            "--transform logit needs images with values in [-1, 1]; use pixel, mean "
            "or none for vector data."
        )
    train = data.train
    if callable(train) and not hasattr(train, "select"):  # a toy sampler
        x = np.asarray(train(jr.key(20_000), 2000))
    elif hasattr(train, "select"):  # a datasets.Dataset
        x, _ = sg.data.to_arrays(train.select(range(min(2000, len(train)))))
    else:
        x = np.asarray(train[0] if isinstance(train, tuple) else train)[:2000]
    if kind == "logit":
        h = 0.0 if data.levels is None else 1.0 / (data.levels - 1)
        logit = sg.data.LogitTransform(-1.0 - h, 1.0 + h, alpha=0.05)
        scale = sg.data.standardize(logit.forward(x), center="pixel")
        return sg.data.ChainTransform((logit, scale))
    return sg.data.standardize(x, center=kind)


def training_source(data: RunData, transform: Any) -> Any:
    """What [`sdegen.train`][] gets: arrays (or an `(x, labels)` pair) mapped by the
    transform; a toy sampler composed with it; a `datasets.Dataset` as a
    [`sdegen.data.DatasetSource`][] that reads one batch at a time and maps it."""
    import sdegen as sg

    train = data.train
    forward = None if transform is None else transform.forward
    if hasattr(train, "select"):
        label = "label" if data.num_classes is not None else None
        return sg.data.DatasetSource(train, "x", label, transform=forward)
    if callable(train):
        return train if forward is None else _Composed(train, forward)
    if forward is None:
        return train
    if isinstance(train, tuple):
        return (forward(np.asarray(train[0])), train[1])
    return forward(np.asarray(train))


class _Composed:
    """`f(key, n)` followed by a transform (a toy sampler in the model's space)."""

    def __init__(self, sampler, forward):
        self.sampler, self.forward = sampler, forward

    def __call__(self, key, n):
        return self.forward(self.sampler(key, n))


# ---------------------------------------------------------------- reference data


def reference_pool(data: RunData, label: int | None = None,
                   max_examples: int = 3000) -> tuple[np.ndarray, str]:  # fmt: skip
    """All the real examples a verdict can use (the held-out set and the training
    set, as FID's reference holds the training data), at most `max_examples` (the
    verdict's kernel matrices grow as their square; see `sdegen.metrics.verdict`'s
    `max_data`); with `label`, only that class's. Returns the examples and a
    description."""
    import jax.random as jr

    import sdegen as sg

    train, labels = data.train, None
    if hasattr(train, "select"):  # a datasets.Dataset: the first rows
        n = min(len(train), max_examples)
        x, labels = sg.data.to_arrays(train.select(range(n)))
    elif callable(train):  # a toy sampler: fresh draws
        x = np.asarray(train(jr.key(30_000), max(0, max_examples - len(data.held_out))))
    elif isinstance(train, tuple):
        x, labels = np.asarray(train[0]), np.asarray(train[1])
    else:
        x = np.asarray(train)
    pool = np.concatenate([np.asarray(data.held_out), x[:max_examples]])
    what = f"{len(pool)} real examples of {data.name}"
    if label is None:
        return pool, what
    if data.held_out_labels is None or labels is None:
        raise CLIError("--label: the data set's labels are not available to score a "
                       "conditional sample against its class.")  # fmt: skip
    keep = np.concatenate([np.asarray(data.held_out_labels), labels[:max_examples]])
    pool = pool[keep == label]
    return pool, f"the {len(pool)} real examples of class {label} of {data.name}"
