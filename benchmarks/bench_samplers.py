"""Which sampler to use: every sampler by name at NFE 5, 10, 20, 35, 50, 100 and 1000 on
the trained digits model of `make demo` (the run folder `out/`), measured with
`sg.advise`: the verdict of `sg.metrics.verdict` (the Fréchet distance of 500 samples
to all the real digits over that of 500 held-out real digits, with its interval), the
fraction of pixels beyond ±1.1, and the sampling time.

    make demo && python benchmarks/bench_samplers.py --run out
"""

import argparse
import pathlib

import jax.random as jr


def run(run_dir, nfes=(5, 10, 20, 35, 50, 100, 1000), num_samples=500):
    import sdegen as sg
    from sdegen._cli._data import reference_pool
    from sdegen._cli._run import load_run
    from sdegen._cli._sample_cmd import held_out_data

    run_dir = pathlib.Path(run_dir)
    r = load_run(run_dir)
    data = held_out_data(r.cfg, int(r.cfg["train"]["seed"]))
    pool, what = reference_pool(data)
    advice = sg.advise(jr.key(0), r.sde, r.model, r.to_model(pool), nfes=nfes,
                       num_samples=num_samples, transform=r.to_data, progress=True,
                       reference_name=what)  # fmt: skip
    text = advice.table() + "\n\n" + advice.summary()
    text += (f"\n\n(Model: `{run_dir}` at step {r.step}; data-vs-data floor of the "
             f"Fréchet distance: {advice.floor:.4g}.)")  # fmt: skip
    return text, {"rows": advice.rows, "recommended": advice.recommended,
                  "floor": advice.floor}  # fmt: skip


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--run", default="out", help="a run folder (default out/)")
    p.add_argument("--nfe", type=int, nargs="+", default=[5, 10, 20, 35, 50, 100, 1000])
    p.add_argument("--num-samples", type=int, default=500)
    a = p.parse_args(argv)
    print(run(a.run, tuple(a.nfe), a.num_samples)[0])


if __name__ == "__main__":
    main()
