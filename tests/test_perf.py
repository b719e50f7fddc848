"""What users feel before the first sample: a light `import sdegen` (heavy parts on
first use, every public name still there), one program per first call, and the GPU
benchmark's code path (run on the CPU at a small size)."""

import json
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import jax.random as jr
import pytest

import sdegen as sg


ROOT = pathlib.Path(__file__).resolve().parents[1]


def _fresh(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, check=True)  # fmt: skip
    return proc.stdout.strip().splitlines()[-1]


def test_import_is_lazy_and_complete():
    out = json.loads(_fresh(
        "import json, sys, sdegen as sg\n"
        "heavy = ['optax', 'tensorboardX', 'matplotlib', 'datasets', 'sdegen.nn', "
        "'sdegen.data', 'sdegen.metrics', 'sdegen._training', 'sdegen._cli']\n"
        "before = [m for m in heavy if m in sys.modules]\n"
        "names = [n for n in dir(sg) if not n.startswith('_')]\n"
        "missing = [n for n in names if getattr(sg, n, None) is None]\n"
        "print(json.dumps({'before': before, 'missing': missing, 'names': names, "
        "'nn': sg.nn.MLP.__module__, 'step': sg.make_step.__module__}))"
    ))  # fmt: skip
    assert out["before"] == []
    assert out["missing"] == []
    assert out["nn"] == "sdegen.nn._mlp"
    assert out["step"] == "sdegen._training._train"
    # every name that sdegen/__init__.py imports (eagerly or on first use) is there
    import ast

    tree = ast.parse((ROOT / "sdegen" / "__init__.py").read_text())
    declared = {a.asname for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                for a in node.names if a.asname}  # fmt: skip
    assert len(declared) > 100
    assert declared <= set(out["names"])


def test_lazy_names_match_the_type_checking_imports():
    from sdegen._core._lazy import lazy_names

    names = lazy_names("sdegen", sg.__file__)
    assert {"nn", "data", "metrics", "make_step", "train", "dsm_loss"} <= set(names)
    assert set(names) <= set(dir(sg))
    for n in names:
        assert getattr(sg, n) is not None
    with pytest.raises(AttributeError, match="no_such_name"):
        sg.no_such_name  # noqa: B018


def test_first_call_compiles_one_program():
    """Under an outer `jit` nothing is compiled eagerly (no grid, prior draw or check
    compiled as its own program), and the counted evaluations are right."""
    sde = sg.VPSDE()
    score = lambda t, x: -x * (1.0 + t)
    fn = jax.jit(jax.vmap(lambda k: sg.sample_ode(k, sde, score, (3,), "dpmpp_2m",
                                                  num_steps=7, return_stats=True)))  # fmt: skip
    keys = jr.split(jr.key(0), 4)
    with jax.log_compiles():
        import logging

        records: list[str] = []

        class Catch(logging.Handler):
            def emit(self, record):
                records.append(record.getMessage())

        logger = logging.getLogger("jax")
        h = Catch()
        logger.addHandler(h)
        try:
            x, stats = fn(keys)
        finally:
            logger.removeHandler(h)
    compiled = [r for r in records if r.startswith("Finished XLA compilation")]
    assert len(compiled) == 1, compiled
    assert jnp.all(stats.nfe == 7)
    eager_x, eager_stats = sg.sample_ode(keys[0], sde, score, (3,), "dpmpp_2m",
                                         num_steps=7, return_stats=True)  # fmt: skip
    assert int(eager_stats.nfe) == 7
    assert jnp.allclose(eager_x, x[0], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_gpu_benchmark_runs_small_on_cpu():
    # In a fresh process as a benchmark run is (float32, JAX's default): switching x64
    # off inside this process would meet arrays cached as float64.
    out = json.loads(_fresh(
        "import json, sys; sys.path.insert(0, 'benchmarks')\n"
        "import jax; jax.config.update('jax_enable_x64', False)\n"
        "import bench_gpu\n"
        "text, data = bench_gpu.run(small=True)\n"
        "print(json.dumps({'text': text, 'data': data}, default=float))\n"
    ))
    text, data = out["text"], out["data"]
    assert "images/s" in text and "bits/dim" in text
    rates = [*data["train_images_per_s"].values(), data["sample_images_per_s"]]
    assert all(r > 0 for r in rates)
    assert jnp.isfinite(data["bits_per_dim"])
