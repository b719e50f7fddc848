"""Progress bars (tqdm) for the long work of a command: a per-example function
mapped over $N$ inputs in chunks, the first chunk marked as compiling.

`chunked_map(fn, xs, ...)` equals [`sdegen.map_in_chunks`][]`(fn, xs, ...)`: it cuts
`xs` into chunks of one size (the last one padded by repeating its first row, so
`fn` compiles once) and hands each chunk to `map_in_chunks`, which shards it over the
mesh; between chunks it updates a bar counting examples. The first chunk includes
the compilation, so the bar says "compiling" until it is done and then how long it
took; the rate shown afterwards is that of the compiled code.
"""

import sys
import time
from typing import Any

import numpy as np

from ._devices import num_devices, round_up


def bar(total: int, desc: str, *, enabled: bool, unit: str = "it", leave: bool = True):
    """A tqdm bar on stderr, or `None` when disabled."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=leave, dynamic_ncols=True,
                file=sys.stderr)  # fmt: skip


def _rows(x: Any, start: int, stop: int, size: int) -> Any:
    part = np.asarray(x[start:stop])
    pad = size - (stop - start)
    if pad:
        part = np.concatenate([part, np.repeat(part[:1], pad, axis=0)])
    return part


def chunked_map(fn: Any, xs: Any, *, chunk: int, mesh: Any = None, desc: str,
                progress: bool = True, unit: str = "example",
                leave: bool = True) -> Any:  # fmt: skip
    """`jax.vmap(fn)(xs)` in chunks of `chunk` examples (rounded up to a multiple of
    the devices of `mesh`), as NumPy arrays, with a progress bar."""
    import jax

    import sdegen as sg

    leaves = jax.tree_util.tree_leaves(xs)
    n = int(np.shape(leaves[0])[0])
    size = round_up(max(1, min(int(chunk), n)), num_devices(mesh))
    pbar = bar(n, desc, enabled=progress, unit=unit, leave=leave)
    pieces = []
    t0 = time.perf_counter()
    try:
        if pbar is not None:
            pbar.set_postfix_str("compiling and running the first chunk")
        for start in range(0, n, size):
            stop = min(start + size, n)
            part = jax.tree_util.tree_map(lambda x: _rows(x, start, stop, size), xs)
            out = sg.map_in_chunks(fn, part, chunk_size=size, mesh=mesh)
            pieces.append(jax.tree_util.tree_map(lambda a: np.asarray(a)[: stop - start],
                                                 out))  # fmt: skip
            if pbar is not None:
                if start == 0:
                    dt = time.perf_counter() - t0
                    pbar.set_postfix_str(f"first chunk (incl. any compilation) {dt:.1f} s")
                pbar.update(stop - start)
    finally:
        if pbar is not None:
            pbar.close()
    return jax.tree_util.tree_map(lambda *a: np.concatenate(a, axis=0), *pieces)
