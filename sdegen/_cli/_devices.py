"""`--devices`, `--coordinator`, `--num-processes`, `--process-id`: connect the
processes of a multi-host job, then build the mesh of `--devices`."""

import argparse
from typing import Any

from ._errors import CLIError


def distributed_initialize(**kwargs: Any) -> Any:
    from .._runs._distributed import distributed_initialize as init

    return init(**kwargs)


def setup_devices(args: argparse.Namespace) -> Any:
    """Connect the processes of a multi-host job (when any of its options is given;
    before any other JAX call), then return the mesh of `--devices` (`None` without
    it: one device)."""
    multi = (getattr(args, "coordinator", None), getattr(args, "num_processes", None),
             getattr(args, "process_id", None))  # fmt: skip
    if any(v is not None for v in multi):
        distributed_initialize(coordinator_address=multi[0], num_processes=multi[1],
                               process_id=multi[2])  # fmt: skip
    devices = getattr(args, "devices", None)
    if devices is None:
        return None
    import jax

    from .._runs._distributed import make_mesh

    available = jax.device_count()
    if not 0 <= devices <= available:
        raise CLIError(
            f"--devices must be in [0, {available}] (0: all {available} available "
            f"devices), got {devices}."
        )
    return make_mesh(devices or None)


def num_devices(mesh: Any) -> int:
    return 1 if mesh is None else int(mesh.devices.size)


def round_up(n: int, d: int) -> int:
    return -(-int(n) // d) * d
