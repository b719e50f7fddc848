"""What a command writes and prints about samples: metrics against held-out data,
figures, `.npy` arrays, and a one-line summary.

The metrics are [`sdegen.metrics.sample_report`][] (sample mean and std against the
data's, the fraction of values outside the data's range), the verdict of
[`sdegen.metrics.verdict`][] against all the real examples (Fréchet ratio with its
interval, kernel distance; a conditional sample against its class), plus, for 2-D data, MMD and sliced
Wasserstein distances with their data-vs-data floor, and for the digits the verdict of
an independent classifier (scikit-learn's logistic regression on the real digits).
"""

import io
import sys
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import jax.random as jr
import numpy as np

import sdegen as sg

from .._runs._checkpoint import atomic_write_bytes


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out[k] = _jsonable(v)
        elif np.ndim(v) == 0 and isinstance(v, np.generic | float | int | bool):
            out[k] = v.item() if isinstance(v, np.generic) else v
        elif hasattr(v, "shape"):
            out[k] = np.asarray(v).tolist()
        else:
            out[k] = v
    return out


def sample_metrics(samples: np.ndarray, held_out: np.ndarray, *, kind: str,
                   dataset: str, labels: Any = None, seed: int = 0,
                   reference: tuple[np.ndarray, str] | None = None,
                   features: Any = None) -> dict[str, Any]:  # fmt: skip
    """Metrics of `samples` against `held_out` data (see the module docstring);
    `labels` (an int or one per sample) are the classes the samples were drawn
    for. With `reference` (examples and a description, see
    `_data.reference_pool`), the Fréchet numbers are those of
    [`sdegen.metrics.verdict`][] against it (on `features`, default: PCA-16 fitted on
    it for data of more than 16 entries), with its interval, kernel distance and
    verdict."""
    samples = np.asarray(samples)
    out: dict[str, Any] = {"num_samples": int(samples.shape[0]),
                           "samples_finite": bool(np.all(np.isfinite(samples)))}  # fmt: skip
    if len(held_out) >= 4:
        report = sg.metrics.sample_report(samples, held_out, key=jr.key(seed))
        out.update(_jsonable(dict(report)))
    flat = samples.reshape(len(samples), -1)
    ok = samples[np.all(np.isfinite(flat), axis=1)]
    if reference is not None and len(reference[0]) >= 6 and len(ok) >= 2:
        out.update(verdict_of(ok, *reference, features=features, seed=seed))
    if not out["samples_finite"]:
        return out
    if kind == "vector" and samples.ndim == 2:
        n = min(len(samples), len(held_out) // 2 or 1, 2000)
        x, y = jnp.asarray(samples[:n]), jnp.asarray(held_out[:n])
        out["mmd"] = float(sg.metrics.mmd(x, y))
        out["sliced_wasserstein"] = float(sg.metrics.sliced_wasserstein(jr.key(0), x, y))
        if len(held_out) >= 2 * n:
            # the same statistic between two independent data sets: the noise floor
            out["mmd_data_vs_data"] = float(
                sg.metrics.mmd(jnp.asarray(held_out[n : 2 * n]), y)
            )
        if dataset in ("8gaussians", "eight_gaussians") and samples.shape[1] == 2:
            frac = sg.metrics.component_fractions(sg.data.eight_gaussians(), x)
            out["component_fractions"] = np.asarray(frac).tolist()
    elif dataset == "digits":
        out.update(digit_scores(samples, labels))
    return out


def verdict_of(samples: np.ndarray, pool: np.ndarray, what: str, *,
               features: Any = None, seed: int = 0,
               target: float | None = None) -> dict[str, Any]:  # fmt: skip
    """[`sdegen.metrics.verdict`][] of `samples` against the real examples `pool`
    (described by `what`), on `features` (default: PCA-16 fitted on `pool` for data
    of more than 16 entries, else the raw coordinates)."""
    pool = np.asarray(pool)
    if features is None and np.prod(pool.shape[1:]) > 16:
        flat = pool.reshape(len(pool), -1)
        features = sg.metrics.PCAFeatures.fit(flat, min(16, *flat.shape))
    v = sg.metrics.verdict(samples, pool, key=jr.key(seed + 1),
                           features="raw" if features is None else features,
                           target=target)  # fmt: skip
    if features is not None:
        v["features"] = f"pca{features.components.shape[1]}" if hasattr(
            features, "components") else type(features).__name__  # fmt: skip
    v["reference"] = what
    return v


def digit_scores(samples: np.ndarray, labels: Any = None) -> dict[str, Any]:
    """How digit-like samples are: a logistic-regression classifier trained on all
    the real digits gives each sample a class and a confidence; with `labels` (one
    class, or one per sample), `label_accuracy` is the fraction of samples read as
    the class they were drawn for."""
    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        raise ImportError(
            "the digit classifier needs scikit-learn; install the data extra: pip "
            "install 'sdegen[data]'."
        ) from None

    x, y = sg.data.load_digits()
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    clf = LogisticRegression(max_iter=5000, C=0.1)
    clf.fit(x, np.asarray(y))
    s = np.clip(np.asarray(samples, np.float64).reshape(len(samples), -1), -1, 1)
    p = clf.predict_proba(s)
    counts = np.bincount(np.argmax(p, axis=1), minlength=10)
    out = {
        "classifier_confidence": float(np.mean(np.max(p, axis=1))),
        "classifier_confidence_real_digits": float(
            np.mean(np.max(clf.predict_proba(x), axis=1))
        ),
        "fraction_confident_0.9": float(np.mean(np.max(p, axis=1) > 0.9)),
        "class_counts": counts.tolist(),
    }
    if labels is not None:
        out["label_accuracy"] = float(np.mean(np.argmax(p, axis=1) == np.asarray(labels)))
    return out


def save_npy(path: Path, array: np.ndarray) -> Path:
    buf = io.BytesIO()
    np.save(buf, np.asarray(array))
    return atomic_write_bytes(path, buf.getvalue())


def write_samples(png: Path, samples: np.ndarray, held_out: np.ndarray, kind: str,
                  title: str, levels: int | None = None) -> list[Path]:  # fmt: skip
    """Write `samples` as `png` (an image grid, or a scatter plot beside the data for
    2-D points; no figure for other vectors) and always as the `.npy` beside it; in
    the grid, values beyond the data's range by more than its quantisation step (of
    `levels` levels) are marked. Returns the paths written."""
    from .._runs._plot import save_image_grid, save_scatter

    written = [save_npy(png.with_suffix(".npy"), samples)]
    if kind == "image" and samples.ndim == 4:
        step = 2.0 / (levels - 1) if levels else 0.0
        written.append(save_image_grid(png, samples[:100], scale=6, title=title,
                                       tolerance=step))  # fmt: skip
    elif samples.ndim == 2 and samples.shape[1] == 2:
        written.append(save_scatter(png, samples, held_out, title=title))
    return written


SUMMARY_KEYS = ("steps", "final_loss", "eval_loss", "train_wall_time_s",
                "steady_steps_per_s", "wall_time_s", "frechet_distance",
                "frechet_floor", "frechet_ratio", "kid", "mmd", "mmd_data_vs_data",
                "sliced_wasserstein", "mean", "data_mean", "std", "data_std",
                "frac_outside_range", "frac_nonfinite", "classifier_confidence",
                "fraction_confident_0.9", "label_accuracy")  # fmt: skip


def summary(m: dict[str, Any]) -> str:
    """The numbers of a result on one line, `key=value, ...`."""
    parts = [f"{k}={m[k]:.4g}" if isinstance(m[k], float) else f"{k}={m[k]}"
             for k in SUMMARY_KEYS if m.get(k) is not None]  # fmt: skip
    if m.get("samples_finite") is False:
        parts.append("samples NOT finite")
    line = ", ".join(parts)
    if m.get("verdict"):
        line += f"\nverdict against {m['reference']}: {m['verdict']}"
    return line


def say(message: str) -> None:
    """A status line on stderr (stdout is for results)."""
    print(f"sdegen: {message}", file=sys.stderr, flush=True)
