"""Classifier guidance, classifier-free guidance and the time-dependent classifier,
against the exact answers of Gaussian mixtures."""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import sdegen as sg


SDE = sg.VPSDE()
N_SAMPLES = 1000
N_STEPS = 200


def separated():
    """2-D, three well-separated components with unequal weights."""
    means = np.array([[-3.0, 0.0], [3.0, 0.0], [0.0, 3.5]])
    covs = np.array([np.diag([0.4, 0.2]), [[0.3, 0.1], [0.1, 0.25]], np.diag([0.2, 0.3])])
    return sg.data.GaussianMixture(means, covs, np.array([0.5, 0.3, 0.2]))


def overlapping():
    """2-D, two overlapping components: p(k | x) is far from one-hot."""
    means = np.array([[-0.8, 0.0], [0.8, 0.0]])
    covs = np.array([np.eye(2) * 0.5, np.eye(2) * 0.5])
    return sg.data.GaussianMixture(means, covs, np.array([0.5, 0.5]))


def exact_classifier(gmm, sde):
    """The exact time-dependent classifier log p_t(k | x): log responsibilities of
    the diffused mixture."""

    def log_probs(t, x):
        return jax.nn.log_softmax(gmm.marginal(sde, t).component_log_probs(x))

    return log_probs


def component_score(gmm, sde, k):
    """Exact score of component k alone: N(alpha mu_k, alpha^2 Sigma_k + sigma^2 I)."""
    single = sg.data.GaussianMixture(gmm.means[k : k + 1], gmm.covs[k : k + 1],
                                     jnp.ones(1))  # fmt: skip
    return single.score(sde)


def exact_cond_score(gmm, sde):
    """cond_score(t, x, label): component score, or the mixture's for label=None."""
    mix = gmm.score(sde)

    def cond_score(t, x, label):
        if label is None:
            return mix(t, x)
        a, s = sde.alpha(t), sde.sigma(t)
        cov = a**2 * gmm.covs[label] + s**2 * jnp.eye(2)
        return -jnp.linalg.solve(cov, x - a * gmm.means[label])

    return cond_score


def sample(score, key, n=N_SAMPLES):
    keys = jr.split(key, n)
    return jax.jit(jax.vmap(lambda k: sg.sample_sde(k, SDE, score, (2,),
                                                    num_steps=N_STEPS)))(keys)  # fmt: skip


def mean_entropy(gmm, xs):
    """Average entropy of p(k | x) under the clean mixture."""
    r = jax.vmap(gmm.responsibilities)(xs)
    return float(jnp.mean(-jnp.sum(r * jnp.log(jnp.clip(r, 1e-300)), axis=-1)))


@pytest.mark.parametrize("t", [0.01, 0.3, 0.9])
def test_exact_classifier_guidance_is_component_score(getkey, t):
    # s_t(x) + grad log p_t(k | x) = grad log (w_k N_k(x)): exact identity.
    gmm = separated()
    guided = sg.classifier_guidance(gmm.score(SDE), exact_classifier(gmm, SDE), label=2)
    target = component_score(gmm, SDE, 2)
    for _ in range(5):
        x = 3 * jr.normal(getkey(), (2,))
        np.testing.assert_allclose(guided(t, x), target(t, x), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("k", [2])
def test_classifier_guidance_samples_one_component(getkey, k):
    gmm = separated()
    guided = sg.classifier_guidance(gmm.score(SDE), exact_classifier(gmm, SDE), label=k)
    xs = sample(guided, getkey())
    nearest = jnp.argmax(jax.vmap(gmm.component_log_probs)(xs), axis=-1)
    assert float(jnp.mean(nearest == k)) >= 0.99
    # Moments of component k: Monte-Carlo SE of the mean is sqrt(0.4 / 1000) = 0.02;
    # 200 Euler-Maruyama steps add a bias of about 0.01 to the covariance.
    np.testing.assert_allclose(jnp.mean(xs, 0), gmm.means[k], atol=0.08)
    np.testing.assert_allclose(jnp.cov(xs.T), gmm.covs[k], atol=0.06)


def test_label_vmaps(getkey):
    gmm = separated()
    clf = exact_classifier(gmm, SDE)
    labels = jnp.array([0, 1, 2, 1])
    x = jr.normal(getkey(), (2,))

    def guided(label):
        return sg.classifier_guidance(gmm.score(SDE), clf, label=label)(0.5, x)

    out = jax.vmap(guided)(labels)
    for i, k in enumerate(labels.tolist()):
        np.testing.assert_allclose(out[i], component_score(gmm, SDE, k)(0.5, x),
                                   rtol=1e-9, atol=1e-9)  # fmt: skip


def test_scalar_likelihood_guidance(getkey):
    # label=None: log_prob_fn is a scalar log-likelihood, here a Gaussian N(y; x, 1).
    gmm = separated()
    y = jnp.array([1.0, -1.0])
    guided = sg.classifier_guidance(gmm.score(SDE), lambda t, x: -0.5 * jnp.sum((y - x) ** 2),
                                    scale=2.0)  # fmt: skip
    x = jr.normal(getkey(), (2,))
    np.testing.assert_allclose(guided(0.4, x), gmm.score(SDE)(0.4, x) + 2.0 * (y - x),
                               rtol=1e-12)  # fmt: skip


def test_chain_adds_guidance(getkey):
    gmm = separated()
    clf = exact_classifier(gmm, SDE)
    half = functools.partial(sg.classifier_guidance, log_prob_fn=clf, label=1, scale=0.5)
    chained = sg.chain(half, half)(gmm.score(SDE))
    once = sg.classifier_guidance(gmm.score(SDE), clf, label=1, scale=1.0)
    x = jr.normal(getkey(), (2,))
    np.testing.assert_allclose(chained(0.2, x), once(0.2, x), rtol=1e-10)


def test_cfg_w0_equals_conditional_sampling(getkey):
    gmm = overlapping()
    cond = exact_cond_score(gmm, SDE)
    key = getkey()
    xs_cfg = sample(sg.classifier_free_guidance(cond, 1, w=0.0), key, n=200)
    xs_cond = sample(lambda t, x: cond(t, x, 1), key, n=200)
    np.testing.assert_allclose(xs_cfg, xs_cond, rtol=0, atol=1e-12)


def test_cfg_formula(getkey):
    gmm = overlapping()
    cond = exact_cond_score(gmm, SDE)
    x = jr.normal(getkey(), (2,))
    out = sg.classifier_free_guidance(cond, 0, w=2.5)(0.3, x)
    np.testing.assert_allclose(out, 3.5 * cond(0.3, x, 0) - 2.5 * cond(0.3, x, None),
                               rtol=1e-12)  # fmt: skip
    # CFG with weight w equals classifier guidance with scale 1 + w (exact classifier).
    cg = sg.classifier_guidance(gmm.score(SDE), exact_classifier(gmm, SDE), 0, scale=3.5)
    np.testing.assert_allclose(out, cg(0.3, x), rtol=1e-9, atol=1e-9)


@pytest.mark.slow
def test_cfg_sharpens(getkey):
    gmm = overlapping()
    cond = exact_cond_score(gmm, SDE)
    key = getkey()
    ents = [mean_entropy(gmm, sample(sg.classifier_free_guidance(cond, 0, w=w), key))
            for w in (0.0, 1.0, 4.0)]  # fmt: skip
    # w = 0 is conditional sampling: compare with exact component-0 draws (the
    # entropy's spread is about 0.2, so its Monte-Carlo SE with 1000 points is 0.007).
    exact = gmm.means[0][None] + jr.normal(getkey(), (20000, 2)) * jnp.sqrt(0.5)
    print("CFG mean conditional entropy for w = 0, 1, 4:", ents,
          "exact for w = 0:", mean_entropy(gmm, exact))
    assert abs(ents[0] - mean_entropy(gmm, exact)) < 0.03
    # Sharpening: the conditional entropy falls strictly with w (by far more than the
    # Monte-Carlo error; the same key is used for every w).
    assert ents[0] - ents[1] > 0.05
    assert ents[1] - ents[2] > 0.05


def test_guidance_errors():
    gmm = separated()
    score = gmm.score(SDE)
    clf = exact_classifier(gmm, SDE)
    with pytest.raises(ValueError, match="`label` must be a scalar integer"):
        sg.classifier_guidance(score, clf, label=1.5)
    with pytest.raises(ValueError, match="`label` must be a scalar integer"):
        sg.classifier_guidance(score, clf, label=jnp.array([1, 2]))
    with pytest.raises(ValueError, match="`scale` must be finite"):
        sg.classifier_guidance(score, clf, label=1, scale=float("nan"))
    with pytest.raises(ValueError, match="`log_prob_fn` must be a callable"):
        sg.classifier_guidance(score, "clf", label=1)
    with pytest.raises(ValueError, match="`score` must be a callable"):
        sg.classifier_guidance(None, clf, label=1)
    with pytest.raises(ValueError, match="scalar log-likelihood"):
        sg.classifier_guidance(score, clf)(0.5, jnp.zeros(2))
    cond = exact_cond_score(gmm, SDE)
    with pytest.raises(ValueError, match="`w` must be finite and >= 0"):
        sg.classifier_free_guidance(cond, 0, w=-1.0)
    with pytest.raises(ValueError, match="`label` must be a class index"):
        sg.classifier_free_guidance(cond, None, w=1.0)
    with pytest.raises(ValueError, match=r"`transforms\[1\]` must be a callable"):
        sg.chain(lambda s: s, 3)


@pytest.mark.slow
def test_train_classifier_learns_responsibilities(getkey):
    gmm = separated()
    k_data, k_comp = getkey(), getkey()
    n = 4000
    comp = jr.categorical(k_comp, jnp.log(gmm.weights), shape=(n,))
    chol = jnp.linalg.cholesky(gmm.covs)
    x = gmm.means[comp] + jnp.einsum("nij,nj->ni", chol[comp], jr.normal(k_data, (n, 2)))
    clf = sg.TimeClassifier((2,), 3, width=32, depth=2, key=getkey())
    clf, losses = sg.train_classifier(getkey(), clf, SDE, x, comp, num_steps=600,
                                      batch_size=128)  # fmt: skip
    assert losses.shape == (600,)
    assert float(jnp.mean(losses[-100:])) < float(jnp.mean(losses[:20])) - 0.2
    # At small t the exact classifier is nearly one-hot; the trained one must agree on
    # at least 97% of fresh points.
    xt = gmm.sample(getkey(), 500)
    pred = jnp.argmax(jax.vmap(lambda x_: clf(0.05, x_))(xt), -1)
    exact = jnp.argmax(jax.vmap(lambda x_: exact_classifier(gmm, SDE)(0.05, x_))(xt), -1)
    assert float(jnp.mean(pred == exact)) >= 0.97


@pytest.mark.slow
def test_image_classifier_and_loss(getkey):
    clf = sg.TimeClassifier((1, 8, 8), 4, width=8, depth=2, key=getkey())
    x = jr.normal(getkey(), (1, 8, 8))
    # (compiled: a convolution network run op by op compiles every operation)
    assert eqx.filter_jit(clf)(0.5, x).shape == (4,)
    batch = jr.normal(getkey(), (6, 1, 8, 8))
    labels = jnp.array([0, 1, 2, 3, 0, 1])
    loss = eqx.filter_jit(sg.classifier_loss)(clf, SDE, batch, labels, getkey())
    assert loss.shape == () and np.isfinite(float(loss))
    # Guidance through the conv classifier: the gradient has the data's shape.
    guided = sg.classifier_guidance(lambda t, x_: -x_, clf, label=2)
    assert eqx.filter_jit(guided)(0.5, x).shape == (1, 8, 8)
    with pytest.raises(ValueError, match="`labels` must have shape"):
        sg.classifier_loss(clf, SDE, batch, labels[:3], getkey())
    with pytest.raises(ValueError, match="`data_shape` must be"):
        sg.TimeClassifier((4, 4), 2, key=getkey())
    with pytest.raises(ValueError, match="`x` must be one example"):
        clf(0.5, jnp.zeros((2, 8, 8)))
