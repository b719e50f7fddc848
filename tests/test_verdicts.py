"""Unbiased sample-quality verdicts (the kernel distance, `sg.metrics.verdict`), the
advisor's use of them, the likelihood baselines, and dequantised training."""

import itertools
import math

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import sdegen as sg
from sdegen._cli._config import Loss
from sdegen._likelihood._baselines import baseline_bits_per_dim


def _kid_loops(x, y):
    """The definition, term by term."""
    k = lambda a, b: (a @ b / len(a) + 1.0) ** 3
    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(n), 2))
    yy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(m), 2))
    xy = sum(k(a, b) for a in x for b in y)
    return xx / (n * (n - 1)) + yy / (m * (m - 1)) - 2 * xy / (n * m)


def test_kid_is_the_unbiased_mmd_with_the_cubic_kernel():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((7, 3)), rng.standard_normal((5, 3)) + 0.5
    assert abs(sg.metrics.kid(x, y) - _kid_loops(x, y)) < 1e-12
    # Unbiased: over 400 pairs of sets of 10 from the same law the mean is 0 within
    # 4 standard errors (the V-statistic, with the diagonal, is biased upwards by
    # far more than that).
    est = [sg.metrics.kid(rng.standard_normal((10, 2)), rng.standard_normal((10, 2)))
           for _ in range(400)]  # fmt: skip
    se = np.std(est) / math.sqrt(len(est))
    assert abs(np.mean(est)) < 4 * se
    with pytest.raises(ValueError, match="same d"):
        sg.metrics.kid(x, y[:, :2])
    with pytest.raises(ValueError, match="finite"):
        sg.metrics.kid(np.full((3, 3), np.nan), y)


@pytest.fixture(scope="module")
def gaussian_data():
    rng = np.random.default_rng(1)
    return rng.standard_normal((1500, 2)), rng


def test_verdict_cannot_tell_data_from_data_and_sees_a_shift(gaussian_data):
    data, rng = gaussian_data
    same = sg.metrics.verdict(rng.standard_normal((400, 2)), data, key=jr.key(0),
                              target=2.0)  # fmt: skip
    lo, hi = same["frechet_ratio_ci"]
    assert lo <= 1 <= hi and same["verdict"].startswith("cannot tell")
    assert same["frechet_n"] == 400 and same["frechet_reference"] == 1100
    assert same["within_target"] is not False
    shifted = sg.metrics.verdict(rng.standard_normal((400, 2)) + 0.3, data,
                                 key=jr.key(0), target=2.0)  # fmt: skip
    assert shifted["frechet_ratio_ci"][0] > 2.0 and shifted["within_target"] is False
    assert shifted["verdict"].startswith("worse than real data")
    # the kernel distance sees it too; on data vs data it is about 0
    assert shifted["kid_ci"][0] > 0 and same["kid_ci"][0] <= 0 <= same["kid_ci"][1]
    # m = min(n, N // 3)
    assert sg.metrics.verdict(data[:900], data, key=jr.key(0))["frechet_n"] == 500


def test_advise_reports_intervals_and_when_nothing_was_measured(gaussian_data):
    gmm = sg.data.GaussianMixture(jnp.array([[-1.0, 0.0], [1.0, 0.0]]),
                                  jnp.stack([0.3 * jnp.eye(2)] * 2), jnp.array([0.5, 0.5]))
    sde = sg.VPSDE()
    data = np.asarray(gmm.sample(jr.key(3), 900))
    adv = sg.advise(jr.key(0), sde, gmm.score(sde), data, solvers=["euler", "dpmpp_2m"],
                    nfes=[2, 20], num_samples=300, target=1.5)  # fmt: skip
    by = {(r["solver"], r["nfe"]): r for r in adv.rows}
    assert set(by) == {("euler", 2), ("euler", 20), ("dpmpp_2m", 2), ("dpmpp_2m", 20)}
    assert all(len(r["frechet_ratio_ci"]) == 2 and r["verdict"] for r in adv.rows)
    # the exact score with 20 DPM-Solver++ steps is as good as the data; 2 Euler steps
    # are not
    assert by[("euler", 2)]["frechet_ratio"] > by[("dpmpp_2m", 20)]["frechet_ratio"]
    rec = adv.recommended
    assert rec is not None and rec["frechet_ratio"] <= 1.5 and "Recommended" in adv.summary()
    with pytest.raises(ValueError, match="Nothing was measured"):
        sg.advise(jr.key(0), sde, gmm.score(sde), data, solvers=["heun"], nfes=[1],
                  num_samples=20)  # fmt: skip


def test_baselines_uniform_histogram_gaussian():
    rng = np.random.default_rng(0)
    train = rng.integers(0, 3, (50, 2))
    held = np.array([[0, 2], [1, 1]])
    base = baseline_bits_per_dim(train, held, 4, seed=5)
    assert base["uniform"] == 2.0
    # add-one smoothing: P_i(k) = (c_i(k) + 1) / (N + L)
    p = [(np.sum(train[:, i] == held[j, i]) + 1) / 54 for j in range(2) for i in range(2)]
    assert abs(base["histogram"] + np.mean(np.log2(p))) < 1e-12
    # the Gaussian on dequantised data, by scipy, with the same uniform draws
    from scipy.stats import multivariate_normal

    r = np.random.default_rng(5)
    y_tr, y_te = train + r.uniform(size=train.shape), held + r.uniform(size=held.shape)
    lp = multivariate_normal(y_tr.mean(0), np.cov(y_tr, rowvar=False)).logpdf(y_te)
    assert abs(base["gaussian"] + np.mean(lp) / (2 * math.log(2))) < 1e-10
    with pytest.raises(ValueError, match="held_out"):
        baseline_bits_per_dim(train, held + 3, 4)


def test_dequantised_training_batches_stay_in_their_bins():
    # A 17-level image through the logit transform on the dequantised range: the
    # loss sees fresh uniform noise within each level's bin, mapped forward.
    levels = np.arange(17)
    x = (-1 + levels * 2 / 16).reshape(1, 1, 1, 17).repeat(4, 0)
    h = 1 / 16
    logit = sg.data.LogitTransform(-1 - h, 1 + h, alpha=0.05)
    cfg = {"loss": "dsm", "network": {"sigma_data": 1.0}, "data": {},
           "transform": logit.to_dict(), "dequantize": h}  # fmt: skip
    loss = Loss.of(cfg, sg.VPSDE())
    y = np.asarray(logit.inverse(loss._dequantized(jnp.asarray(logit.forward(x)),
                                                   jr.key(0))))  # fmt: skip
    assert np.all(np.abs(y - x) <= h + 1e-5) and np.std(y - x) > h / 3
    # the log-det stays bounded on the blank pixels' bin (level 0)
    ends = np.array([[-1 - h + 1e-6], [-1 + h]])
    ld = np.asarray(logit.log_det_jacobian(ends, 1))
    assert np.all(np.isfinite(ld)) and np.ptp(ld) < 2.0
    assert hash(loss) == hash(Loss.of(cfg, sg.VPSDE()))


def test_verdict_uses_at_most_max_data_examples():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(20, 3)), rng.normal(size=(90, 3))
    v = sg.metrics.verdict(x, y, key=jr.key(0), num_splits=4, num_boot=4, max_data=45)
    assert v["frechet_n"] == 15 and v["frechet_n"] + v["frechet_reference"] == 45
    with pytest.raises(ValueError, match="max_data"):
        sg.metrics.verdict(x, y, key=jr.key(0), max_data=5)
