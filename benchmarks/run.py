"""Run the benchmarks, print their tables, and write the page `docs/benchmarks.md`.

    python benchmarks/run.py              # default sizes: about 10 minutes on 2 cores
    python benchmarks/run.py --full       # larger sizes, the training and sampler tables
    python benchmarks/run.py sample       # only the benchmarks whose name contains "sample"
    python benchmarks/run.py --device gpu # the image-scale benchmarks, on a GPU

Every benchmark interleaves its contenders in one process (A, B, A, B, ...; medians)
and reports ratios to a floor measured in the same run: a hand-written loop, or diffrax
used directly. Results are saved per platform in `benchmarks/results/<platform>.json`
(`cpu.json`, `gpu.json`, ...), and the docs page shows every platform measured so far:
run this script on a machine with an accelerator to fill in its section.
"""

import argparse
import datetime
import json
import pathlib
import sys
import time


HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
PAGE = ROOT / "docs" / "benchmarks.md"
sys.path.insert(0, str(HERE))


def _benchmarks(full: bool):
    """`(name, title, command, thunk)`; each thunk returns `(markdown, data)`."""
    import bench_adaptive
    import bench_likelihood
    import bench_sample

    out = [
        ("sample", "Fixed-step sampling (Euler–Maruyama) and its memory",
         "python benchmarks/bench_sample.py",
         lambda: bench_sample.run(batch=1024, steps=200, rounds=9 if full else 5)),
        ("adaptive_ode", "Adaptive probability-flow ODE sampling",
         "python benchmarks/bench_adaptive.py",
         lambda: bench_adaptive.run_ode(batch=1024, d=2, rounds=9 if full else 5)),
        ("adaptive_sde", "Adaptive reverse-SDE sampling: the Brownian path's cost",
         "python benchmarks/bench_adaptive.py",
         lambda: bench_adaptive.run_sde(batch=256, rounds=5 if full else 3)),
        ("likelihood", "Exact likelihood", "python benchmarks/bench_likelihood.py",
         lambda: bench_likelihood.run(batch=256, rounds=7 if full else 5)),
    ]  # fmt: skip
    import bench_train

    out.append(("train", "Training: loss and gradient, the step, streamed memory",
                "python benchmarks/bench_train.py",
                lambda: bench_train.run(full=full)))  # fmt: skip
    import bench_first_call
    import bench_peers

    out.append(("first_call", "First call (fresh process) and `import sdegen`",
                "python benchmarks/bench_first_call.py",
                lambda: bench_first_call.run_all(repeats=7 if full else 5)))  # fmt: skip
    if bench_peers.available():  # the `bench` extra: torch, diffusers, k-diffusion
        out.append(("peers", "Side by side with k-diffusion and diffusers (PyTorch, CPU)",
                    "python benchmarks/bench_peers.py",
                    lambda: bench_peers.run(rounds=5 if full else 3)))  # fmt: skip
    if full:
        import bench_samplers

        out.append(("samplers", "Which sampler: quality against NFE on the digits model",
                    "python benchmarks/bench_samplers.py --run out",
                    lambda: bench_samplers.run(ROOT / "out")))  # fmt: skip
    return out


def _gpu_benchmarks():
    """The image-scale benchmarks, or None without a GPU."""
    import jax

    if not any(d.platform == "gpu" for d in jax.devices()):
        return None
    import bench_gpu

    return [("gpu", "Image scale: U-Net training, sampling and memory, bits/dim",
             "python benchmarks/run.py --device gpu",
             lambda: bench_gpu.run(small=False))]  # fmt: skip


def _platform() -> str:
    import jax

    return jax.devices()[0].platform


def _describe() -> str:
    import os

    import jax

    d = jax.devices()[0]
    return (f"{d.platform} ({d.device_kind}), {os.cpu_count()} CPU cores, JAX "
            f"{jax.__version__}")  # fmt: skip


def write_page() -> None:
    """Regenerate `docs/benchmarks.md` from every `results/*.json`."""
    parts = [PAGE_HEAD]
    results = {p.stem: json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))}
    for plat in ("cpu", "gpu"):
        res = results.get(plat)
        parts.append(f"## {'CPU' if plat == 'cpu' else 'GPU'}\n")
        if res is None:
            parts.append(
                "Not measured (no GPU was available). `python benchmarks/run.py "
                "--device gpu` on a machine with a GPU fills in this section: U-Net "
                "training throughput at 32x32x3 (batch 128, float32 and bfloat16), "
                "sampling throughput and peak memory with DPM-Solver++(2M) at 20 steps, "
                "and a likelihood in bits/dim (`benchmarks/bench_gpu.py`; the test "
                "suite runs the same code on the CPU at a small size).\n"
            )
            continue
        parts.append(f"Measured on {res['machine']}, {res['date']}; the whole run took "
                     f"{res['wall_s'] / 60:.1f} min.\n")  # fmt: skip
        for b in res["benchmarks"]:
            # `command` None: a section measured by hand (its text names the commands)
            head = "" if b["command"] is None else f"`{b['command']}`\n\n"
            parts.append(f"### {b['title']}\n\n{head}{b['markdown']}\n")
    PAGE.write_text("\n".join(parts))


PAGE_HEAD = """# Benchmarks

Every benchmark compares sdegen against a floor measured **in the same run** — a
hand-written `jax.jit` + `jax.lax.scan` loop, `diffrax.diffeqsolve` used directly, a
minimal optax step — because wall-clock numbers on a shared machine mean something only
as same-run ratios. Contenders are interleaved (A, B, A, B, ...) and medians reported;
compilation is excluded, except in the first-call section, which measures it.

```bash
python benchmarks/run.py          # default sizes (about 10 minutes on 2 cores)
python benchmarks/run.py --full   # larger sizes, plus training and the sampler table
python benchmarks/run.py --device gpu   # the image-scale section, on a GPU
make bench                        # the same as the first line, after installing extras
```

This page is written by `benchmarks/run.py` from `benchmarks/results/*.json`: the
numbers below are the output of those runs. The sections without a command line of
their own (the digits demo's likelihood and verdicts) were measured with the commands
their text names and are kept in the same file.
"""


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("only", nargs="*", help="run only benchmarks whose name contains these")
    p.add_argument("--full", action="store_true", help="larger sizes and all tables")
    p.add_argument("--no-write", action="store_true", help="print only")
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                   help="gpu: the image-scale benchmarks of bench_gpu.py")  # fmt: skip
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    done = []
    benchmarks = _benchmarks(a.full) if a.device == "cpu" else _gpu_benchmarks()
    if benchmarks is None:
        print("--device gpu: no GPU is available here; the page's GPU section says "
              "so (not measured).")  # fmt: skip
        if not a.no_write:
            write_page()
        return
    for name, title, command, thunk in benchmarks:
        if a.only and not any(w in name for w in a.only):
            continue
        print(f"\n## {title}\n", flush=True)
        t1 = time.perf_counter()
        text, data = thunk()
        print(text, flush=True)
        print(f"\n({time.perf_counter() - t1:.0f} s)", flush=True)
        done.append({"name": name, "title": title, "command": command,
                     "markdown": text, "data": data})  # fmt: skip
    wall = time.perf_counter() - t0
    print(f"\nall benchmarks: {wall / 60:.1f} min", flush=True)
    if a.no_write or not done:
        return
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{_platform()}.json"
    old = json.loads(path.read_text()) if path.exists() else {"benchmarks": []}
    # in place of the former results of the same name (the page keeps its order,
    # and its sections measured by hand); new ones after them
    fresh = {d["name"]: d for d in done}
    merged = [fresh.pop(b["name"], b) for b in old["benchmarks"]] + list(fresh.values())
    res = {"machine": _describe(), "date": datetime.date.today().isoformat(),
           "wall_s": wall if not a.only else old.get("wall_s", wall),
           "benchmarks": merged}  # fmt: skip
    path.write_text(json.dumps(res, indent=1, default=float))
    write_page()
    print(f"wrote {path.relative_to(ROOT)} and {PAGE.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
