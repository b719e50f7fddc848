"""`--solver`, `--sampler`, `--grid`, `--sample-steps`, `--label`, `--guidance`:
the sampler of a command, and drawing samples with it.

Solver names are resolved through the one name table, `sdegen._solver_table`: a
row's `.sde`/`.ode` flags say whether it solves the reverse SDE or the
probability-flow ODE, and the name itself goes to [`sdegen.sample_sde`][] or
[`sdegen.sample_ode`][] unchanged, so every solver the library knows (the fast
exponential integrators included) is available here.
"""

import inspect
from dataclasses import dataclass
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

import sdegen as sg

from .._engine._solver_table import _normalise, lookup
from ._errors import CLIError
from ._progress import chunked_map


@dataclass(frozen=True)
class SamplerSpec:
    solver: str
    kind: str  # "ode" or "sde"
    num_steps: int
    grid: str | None = None

    def describe(self) -> str:
        grid = f", {self.grid} grid" if self.grid else ""
        return f"{self.solver} ({self.kind}), {self.num_steps} steps{grid}"


def resolve_sampler(scfg: dict[str, Any]) -> SamplerSpec:
    """The sampler of a `sample` config `{solver, sampler, grid, sample_steps}`:
    `sampler` "ode"/"sde" checked against the solver's row, "auto" the ODE when the
    solver can."""
    row = lookup("solver", scfg["solver"], arg="--solver")
    sampler = scfg.get("sampler") or "auto"
    if sampler == "auto":
        kind = "ode" if row.ode else "sde"
    else:
        kind = sampler
        if not getattr(row, sampler):
            what = "probability-flow ODE" if sampler == "ode" else "reverse SDE"
            other = "sde" if sampler == "ode" else "ode"
            raise CLIError(
                f"--solver {scfg['solver']!r} cannot solve the {what}; choose "
                f"--sampler {other} or another solver (see `sdegen solvers`)."
            )
    grid = scfg.get("grid")
    if grid is not None:
        fn = sg.sample_ode if kind == "ode" else sg.sample_sde
        if "grid" not in inspect.signature(fn).parameters:
            raise CLIError(
                f"--grid: this version of sdegen's {fn.__name__} takes no time grid "
                "option."
            )
    return SamplerSpec(_normalise(scfg["solver"]), kind, int(scfg["sample_steps"]), grid)


# ---------------------------------------------------------------- scores


class LabelScore(eqx.Module):
    """`cond_score(t, x, label)` of a label-conditional model; `label=None` is the
    null label (the unconditional branch)."""

    model: Any

    def __call__(self, t, x, label):
        return self.model(t, x) if label is None else self.model(t, x, label=label)


class Conditional(eqx.Module):
    """The score of one class, `model(t, x, label=label)`."""

    model: Any
    label: Any

    def __call__(self, t, x):
        return self.model(t, x, label=self.label)


def check_label(num_classes: int | None, label: int | None,
                guidance: float | None) -> None:  # fmt: skip
    """`--label` and `--guidance` against the model: a label needs a conditional
    model and must be one of its classes; guidance needs a label."""
    if guidance is not None and label is None:
        raise CLIError("--guidance needs --label (the class to guide towards).")
    if label is None:
        return
    if num_classes is None:
        raise CLIError(
            "--label: the run's model is unconditional; train it with --label-column "
            "to sample one class."
        )
    if not 0 <= label < num_classes:
        raise CLIError(f"--label must be in [0, {num_classes}), got {label}.")


def guided(model: Any, label: Any, guidance: float | None) -> Any:
    """The score of class `label` (an int or traced int array): the model with the
    label fixed, or classifier-free guidance [`sdegen.classifier_free_guidance`][]
    with weight `guidance` (W = 0 or `None`: plain conditional sampling)."""
    y = jnp.asarray(label, jnp.int32)
    if not guidance:
        return Conditional(model, y)
    return sg.classifier_free_guidance(LabelScore(model), y, float(guidance))


# ---------------------------------------------------------------- sampling


def _sample_one(sde, shape, spec: SamplerSpec, model, guidance, inputs):
    if isinstance(inputs, tuple):  # (key data, label)
        key_data, label = inputs
        score = guided(model, label, guidance)
    else:
        key_data, score = inputs, model
    key = jr.wrap_key_data(key_data)
    kw: dict[str, Any] = {"num_steps": spec.num_steps, "denoise": True}
    if spec.grid is not None:
        kw["grid"] = spec.grid
    if spec.kind == "ode":
        return sg.sample_ode(key, sde, score, shape, spec.solver, **kw)
    return sg.sample_sde(key, sde, score, shape, spec.solver, **kw)


def draw_samples(key: Any, sde: Any, model: Any, shape: tuple[int, ...],
                 spec: SamplerSpec, num: int, *, labels: Any = None,
                 guidance: float | None = None, chunk: int = 500, mesh: Any = None,
                 progress: bool = False, desc: str = "sampling",
                 leave: bool = True) -> np.ndarray:  # fmt: skip
    """`num` samples of `model`, of the classes `labels` (an int array `(num,)`;
    `None`: unconditional) with classifier-free guidance weight `guidance`.

    Sample $i$ is drawn with the key `jax.random.split(key, num)[i]`, so the samples
    do not depend on the chunk size or the mesh (unconditional ones equal
    [`sdegen.sample_many`][]'s)."""
    keys = np.asarray(jax.device_get(jr.key_data(jr.split(key, int(num)))))
    inputs: Any = keys
    if labels is not None:
        inputs = (keys, np.asarray(labels, np.int32).reshape(int(num)))
    fn = eqx.Partial(_sample_one, sde, tuple(shape), spec, model,
                     None if guidance is None else float(guidance))  # fmt: skip
    return chunked_map(fn, inputs, chunk=chunk, mesh=mesh, desc=desc,
                       progress=progress, unit="sample", leave=leave)  # fmt: skip
