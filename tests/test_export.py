"""Portable models: `sg.export_model` / `sg.load_model` round trips, the header, and
the errors of damaged or foreign files."""

import dataclasses
import json

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import sdegen as sg


SDES = [sg.VPSDE(beta_min=0.2, beta_max=15.0), sg.SubVPSDE(),
        sg.VESDE(sigma_min=0.02, sigma_max=7.5), sg.EDMSDE(T=40.0)]  # fmt: skip


@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
def test_sde_dict_round_trip(sde):
    d = sg.sde_to_dict(sde)
    assert d["class"] == type(sde).__name__
    json.dumps(d)  # JSON-serialisable
    back = sg.sde_from_dict(d)
    assert type(back) is type(sde)
    t = jnp.asarray(0.3)
    np.testing.assert_allclose(back.marginal(t, jnp.ones(2))[1],
                               sde.marginal(t, jnp.ones(2))[1], rtol=1e-12)  # fmt: skip


def test_sde_dict_errors():
    with pytest.raises(ValueError, match="Unknown SDE class 'Nope'"):
        sg.sde_from_dict({"class": "Nope"})
    with pytest.raises(ValueError, match=r"Unknown fields \['sigma'\] for VPSDE"):
        sg.sde_from_dict({"class": "VPSDE", "sigma": 1.0})
    with pytest.raises(ValueError, match="must be one of sdegen's SDEs"):
        sg.sde_to_dict(object())


NETWORKS = [
    ((2,), {"net": "mlp", "width": 8, "depth": 2}, None),
    ((1, 4, 4), {"net": "mlp", "width": 8, "depth": 1, "param": "score"}, 3),
    ((3, 4, 4), {"net": "unet", "width": 8, "depth": 2, "param": "edm",
                 "sigma_data": 0.4}, 2),
    ((1, 4, 4), {"net": "plain", "width": 8, "depth": 2, "param": "noise"}, None),
]  # fmt: skip


def _trained(model):
    """The model with every weight moved, so a load that ignored the file fails."""
    return jax.tree_util.tree_map(
        lambda x: x + 0.01 if eqx.is_inexact_array(x) else x, model
    )


@pytest.mark.parametrize("shape,network,num_classes", NETWORKS)
def test_export_load_round_trip(tmp_path, shape, network, num_classes):
    sde = sg.VPSDE()
    model = _trained(sg.build_model(sde, shape, network, num_classes=num_classes,
                                    key=jr.key(1)))  # fmt: skip
    path = sg.export_model(tmp_path / "m" / "model.sdegen", model, sde=sde,
                           shape=shape, network=network, num_classes=num_classes,
                           data={"value_range": [0.0, 255.0]}, info={"step": 7})  # fmt: skip
    loaded, meta = sg.load_model(path)
    assert meta.shape == shape and meta.num_classes == num_classes
    assert isinstance(meta.sde, sg.VPSDE) and meta.info == {"step": 7}
    assert meta.network["net"] == network["net"]
    for a, b in zip(jax.tree_util.tree_leaves(eqx.filter(loaded, eqx.is_array)),
                    jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_array))):  # fmt: skip
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # equal weights in equal structures: the same function (checked once, with a
    # label, on the small MLP, and on the plain MLP of images; an eager U-Net call
    # is slow to trace)
    if network["net"] == "plain" or (network["net"] == "mlp" and num_classes):
        x, kw = jnp.full(shape, 0.3), {"label": 1} if num_classes else {}
        np.testing.assert_allclose(loaded(0.5, x, **kw), model(0.5, x, **kw),
                                   rtol=1e-12)  # fmt: skip
    assert eqx.tree_equal(eqx.filter(loaded, eqx.is_array, inverse=True),
                          eqx.filter(model, eqx.is_array, inverse=True))  # fmt: skip
    # the header is a checkpoint header: readable without loading the weights
    head = sg.checkpoint_metadata(path)["hparams"]
    assert head["shape"] == list(shape) and head["sde"]["class"] == "VPSDE"


def test_load_model_gives_what_sample_ode_needs(tmp_path):
    sde = sg.VESDE(sigma_min=0.01, sigma_max=5.0)
    net = {"net": "mlp", "width": 8, "depth": 1}
    model = sg.build_model(sde, (2,), net, key=jr.key(0))
    path = sg.export_model(tmp_path / "ve.sdegen", model, sde=sde, shape=(2,),
                           network=net)  # fmt: skip
    loaded, meta = sg.load_model(path)
    x = sg.sample_ode(jr.key(2), meta.sde, loaded, meta.shape, "euler", num_steps=2)
    ref = sg.sample_ode(jr.key(2), sde, model, (2,), "euler", num_steps=2)
    np.testing.assert_allclose(x, ref, rtol=1e-12)


def test_dtype_and_data_mapping(tmp_path):
    sde = sg.VPSDE()
    net = {"net": "mlp", "width": 4, "depth": 1}
    model = sg.build_model(sde, (3,), net, key=jr.key(0))
    f32 = jax.tree_util.tree_map(
        lambda x: x.astype(jnp.float32) if eqx.is_inexact_array(x) else x, model
    )
    t = sg.data.AffineTransform(shift=2.0, scale=4.0)
    path = sg.export_model(tmp_path / "f.sdegen", f32, sde=sde, shape=(3,), network=net,
                           data={"value_range": [0.0, 16.0]}, transform=t)  # fmt: skip
    loaded, meta = sg.load_model(path)
    assert meta.dtype == "float32"
    leaf = jax.tree_util.tree_leaves(eqx.filter(loaded, eqx.is_inexact_array))[0]
    assert leaf.dtype == jnp.zeros(()).dtype  # cast to JAX's default float
    loaded32, _ = sg.load_model(path, dtype=jnp.float32)
    assert jax.tree_util.tree_leaves(eqx.filter(loaded32, eqx.is_inexact_array))[0].dtype == jnp.float32
    assert isinstance(meta.transform, sg.data.AffineTransform)
    # model space -> data: undo the transform (y * 4 + 2), then [0, 16] -> [-1, 1]
    y = np.array([[-0.5, 0.0, -0.25]])
    np.testing.assert_allclose(meta.to_data(y), ((y * 4 + 2) + 1) * 8, rtol=1e-12)
    # Quantised data come back in their own dtype and range: 17 levels 0..16 as
    # uint8, rounded to the nearest level and clipped; 8-bit images (an image format,
    # levels implied) as uint8 0..255; non-integer levels as float64 on the levels.
    q = dataclasses.replace(meta, transform=None, data={"value_range": [0.0, 16.0],
                                                        "levels": 17})  # fmt: skip
    u = np.array([-1.3, -1.0, -0.97, 0.0, 0.06, 0.07, 1.0, 1.5])
    got = q.to_data(u)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, np.clip(np.round((u + 1) * 8), 0, 16))
    img = dataclasses.replace(q, data={"value_range": [0, 255], "kind": "image"})
    got = img.to_data(np.array([-1.04, -1.0, 0.0, 1.0, 1.01]))
    assert got.dtype == np.uint8 and got.tolist() == [0, 0, 128, 255, 255]
    half = dataclasses.replace(q, data={"value_range": [0.0, 1.0], "levels": 3})
    got = half.to_data(np.array([-2.0, -0.4, 0.3, 3.0]))
    assert got.dtype == np.float64 and got.tolist() == [0.0, 0.5, 0.5, 1.0]


def test_export_and_load_errors(tmp_path):
    sde = sg.VPSDE()
    net = {"net": "mlp", "width": 4, "depth": 1}
    model = sg.build_model(sde, (2,), net, key=jr.key(0))
    with pytest.raises(ValueError, match="`model` does not match `network`"):
        sg.export_model(tmp_path / "x", model, sde=sde, shape=(2,),
                        network={**net, "width": 5})  # fmt: skip
    with pytest.raises(ValueError, match="A U-Net needs images"):
        sg.export_model(tmp_path / "x", model, sde=sde, shape=(2,),
                        network={"net": "unet"})  # fmt: skip
    with pytest.raises(ValueError, match=r"`network\['param'\]` must be one of"):
        sg.build_model(sde, (2,), {"param": "eps"}, key=jr.key(0))
    with pytest.raises(ValueError, match="'plain' .* is not label-conditional"):
        sg.build_model(sde, (2,), {"net": "plain"}, num_classes=3, key=jr.key(0))
    # a plain checkpoint is not an exported model
    sg.save_checkpoint(tmp_path / "plain.ckpt", model)
    with pytest.raises(sg.CheckpointError, match="not an exported model"):
        sg.load_model(tmp_path / "plain.ckpt")
    # damage is caught by the checksum, before any deserialisation
    path = sg.export_model(tmp_path / "m.sdegen", model, sde=sde, shape=(2,),
                           network=net)  # fmt: skip
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(sg.CheckpointError, match="checksum"):
        sg.load_model(path)
    with pytest.raises(sg.CheckpointError, match="does not exist"):
        sg.load_model(tmp_path / "missing.sdegen")
    # the write is atomic: no temporary file is left beside the model
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
