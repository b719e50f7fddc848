"""Quality metrics: the Fréchet distance against its closed form, PCA features, and
the sample report (floor, moments, range)."""

import math

import jax.random as jr
import numpy as np
import pytest
import scipy.linalg

import sdegen as sg


def _spd(rng, d):
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def test_gaussian_frechet_distance_closed_form():
    # ||m1 - m2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)), against scipy's sqrtm of the
    # (non-symmetric) product, to 1e-10
    rng = np.random.default_rng(0)
    for d in (1, 3, 8):
        m1, m2 = rng.standard_normal(d), rng.standard_normal(d)
        s1, s2 = _spd(rng, d), _spd(rng, d)
        ref = (np.sum((m1 - m2) ** 2) + np.trace(s1 + s2)
               - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2).real))  # fmt: skip
        got = sg.metrics.gaussian_frechet_distance(m1, s1, m2, s2)
        assert abs(got - ref) < 1e-10 * max(1.0, abs(ref)), (d, got, ref)
        assert abs(sg.metrics.gaussian_frechet_distance(m1, s1, m1, s1)) < 1e-10
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2 for standard deviations s1, s2
    assert abs(sg.metrics.gaussian_frechet_distance(
        np.zeros(1), np.full((1, 1), 4.0), np.ones(1), np.ones((1, 1)))
               - (1 + 1)) < 1e-12  # fmt: skip


def test_frechet_distance_of_samples_matches_closed_form():
    # Samples of two 4-D Gaussians, n = 40000 each: the plug-in estimate is within
    # 3% of the closed form (its standard error here is about 0.5%, its bias
    # O(d/n) relative).
    rng = np.random.default_rng(1)
    d, n = 4, 40_000
    m1, m2 = np.zeros(d), np.array([0.5, -0.3, 0.0, 0.2])
    s1, s2 = _spd(rng, d), _spd(rng, d)
    x = rng.multivariate_normal(m1, s1, n)
    y = rng.multivariate_normal(m2, s2, n)
    exact = sg.metrics.gaussian_frechet_distance(m1, s1, m2, s2)
    est = sg.metrics.frechet_distance(x, y)
    assert abs(est - exact) < 0.03 * exact, (est, exact)
    # images are flattened; a feature map is applied to both sets first
    est_img = sg.metrics.frechet_distance(x.reshape(n, 2, 2), y.reshape(n, 2, 2))
    assert est_img == pytest.approx(est, rel=1e-12)
    first2 = lambda a: np.asarray(a).reshape(len(a), -1)[:, :2]
    exact2 = sg.metrics.gaussian_frechet_distance(m1[:2], s1[:2, :2], m2[:2], s2[:2, :2])
    assert abs(sg.metrics.frechet_distance(x, y, features=first2) - exact2) < 0.03 * exact2
    with pytest.raises(ValueError, match="non-finite"):
        sg.metrics.frechet_distance(np.full((4, 4), np.nan), y[:4])
    with pytest.raises(ValueError, match="same number of features"):
        sg.metrics.frechet_distance(x[:10], y[:10, :3])


def test_pca_features():
    x, _ = sg.data.load_digits(dtype=np.float64)
    feats = sg.metrics.digit_features(16)
    c = feats.components
    assert c.shape == (64, 16)
    np.testing.assert_allclose(c.T @ c, np.eye(16), atol=1e-12)
    f = feats(x)
    assert f.shape == (1797, 16)
    np.testing.assert_allclose(f.mean(0), 0, atol=1e-12)
    # the variances of the features are the top eigenvalues of the data covariance,
    # in decreasing order
    ev = np.sort(np.linalg.eigvalsh(np.cov(np.asarray(x).reshape(1797, -1), rowvar=False,
                                           bias=True)))[::-1]  # fmt: skip
    np.testing.assert_allclose(f.var(0), ev[:16], rtol=1e-9)
    # deterministic: fitted twice, the same features
    np.testing.assert_array_equal(sg.metrics.digit_features(16)(x), f)
    with pytest.raises(ValueError, match="`num_components` must be in"):
        sg.metrics.PCAFeatures.fit(x, 100)


def test_sample_report():
    rng = np.random.default_rng(2)
    data = np.clip(rng.normal(0.0, 0.4, (2000, 20)), -1, 1)
    good = np.clip(rng.normal(0.0, 0.4, (600, 20)), -1, 1)
    wide = rng.normal(0.1, 0.6, (600, 20))
    r = sg.metrics.sample_report(good, data, key=jr.key(0))
    assert r["features"] == "pca16" and r["frechet_n"] == 600
    # samples from the data's distribution: the distance is at its floor
    assert 0.7 < r["frechet_ratio"] < 1.4, r
    assert 0.7 < r["frechet_raw_ratio"] < 1.4, r
    assert abs(r["std_ratio"] - 1) < 0.02 and r["frac_outside_range"] == 0.0
    assert r["frac_beyond_1.1"] == 0.0 and r["frac_nonfinite"] == 0.0
    bad = sg.metrics.sample_report(wide, data, key=jr.key(0))
    assert bad["frechet_ratio"] > 5 and bad["std_ratio"] > 1.3
    outside = (wide < data.min()) | (wide > data.max())
    assert bad["frac_outside_range"] == pytest.approx(np.mean(outside))
    dist = np.where(wide < data.min(), data.min() - wide, wide - data.max())[outside]
    assert bad["mean_distance_outside"] == pytest.approx(np.mean(dist))
    assert r["mean_distance_outside"] == 0.0
    assert bad["frac_beyond_1.1"] == pytest.approx(np.mean(np.abs(wide) > 1.1))
    # the floor is a distance between two disjoint halves of the data: with fewer
    # data than 2n the sets shrink to N // 2
    small = sg.metrics.sample_report(good, data[:500], key=jr.key(1), features="raw")
    assert small["frechet_n"] == 250 and small["features"] == "raw"
    # the same key gives the same report; non-finite samples are counted, not used
    assert sg.metrics.sample_report(good, data, key=jr.key(0)) == r
    nan = good.copy()
    nan[0, 0] = np.nan
    rn = sg.metrics.sample_report(nan, data, key=jr.key(0))
    assert rn["frac_nonfinite"] == pytest.approx(1 / good.size)
    assert math.isfinite(rn["frechet_distance"])
    # 2-D data: raw coordinates
    assert sg.metrics.sample_report(good[:, :2], data[:, :2], key=jr.key(0))[
        "features"] == "raw"  # fmt: skip
    with pytest.raises(ValueError, match="of the same shape"):
        sg.metrics.sample_report(good[:, :3], data, key=jr.key(0))
