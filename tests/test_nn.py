"""Networks, embeddings and parametrisations."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import sdegen as sg

from .helpers import SDES, mixture_3d


# --------------------------------------------------------------------------------
# Embeddings


def test_fourier_features_formula_and_frozen(getkey):
    emb = sg.nn.FourierFeatures(8, scale=3.0, key=getkey())
    out = emb(0.25)
    arg = 2 * math.pi * 0.25 * np.asarray(emb.W)
    assert out.shape == (8,)
    assert np.allclose(out, np.concatenate([np.sin(arg), np.cos(arg)]), atol=1e-12)
    # frequencies are fixed: zero gradient
    g = jax.grad(lambda e: jnp.sum(e(0.3)))(emb)
    assert float(jnp.max(jnp.abs(g.W))) == 0.0
    with pytest.raises(ValueError, match="embed_dim"):
        sg.nn.FourierFeatures(7, key=getkey())


def test_sinusoidal_embedding_formula():
    emb = sg.nn.SinusoidalEmbedding(6, max_period=100.0)
    out = emb(3)
    freqs = 100.0 ** (-np.arange(3) / 3)
    expected = np.concatenate([np.sin(3 * freqs), np.cos(3 * freqs)])
    assert np.allclose(out, expected, atol=1e-12)
    assert np.allclose(emb(0), np.r_[np.zeros(3), np.ones(3)])
    assert np.allclose(sg.nn.SinusoidalEmbedding(6, 100.0, scale=10.0)(0.3), expected)


# --------------------------------------------------------------------------------
# MLP


def _batched(m, ts, xs, labels):
    return jax.vmap(lambda t, x, y: m(t, x, label=y))(ts, xs, labels)


# one compiled function per network structure; t and labels are arrays (dynamic)
_batched_jit = eqx.filter_jit(_batched)


def test_mlp_shapes_conditioning_and_transforms(getkey):
    net = sg.nn.MLP(3, width=32, depth=2, key=getkey(), num_classes=4)
    x = jr.normal(getkey(), (3,))
    xs = jnp.stack([x] * 5)
    ts = jnp.array([0.3, 0.1, 0.9, 0.3, 0.3])
    labels = jnp.array([4, 4, 4, 0, 1])
    out = _batched_jit(net, ts, xs, labels)
    assert out.shape == (5, 3)
    # time conditioning
    assert not jnp.allclose(out[1], out[2])
    # label conditioning
    assert not jnp.allclose(out[3], out[4])
    # label=None is the null class (index num_classes) and matches the jitted call
    assert jnp.allclose(net(0.3, x), out[0], rtol=1e-10)
    # grad through the vmapped network
    grads = eqx.filter_jit(
        eqx.filter_grad(lambda m: jnp.sum(_batched(m, ts, xs, labels) ** 2))
    )(net)
    leaves = jax.tree_util.tree_leaves(eqx.filter(grads, eqx.is_array))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert float(jnp.max(jnp.abs(grads.layer_in.weight))) > 0
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        net(0.3, jnp.ones((2,)))
    with pytest.raises(ValueError, match=r"\[0, 4\]"):
        net(0.3, x, label=5)
    unconditional = sg.nn.MLP(3, width=8, depth=1, key=getkey())
    with pytest.raises(ValueError, match="unconditional"):
        unconditional(0.3, x, label=0)


def test_mlp_sinusoidal_integer_steps(getkey):
    net = sg.nn.MLP(
        2, width=16, depth=1, key=getkey(), time_embedding=sg.nn.SinusoidalEmbedding(16)
    )
    x = jnp.ones(2)
    assert net(jnp.asarray(3), x).shape == (2,)
    assert not jnp.allclose(net(3, x), net(40, x))


# --------------------------------------------------------------------------------
# U-Net


@pytest.mark.parametrize("channels,size,mults,attn", [(1, 8, (1, 2), (2,)),
                                                     (3, 4, (1,), (1,))])
def test_unet_shapes_and_conditioning(channels, size, mults, attn, getkey):
    net = sg.nn.UNet(channels, key=getkey(), base_channels=8, num_groups=4,
                     num_classes=10, channel_mults=mults,
                     attention_resolutions=attn)  # fmt: skip
    x = jr.normal(getkey(), (channels, size, size))
    xs = jnp.stack([x] * 4)
    ts = jnp.array([0.5, 0.2, 0.5, 0.5])
    labels = jnp.array([10, 10, 3, 4])
    out = _batched_jit(net, ts, xs, labels)
    assert out.shape == (4, *x.shape)
    assert bool(jnp.all(jnp.isfinite(out)))
    assert not jnp.allclose(out[0], out[1])  # time
    assert not jnp.allclose(out[2], out[3])  # label


@pytest.mark.slow
def test_unet_vmap_grad_dropout(getkey):
    net = sg.nn.UNet(1, key=getkey(), base_channels=8, num_groups=4, dropout=0.3,
                     channel_mults=(1,), attention_resolutions=())  # fmt: skip
    xs = jr.normal(getkey(), (3, 1, 4, 4))
    ts = jnp.array([0.1, 0.5, 0.9])

    def loss(m, key):
        keys = jr.split(key, 3)
        out = jax.vmap(lambda t, x, k: m(t, x, key=k))(ts, xs, keys)
        return jnp.mean(out**2)

    @eqx.filter_jit
    def run(m, key):
        # no key: inference mode (no dropout), identical to a second such call
        plain = jnp.mean(jax.vmap(m)(ts, xs) ** 2)
        value, grads = eqx.filter_value_and_grad(loss)(m, key)
        return plain, value, grads

    plain, value, grads = run(net, getkey())
    assert bool(jnp.isfinite(plain)) and not jnp.allclose(plain, value)
    leaves = jax.tree_util.tree_leaves(eqx.filter(grads, eqx.is_array))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert float(jnp.max(jnp.abs(grads.conv_in.weight))) > 0
    assert float(jnp.max(jnp.abs(grads.mid[1].attention.query_proj.weight))) > 0


def test_unet_errors(getkey):
    with pytest.raises(ValueError, match="num_groups"):
        sg.nn.UNet(1, key=getkey(), base_channels=12, num_groups=8)
    with pytest.raises(ValueError, match="attention_resolutions"):
        sg.nn.UNet(1, key=getkey(), attention_resolutions=(8,))
    with pytest.raises(ValueError, match="channel_mults"):
        sg.nn.UNet(1, key=getkey(), channel_mults=())
    net = sg.nn.UNet(1, key=getkey(), base_channels=8, num_groups=4)
    with pytest.raises(ValueError, match="divisible by 2"):
        net(0.5, jnp.ones((1, 7, 8)))
    with pytest.raises(ValueError, match=r"\(1, H, W\)"):
        net(0.5, jnp.ones((2, 8, 8)))


# --------------------------------------------------------------------------------
# Parametrisations


def _tweedie_mixture(gmm, sde, t, x):
    """E[x0 | x_t = x] for a Gaussian mixture, computed from the joint Gaussians
    (independent of the score): mu_k + a S_k (a^2 S_k + s^2 I)^{-1} (x - a mu_k)."""
    a, s = sde.alpha(t), sde.sigma(t)
    post = gmm.marginal(sde, t).responsibilities(x)
    eye = jnp.eye(gmm.dim)

    def one(mu, cov):
        return mu + a * cov @ jnp.linalg.solve(a**2 * cov + s**2 * eye, x - a * mu)

    return post @ jax.vmap(one)(gmm.means, gmm.covs)


@pytest.mark.parametrize("sde_name", ["vp", "subvp", "ve"])
def test_parametrisations_of_exact_answers(sde_name, getkey):
    sde = SDES[sde_name]()
    gmm = mixture_3d()
    exact = gmm.score(sde)
    x = 2.0 * jr.normal(getkey(), (3,))
    t = 0.4
    s_true = exact(t, x)
    x0_true = _tweedie_mixture(gmm, sde, t, x)
    eps_true = -sde.sigma(t) * s_true

    # direct score
    direct = sg.nn.ScoreParam(exact, sde)
    assert jnp.allclose(direct(t, x), s_true, rtol=1e-12)
    assert jnp.allclose(direct.denoise(t, x), x0_true, rtol=1e-8, atol=1e-10)

    # noise prediction of the exact eps gives the exact score
    noise = sg.nn.NoiseParam(lambda tt, y: -sde.sigma(tt) * exact(tt, y), sde)
    assert jnp.allclose(noise(t, x), s_true, rtol=1e-10)
    assert jnp.allclose(noise.eps(t, x), eps_true, rtol=1e-10)
    assert jnp.allclose(noise.denoise(t, x), x0_true, rtol=1e-8, atol=1e-10)

    # EDM: the network F that makes D the exact denoiser gives the exact score
    edm0 = sg.nn.EDMPreconditioner(lambda tt, y: jnp.zeros_like(y), sde, sigma_data=0.7)

    def ideal_f(c_noise, y):
        # invert the conditioning: sigma_tilde = exp(4 c_noise), x = alpha y / c_in
        st = jnp.exp(4 * c_noise)
        assert jnp.allclose(st, edm0.sigma_tilde(t))
        xt = y / edm0.c_in(t)
        d = _tweedie_mixture(gmm, sde, t, xt * sde.alpha(t))
        return (d - edm0.c_skip(t) * xt) / edm0.c_out(t)

    edm = sg.nn.EDMPreconditioner(ideal_f, sde, sigma_data=0.7)
    assert jnp.allclose(edm(t, x), s_true, rtol=1e-8, atol=1e-10)
    assert jnp.allclose(edm.denoise(t, x), x0_true, rtol=1e-8, atol=1e-10)
    assert jnp.allclose(edm.eps(t, x), eps_true, rtol=1e-8, atol=1e-10)


def test_edm_coefficients_at_known_sigma():
    # VE: alpha = 1, so sigma_tilde = sigma(t) and these are EDM's Table 1.
    sde = sg.VESDE(sigma_min=0.01, sigma_max=50.0)
    edm = sg.nn.EDMPreconditioner(lambda t, y: y, sde, sigma_data=0.5)
    t = math.log(2.0 / 0.01) / math.log(50.0 / 0.01)  # sigma(t) = 2
    assert math.isclose(float(sde.sigma(t)), 2.0, rel_tol=1e-12)
    assert math.isclose(float(edm.c_skip(t)), 0.25 / 4.25, rel_tol=1e-12)
    assert math.isclose(float(edm.c_out(t)), 2 * 0.5 / math.sqrt(4.25), rel_tol=1e-12)
    assert math.isclose(float(edm.c_in(t)), 1 / math.sqrt(4.25), rel_tol=1e-12)
    assert math.isclose(float(edm.c_noise(t)), math.log(2.0) / 4, rel_tol=1e-12)
    # VP: sigma_tilde = sigma / alpha
    vp = sg.VPSDE()
    edm = sg.nn.EDMPreconditioner(lambda t, y: y, vp, sigma_data=0.5)
    st = float(vp.sigma(0.5) / vp.alpha(0.5))
    assert math.isclose(float(edm.c_skip(0.5)), 0.25 / (st**2 + 0.25), rel_tol=1e-12)
    # with F(c_noise, y) = y: D = c_skip x/alpha + c_out c_in x/alpha
    x = jnp.array([0.3, -1.0])
    d = edm.denoise(0.5, x)
    xt = x / vp.alpha(0.5)
    expected = (edm.c_skip(0.5) + edm.c_out(0.5) * edm.c_in(0.5)) * xt
    assert jnp.allclose(d, expected, rtol=1e-12)


def test_parametrisation_with_networks_and_labels(getkey):
    sde = sg.VPSDE()
    net = sg.nn.MLP(2, width=16, depth=2, key=getkey(), num_classes=3)
    x = jnp.array([0.5, -0.2])
    for param in (
        sg.nn.ScoreParam(net),
        sg.nn.NoiseParam(net, sde),
        sg.nn.EDMPreconditioner(net, sde),
    ):
        assert isinstance(param, sg.nn.AbstractParametrisation)
        f = eqx.filter_jit(lambda p, y: jax.vmap(lambda lab: p(0.5, x, label=lab))(y))
        out = f(param, jnp.arange(3))
        assert out.shape == (3, 2)
        assert not jnp.allclose(out[0], out[1])
        assert jnp.allclose(param(0.5, x), param(0.5, x, label=3))
        g = eqx.filter_grad(lambda p: jnp.sum(p(0.5, x, label=1) ** 2))(param)
        assert float(jnp.max(jnp.abs(g.net.layer_out.weight))) > 0
    with pytest.raises(ValueError, match="sde"):
        sg.nn.ScoreParam(net).denoise(0.5, x)
    with pytest.raises(ValueError, match="shape"):
        sg.nn.ScoreParam(lambda t, y: y[:1])(0.5, x)


def test_plain_mlp_is_the_formula(getkey):
    # F(t, x) = A_out a(A_3 a(A_2 a(A_1 [x; t - 1/2; cos 2 pi t] + b_1) + b_2) + b_3)
    # + b_out, written out with the module's own weights; the parameter count of
    # diffusionjax's 3 x 256 network on 2-D data.
    net = sg.nn.PlainMLP(2, 256, 3, key=getkey())
    n = sum(x.size for x in jax.tree_util.tree_leaves(eqx.filter(net, eqx.is_array)))
    assert n == (2 + 2) * 256 + 256 + 2 * (256 * 256 + 256) + 257 * 2 == 133378
    small = sg.nn.PlainMLP(3, 5, 2, key=getkey(), activation=jnp.tanh)
    t, x = 0.3, jnp.array([0.1, -2.0, 0.7])
    h = jnp.concatenate([x, jnp.array([t - 0.5, jnp.cos(2 * jnp.pi * t)])])
    for lin in small.layers:
        h = jnp.tanh(lin.weight @ h + lin.bias)
    want = small.layer_out.weight @ h + small.layer_out.bias
    np.testing.assert_allclose(small(t, x), want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(sg.nn.CentredCosine()(0.25), [-0.25, 0.0], atol=1e-15)
    # any embedding of t; batched with vmap; as the network of a noise-predicting
    # score
    fourier = sg.nn.PlainMLP(3, 8, 1, key=getkey(),
                             time_embedding=sg.nn.FourierFeatures(4, key=getkey()))
    assert fourier.layers[0].weight.shape == (8, 3 + 4)
    xs = jr.normal(getkey(), (4, 3))
    ts = jnp.linspace(0.1, 0.9, 4)
    np.testing.assert_allclose(jax.vmap(small)(ts, xs),
                               jnp.stack([small(a, b) for a, b in zip(ts, xs)]),
                               rtol=1e-12)  # fmt: skip
    sde = sg.VPSDE(beta_min=0.01, beta_max=3.0)
    score = sg.nn.NoiseParam(small, sde)
    assert score(0.5, x).shape == (3,)
    with pytest.raises(ValueError, match="`width` must be a positive int"):
        sg.nn.PlainMLP(3, 0, key=getkey())
    with pytest.raises((ValueError, TypeError)):  # the type hint, or the check
        sg.nn.PlainMLP(3, key=getkey(), time_embedding=lambda t: t)
    with pytest.raises((ValueError, TypeError)):  # the type hint, or the check
        small(0.5, xs)
