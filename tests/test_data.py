"""Toy data sets, the embedded digits, the Hugging Face adapter and batching."""

import itertools
import math

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import sdegen as sg


N = 4000


def _binomial_tol(p, n):
    """Five binomial standard errors of a frequency with probability `p`."""
    return 5 * math.sqrt(p * (1 - p) / n)


# ---------------------------------------------------------------- toy sets


@pytest.mark.parametrize("name", list(sg.data.TOY_DATASETS))
def test_toy_shape_dtype_determinism(name, getkey):
    sampler = sg.data.toy(name)
    key = getkey()
    x = sampler(key, 300)
    assert x.shape == (300, 2)
    assert x.dtype == jnp.zeros(()).dtype
    assert bool(jnp.all(jnp.isfinite(x)))
    assert bool(jnp.all(jnp.abs(x) < 6.0))
    np.testing.assert_array_equal(np.asarray(x), np.asarray(sampler(key, 300)))
    assert not np.array_equal(np.asarray(x), np.asarray(sampler(getkey(), 300)))


def test_toy_lookup_names():
    assert sg.data.toy("two-moons") is sg.data.two_moons
    assert sg.data.toy("Swiss Roll") is sg.data.swiss_roll
    assert sg.data.toy("eight_gaussians") is sg.data.eight_gaussians_sampler
    with pytest.raises(ValueError, match="Unknown toy data set 'spiral'.*moons"):
        sg.data.toy("spiral")
    with pytest.raises(ValueError, match="`n` must be a positive int"):
        sg.data.two_moons(jr.key(0), 0)
    with pytest.raises(ValueError, match="`noise` must be finite"):
        sg.data.rings(jr.key(0), 10, noise=-1.0)


def test_two_moons_on_the_curves(getkey):
    x = np.asarray(sg.data.two_moons(getkey(), N, noise=0.0))
    u = x / 2 + np.array([0.5, 0.25])  # undo centring and scaling
    upper = np.abs(np.hypot(u[:, 0], u[:, 1]) - 1) < 1e-6
    lower = np.abs(np.hypot(u[:, 0] - 1, u[:, 1] - 0.5) - 1) < 1e-6
    assert np.all(upper | lower)
    assert np.all(u[upper, 1] >= -1e-9) and np.all(u[lower & ~upper, 1] <= 0.5 + 1e-9)
    assert abs(upper.mean() - 0.5) < _binomial_tol(0.5, N)


def test_swiss_roll_spiral(getkey):
    x = np.asarray(sg.data.swiss_roll(getkey(), N, noise=0.0))
    r = np.hypot(x[:, 0], x[:, 1])
    theta = 3 * r  # radius is theta / 3
    assert np.all((theta >= 1.5 * np.pi - 1e-6) & (theta <= 4.5 * np.pi + 1e-6))
    np.testing.assert_allclose(x[:, 0], r * np.cos(theta), atol=1e-9)
    np.testing.assert_allclose(x[:, 1], r * np.sin(theta), atol=1e-9)


def test_checkerboard_dark_squares_uniform(getkey):
    x = np.asarray(sg.data.checkerboard(getkey(), N))
    assert np.all((x >= -4) & (x < 4))
    cells = np.floor(x / 2).astype(int)  # 4x4 cells indexed -2..1
    assert np.all((cells[:, 0] + cells[:, 1]) % 2 == 0)  # [0, 2)^2 is dark
    counts = np.unique(cells, axis=0, return_counts=True)[1]
    assert len(counts) == 8
    assert np.max(np.abs(counts / N - 1 / 8)) < _binomial_tol(1 / 8, N)


def test_rings_radii_frequencies(getkey):
    x = np.asarray(sg.data.rings(getkey(), N, noise=0.0))
    r = np.hypot(x[:, 0], x[:, 1])
    ring = np.round(r)
    np.testing.assert_allclose(r, ring, atol=1e-9)
    for k in (1, 2, 3, 4):
        assert abs(np.mean(ring == k) - k / 10) < _binomial_tol(k / 10, N)


def test_eight_gaussians_sampler_fractions(getkey):
    x = sg.data.eight_gaussians_sampler(getkey(), N)
    frac = np.asarray(sg.metrics.component_fractions(sg.data.eight_gaussians(), x))
    assert np.max(np.abs(frac - 1 / 8)) < _binomial_tol(1 / 8, N)


# ---------------------------------------------------------------- digits


def test_load_digits_matches_sklearn():
    from sklearn.datasets import load_digits

    x, y = sg.data.load_digits()
    ref = load_digits()
    assert x.shape == (1797, 1, 8, 8) and y.shape == (1797,)
    assert x.dtype == jnp.zeros(()).dtype
    np.testing.assert_array_equal(np.asarray(x)[:, 0], ref.images / 8 - 1)
    np.testing.assert_array_equal(np.asarray(y), ref.target)
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0
    assert sg.data.load_digits(dtype=jnp.float32)[0].dtype == jnp.float32


# ---------------------------------------------------------------- Hugging Face


@pytest.fixture
def image_dataset(tmp_path):
    import datasets
    import PIL.Image

    rng = np.random.default_rng(0)
    pix = rng.integers(0, 256, size=(10, 6, 4), dtype=np.uint8)
    rgb = rng.integers(0, 256, size=(10, 6, 4, 3), dtype=np.uint8)
    ds = datasets.Dataset.from_dict(
        {
            "img": [PIL.Image.fromarray(p, mode="L") for p in pix],
            "colour": [PIL.Image.fromarray(p, mode="RGB") for p in rgb],
            "cls": [int(i % 3) for i in range(10)],
        },
        features=datasets.Features(
            {
                "img": datasets.Image(),
                "colour": datasets.Image(),
                "cls": datasets.ClassLabel(num_classes=3),
            }
        ),
    )
    path = tmp_path / "images"
    ds.save_to_disk(str(path))
    return path, pix, rgb


def test_load_hf_images_stream_as_rows(image_dataset):
    import datasets

    path, pix, rgb = image_dataset
    ds = sg.data.load_hf(path)
    assert isinstance(ds, datasets.Dataset) and len(ds) == 10
    fmt = sg.data.hf_format(ds)
    assert fmt.shape == (1, 6, 4) and fmt.num_classes == 3 and fmt.kind == "image"
    assert fmt.column == "img" and fmt.label_column == "cls"  # the ClassLabel
    assert fmt.value_range == (0.0, 255.0)
    batch = ds[[3, 0, 7]]  # converted when read
    assert batch["x"].shape == (3, 1, 6, 4) and batch["x"].dtype == jnp.zeros(()).dtype
    np.testing.assert_allclose(batch["x"][:, 0], pix[[3, 0, 7]] / 127.5 - 1, atol=1e-6)
    np.testing.assert_array_equal(batch["label"], [0, 0, 1])
    x, y = sg.data.to_arrays(ds, batch_size=4)
    np.testing.assert_allclose(x[:, 0], pix / 127.5 - 1, atol=1e-6)
    np.testing.assert_array_equal(y, np.arange(10) % 3)
    # colour, no labels; grey -> RGB and RGB -> grey on request
    xc, yc = sg.data.to_arrays(sg.data.load_hf(path, image_column="colour",
                                               label_column=None))  # fmt: skip
    assert yc is None
    np.testing.assert_allclose(xc, np.transpose(rgb, (0, 3, 1, 2)) / 127.5 - 1, atol=1e-6)
    assert sg.data.load_hf(path, channels=3)[0]["x"].shape == (3, 6, 4)
    grey = sg.data.load_hf(path, image_column="colour", channels=1)[[0]]["x"]
    assert grey.shape == (1, 1, 6, 4)
    # resizing and the first rows only; a select keeps the format
    small = sg.data.load_hf(path, image_size=(3, 2), max_examples=4, dtype=np.float32)
    assert len(small) == 4 and small[[0, 1]]["x"].shape == (2, 1, 3, 2)
    assert small[[0]]["x"].dtype == np.float32
    part = small.select([2, 3])
    assert sg.data.hf_format(part).shape == (1, 3, 2) and part[[1]]["x"].shape == (1, 1, 3, 2)
    roundtrip = sg.data.HFFormat.from_dict(sg.data.hf_format(small).to_dict())
    assert roundtrip == sg.data.hf_format(small)


def test_load_hf_feeds_a_dataset_source(image_dataset):
    path, pix, _ = image_dataset
    ds = sg.data.load_hf(path)
    src = sg.data.DatasetSource(ds, "x", "label")
    x, y = src.batch([5, 1])
    np.testing.assert_allclose(x[:, 0], pix[[5, 1]] / 127.5 - 1, atol=1e-6)
    np.testing.assert_array_equal(y, [2, 1])
    assert src.shape == (1, 6, 4)


def test_load_hf_arrays_and_splits(tmp_path):
    import datasets

    rng = np.random.default_rng(1)
    pts = rng.normal(size=(20, 2)) * 3 + 1
    imgs = rng.integers(0, 256, size=(20, 5, 5, 3)).astype(np.uint8)
    d = datasets.Dataset.from_dict({"xy": pts.tolist(), "arr": imgs.tolist()})
    dd = datasets.DatasetDict({"train": d, "test": d.select(range(5))})
    dd.save_to_disk(str(tmp_path / "dd"))
    x, y = sg.data.to_arrays(sg.data.load_hf(tmp_path / "dd", image_column="xy",
                                             scale="none", dtype=np.float64))  # fmt: skip
    assert y is None
    np.testing.assert_allclose(x, pts, rtol=1e-12)
    ds = sg.data.load_hf(tmp_path / "dd", image_column="xy", split="test",
                         dtype=np.float64)  # fmt: skip
    lo, hi = pts[:5].min(), pts[:5].max()
    assert sg.data.hf_format(ds).value_range == (lo, hi)
    np.testing.assert_allclose(sg.data.to_arrays(ds)[0], 2 * (pts[:5] - lo) / (hi - lo) - 1)
    # integer arrays in [0, 255], channels last: 8-bit scaling and CHW
    x, _ = sg.data.to_arrays(sg.data.load_hf(tmp_path / "dd", image_column="arr",
                                             dtype=np.float64))  # fmt: skip
    assert x.shape == (20, 3, 5, 5)
    np.testing.assert_allclose(x, np.transpose(imgs, (0, 3, 1, 2)) / 127.5 - 1, atol=1e-12)
    with pytest.raises(ValueError, match="`split` 'validation' not found.*train, test"):
        sg.data.load_hf(tmp_path / "dd", split="validation")
    d.save_to_disk(str(tmp_path / "one"))
    with pytest.raises(ValueError, match="`split` 'test'.*one data set"):
        sg.data.load_hf(tmp_path / "one", split="test")


def test_load_hf_errors(tmp_path, monkeypatch):
    import datasets
    import PIL.Image

    bad = datasets.Dataset.from_dict({"v": [[0.0, float("nan")], [1.0, 2.0]]})
    bad.save_to_disk(str(tmp_path / "nan"))
    with pytest.raises(ValueError, match="non-finite"):
        sg.data.load_hf(tmp_path / "nan")
    imgs = [PIL.Image.new("L", (4, 4)), PIL.Image.new("L", (5, 4))]
    mixed = datasets.Dataset.from_dict(
        {"image": imgs, "name": ["a", "b"], "score": [0.5, 1.5], "k": [0, -1]},
        features=datasets.Features({"image": datasets.Image(),
                                    "name": datasets.Value("string"),
                                    "score": datasets.Value("float32"),
                                    "k": datasets.Value("int64")}),
    )  # fmt: skip
    mixed.save_to_disk(str(tmp_path / "mixed"))
    ds = sg.data.load_hf(tmp_path / "mixed", label_column=None)  # first row is fine
    with pytest.raises(ValueError, match="differ in size.*pass `image_size`"):
        ds[[0, 1]]
    x, _ = sg.data.to_arrays(sg.data.load_hf(tmp_path / "mixed", image_size=4,
                                             label_column=None))  # fmt: skip
    assert x.shape == (2, 1, 4, 4)
    where = tmp_path / "mixed"
    for kwargs, message in [
        (dict(image_column="nope"), "`image_column` 'nope' is not a column.*image \\(Image\\)"),
        (dict(image_column="name"), "`image_column` 'name' holds .*string"),
        (dict(label_column="name"), "`label_column` 'name' holds .*string.*integer"),
        (dict(label_column="score"), "`label_column` 'score' holds .*float32"),
        (dict(label_column="k"), "`label_column` 'k' holds negative labels"),
        (dict(label_column="image"), "`label_column` 'image' is also the image column"),
        (dict(image_size=0), "`image_size` must be a positive int"),
        (dict(channels=2), "`channels` must be 1 or 3 for images"),
        (dict(max_examples=0), "`max_examples` must be a positive int"),
        (dict(scale="unit"), "`scale` must be"),
    ]:
        with pytest.raises(ValueError, match=message):
            sg.data.load_hf(where, **kwargs)
    text = datasets.Dataset.from_dict({"s": ["a", "b"]})
    text.save_to_disk(str(tmp_path / "text"))
    with pytest.raises(ValueError, match="No image or array column"):
        sg.data.load_hf(tmp_path / "text")
    with pytest.raises(ValueError, match="no such file or folder"):
        sg.data.load_hf(tmp_path.as_posix() + "/missing")
    with pytest.raises(ValueError, match="not a data set returned by sdegen.data.load_hf"):
        sg.data.hf_format(text)
    # an unreachable hub name: one line (offline mode stands in for no network)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError, match="'someone/nothing': could not load it from the "
                                         "Hugging Face hub") as e:  # fmt: skip
        sg.data.load_hf("someone/nothing")
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------- batching


def test_batches_epochs_are_permutations():
    data = jnp.arange(10.0)[:, None] * jnp.ones((1, 3))
    labels = jnp.arange(10)
    key = jr.key(3)
    it = sg.data.batches(key, data, 3, labels=labels, num_epochs=2)
    got = list(it)
    assert len(got) == 6  # 3 full batches per epoch, 2 epochs
    for x, y in got:
        assert x.shape == (3, 3) and y.shape == (3,)
        np.testing.assert_array_equal(np.asarray(x[:, 0]), np.asarray(y))
    for e in range(2):
        seen = np.concatenate([np.asarray(y) for _, y in got[3 * e : 3 * e + 3]])
        assert len(set(seen.tolist())) == 9  # no repeats inside an epoch
    e0 = np.concatenate([np.asarray(y) for _, y in got[:3]])
    e1 = np.concatenate([np.asarray(y) for _, y in got[3:]])
    assert not np.array_equal(e0, e1)  # reshuffled
    # deterministic, step-indexed, and resumable mid-stream
    again = list(itertools.islice(sg.data.batches(key, data, 3, start_step=4), 2))
    for a, (b, _) in zip(again, got[4:6]):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    idx = sg.data.batch_indices(key, 10, 3, 4)
    np.testing.assert_array_equal(np.asarray(idx), np.asarray(got[4][1]))


def test_batches_errors():
    with pytest.raises(ValueError, match="larger than the data set"):
        next(sg.data.batches(jr.key(0), jnp.zeros((4, 2)), 5))
    with pytest.raises(ValueError, match="non-finite"):
        next(sg.data.batches(jr.key(0), jnp.array([[0.0], [jnp.nan]]), 1))
    with pytest.raises(ValueError, match="`labels` must have shape"):
        next(sg.data.batches(jr.key(0), jnp.zeros((4, 2)), 2, labels=jnp.zeros(3, jnp.int32)))
    with pytest.raises(ValueError, match="`batch_size` must be a positive int"):
        next(sg.data.batches(jr.key(0), jnp.zeros((4, 2)), 0))
