r"""A sample-quality verdict with a confidence interval: the Fréchet distance of the
samples to a large reference set over that of real held-out data to the same
reference, at the same sample count, with the kernel distance beside it."""

from collections.abc import Callable
from typing import Any

import numpy as np

from ._distances import (
    _features,
    _seed,
    example_sets,
    gaussian_frechet_distance,
    resolve_features,
)
from ._kid import _poly


def _moments(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return f.mean(0), np.atleast_2d(np.cov(f, rowvar=False))


def _fd(f: np.ndarray, ref: tuple[np.ndarray, np.ndarray]) -> float:
    return gaussian_frechet_distance(*_moments(f), *ref)


class _Kids:
    r"""Kernel distances of weighted subsets of the samples (rows of `fx`) to subsets
    of the data (rows of `fy`), from the kernel matrices computed once: a multiset of
    samples is a count vector $c$, and its within-set U-statistic is
    $(c^\top K c - \sum_i c_i K_{ii}) / (m(m-1))$."""

    def __init__(self, fx: np.ndarray, fy: np.ndarray):
        self.kss, self.ksy, self.kyy = _poly(fx, fx), _poly(fx, fy), _poly(fy, fy)

    @staticmethod
    def _within(k: np.ndarray, c: np.ndarray) -> float:
        m = c.sum()
        return float((c @ k @ c - c @ np.diag(k)) / (m * (m - 1)))

    def split(self, a: np.ndarray, b: np.ndarray) -> tuple[float, np.ndarray, float]:
        """The reference `a`'s within-set term, the samples' mean kernel to `a` (one
        per sample), and `KID(fy[b], fy[a])`."""
        ca = np.bincount(a, minlength=len(self.kyy)).astype(np.float64)
        cb = np.bincount(b, minlength=len(self.kyy)).astype(np.float64)
        aa = self._within(self.kyy, ca)
        floor = self._within(self.kyy, cb) + aa - 2 * float(cb @ self.kyy @ ca) / (
            cb.sum() * ca.sum())  # fmt: skip
        return aa, self.ksy[:, a].mean(1), floor

    def samples(self, counts: np.ndarray, aa: float, to_a: np.ndarray) -> float:
        """`KID(samples with these counts, a)`."""
        return self._within(self.kss, counts) + aa - 2 * float(counts @ to_a) / counts.sum()


_KID_SPLITS = 20


def _centred(estimate: float, boot: list[float], level: float) -> tuple[float, float]:
    """The bootstrap's spread around its median, centred on the estimate (resampling
    with replacement shifts a Fréchet distance or a kernel distance by the duplicates;
    only the spread is used)."""
    q = np.percentile(boot, [100 * (1 - level) / 2, 50, 100 * (1 + level) / 2])
    return float(estimate - (q[1] - q[0])), float(estimate + (q[2] - q[1]))


def verdict(
    samples: Any,
    data: Any,
    *,
    key: Any,
    features: str | Callable[[Any], Any] = "auto",
    num_splits: int = 100,
    num_boot: int = 50,
    target: float | None = None,
    level: float = 0.95,
    max_data: int = 3000,
) -> dict[str, Any]:
    r"""Are `samples` as good as real data? The split protocol, with an interval.

    Each of `num_splits` (100) random splits cuts `data` ($N$ examples) into a floor set
    $B$ of $m = \min(n, \lfloor N/3\rfloor)$ examples and a reference $A$ of the
    other $N - m$. The **Fréchet ratio** is
    $\overline{\mathrm{FD}(S, A)} / \overline{\mathrm{FD}(B, A)}$ (means over the
    splits; $S$: $m$ of the samples): both distances carry the same estimation bias
    (same $m$, same reference), so a perfect sampler has a ratio of 1 whatever
    $m$; a large reference keeps that bias, and the floor, small (at
    $m = 89$ against 89 examples the bias dominates and every sampler looks like
    the data). The ratio's interval: the spread (the `level` percentiles about the median) of
    the ratio over `num_boot` bootstrap resamples $S^*$ of the samples (each against
    the references of 4 of the splits), centred on the estimate: the noise of the samples; the floor,
    an average over the splits of the same data, is held fixed.

    The **kernel distance** ([`sdegen.metrics.kid`][], unbiased, no floor needed)
    is reported on the first 20 of the splits: `kid` $=\overline{\mathrm{KID}(S, A)}$,
    `kid_floor` $=\overline{\mathrm{KID}(B, A)}$ (about 0), and `kid_ci`, the
    interval of their difference (the same bootstrap, one split per resample).

    `verdict` says in words: `"cannot tell from real data"` when the ratio's
    interval contains 1 (the difference is within the noise), `"worse than real
    data"` when it lies above 1, `"closer than held-out data"` below 1 (the
    reference holds training data: memorised examples score that way). With a
    `target` it also says whether the ratio is within it (`within_target`: `True`
    when the whole interval is at most `target`, `False` when it lies above, `None`
    for "cannot tell").

    **Arguments:**

    - `samples`: `(n, *shape)`, $n \ge 2$, finite (drop non-finite ones first).
    - `data`: real data `(N, *shape)`, as many as there are ($N \ge 6$): the
      training data may be part of it, as FID's reference is.
    - `key`: PRNG key of the splits and resamples.
    - `features`: `"auto"` (raw coordinates up to 16 entries, else
      [`sdegen.metrics.PCAFeatures`][] with 16 components fitted on `data`),
      `"raw"`, `"pca"`, or a map of a batch to `(n, k)`.
    - `num_splits`, `num_boot`: splits, and bootstrap resamples of the samples.
    - `target`: a Fréchet ratio to judge against, or `None`.
    - `level`: the interval's coverage.
    - `max_data`: at most this many examples of `data` are used (a random subset of
      them when there are more; the features are fitted on all of them): the kernel
      distance's matrices grow as $N^2$, and 3000 examples keep the reference large
      against the $m \le N/3$ of a split.

    **Returns:** a dict of JSON-serialisable values: `frechet_distance`,
    `frechet_floor`, `frechet_ratio`, `frechet_ratio_ci` `[lo, hi]`, `frechet_n`
    ($m$), `frechet_reference` ($N - m$), `frechet_splits`, `features`, `kid`,
    `kid_floor`, `kid_ci`, `verdict` (and `within_target`).
    """
    x, y = example_sets(samples, data)
    if len(x) < 2 or not np.all(np.isfinite(x)):
        raise ValueError("`samples` must hold at least 2 examples, all finite.")
    if len(y) < 6 or not np.all(np.isfinite(y)):
        raise ValueError("`data` must hold at least 6 finite examples.")
    num_splits, num_boot = int(num_splits), int(num_boot)
    if num_splits < 1 or num_boot < 1:
        raise ValueError(
            f"`num_splits` and `num_boot` must be positive, got {num_splits}, {num_boot}."
        )
    if int(max_data) < 6:
        raise ValueError(f"`max_data` must be at least 6, got {max_data!r}.")
    max_data = int(max_data)
    if not 0 < level < 1:
        raise ValueError(f"`level` must be in (0, 1), got {level!r}.")
    flat = y.reshape(len(y), -1)
    feat, name = resolve_features(features, flat)
    fx, fy = _features(x, feat, "samples"), _features(y, feat, "data")
    rng = np.random.default_rng(_seed(key))
    if len(fy) > max_data:  # the kernel matrices grow as N^2: a random subset
        fy = fy[rng.choice(len(fy), max_data, replace=False)]
    m = min(len(fx), len(fy) // 3)
    kids = _Kids(fx, fy)
    refs, dist, floor, k_s, k_b = [], [], [], [], []
    for i in range(num_splits):
        perm = rng.permutation(len(fy))
        a, b = perm[m:], perm[:m]
        s = rng.permutation(len(fx))[:m]
        ref = _moments(fy[a])
        dist.append(_fd(fx[s], ref))
        floor.append(_fd(fy[b], ref))
        if i < _KID_SPLITS:  # the kernel distance on the first splits only
            aa, to_a, kb = kids.split(a, b)
            refs.append((ref, aa, to_a))
            c = np.bincount(s, minlength=len(fx)).astype(float)
            k_s.append(kids.samples(c, aa, to_a))
            k_b.append(kb)
    ratio = float(np.mean(dist) / np.mean(floor))
    kid_diff = float(np.mean(k_s) - np.mean(k_b))
    boot_r, boot_k = [], []
    for i in range(num_boot):
        idx = rng.integers(0, len(fx), m)
        mom = _moments(fx[idx])
        some = [refs[(4 * i + j) % len(refs)][0] for j in range(min(4, len(refs)))]
        boot_r.append(np.mean([gaussian_frechet_distance(*mom, *r) for r in some])
                      / np.mean(floor))  # fmt: skip
        _, aa, to_a = refs[i % len(refs)]
        c = np.bincount(idx, minlength=len(fx)).astype(float)
        boot_k.append(kids.samples(c, aa, to_a) - np.mean(k_b))
    lo, hi = _centred(ratio, boot_r, level)
    out: dict[str, Any] = {
        "frechet_distance": float(np.mean(dist)), "frechet_floor": float(np.mean(floor)),
        "frechet_ratio": ratio, "frechet_ratio_ci": [lo, hi], "frechet_n": int(m),
        "frechet_reference": int(len(fy) - m), "frechet_splits": num_splits,
        "features": name, "kid": float(np.mean(k_s)), "kid_floor": float(np.mean(k_b)),
        "kid_ci": list(_centred(kid_diff, boot_k, level)),
    }  # fmt: skip
    out["verdict"] = verdict_text(ratio, lo, hi, m, target)
    if target is not None:
        out["within_target"] = True if hi <= target else False if lo > target else None
    return out


def verdict_text(ratio: float, lo: float, hi: float, m: int,
                 target: float | None = None) -> str:  # fmt: skip
    """The verdict of a Fréchet ratio and its interval, in words."""
    at = f"Fréchet ratio {ratio:.2f} (95% interval {lo:.2f}-{hi:.2f}, m = {m})"
    if lo <= 1 <= hi:
        text = f"cannot tell from real data: {at}"
    elif lo > 1:
        text = f"worse than real data: {at}"
    else:
        text = f"closer than held-out data (memorised training data?): {at}"
    if target is not None:
        if hi <= target:
            text += f"; within the target {target:g}"
        elif lo > target:
            text += f"; misses the target {target:g}"
        else:
            text += f"; cannot tell whether within the target {target:g}"
    return text
