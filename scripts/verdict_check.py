"""The independent check of the sample-quality verdicts (issue 21).

For a trained digits run: draw 500 samples with each sampler (the same prior draws for
all), then measure them two ways:

- independently, in this script's own NumPy code: the Fréchet distance on PCA-16
  features of all 1797 digits, 500 samples against the 1297 digits of a random split,
  floor = the other 500 real digits against the same 1297, 20 splits; the ratio is
  mean distance / mean floor, with the range of the per-split ratios and a bootstrap
  interval over the samples (95%, 200 resamples, centred on the estimate);
- by the product: `sg.metrics.verdict` against all the real digits, as `sdegen
  sample`, `sdegen advise` and `metrics.json` do.

It prints a Markdown table (same order) and the Spearman correlation of the two
rankings. With `--advise`, it measures every row of the run's `advise.json` instead
(the advisor's own samplers and prior draws) and compares them with the advisor's
ratios.

    PYTHONPATH=$PWD python scripts/verdict_check.py --out /tmp/demo21 [--advise]
"""

import argparse
import json
from pathlib import Path

import jax
import jax.random as jr
import numpy as np

import sdegen as sg
from sdegen._cli._run import load_run


SAMPLERS = [("euler", 5, "uniform"), ("euler", 2, "uniform"), ("ddim", 10, "logsnr"),
            ("dpmpp_2m", 20, "logsnr")]  # fmt: skip


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    ma, mb = a.mean(0), b.mean(0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(sa)
    r = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh(r @ sb @ r), 0, None)))
    return float(np.sum((ma - mb) ** 2) + np.trace(sa) + np.trace(sb) - 2 * cross)


def independent(feat_s: np.ndarray, feat_d: np.ndarray, seed: int = 123,
                splits: int = 20, boot: int = 200) -> dict:  # fmt: skip
    rng = np.random.default_rng(seed)
    m = len(feat_s)
    parts = [rng.permutation(len(feat_d)) for _ in range(splits)]
    refs = [feat_d[p[m:]] for p in parts]
    floor = np.array([frechet(feat_d[p[:m]], r) for p, r in zip(parts, refs)])
    dist = np.array([frechet(feat_s, r) for r in refs])
    ratio = dist.mean() / floor.mean()
    bs = []
    for _ in range(boot):
        s = feat_s[rng.integers(0, m, m)]
        bs.append(np.mean([frechet(s, r) for r in refs[:5]]) / floor[:5].mean())
    lo, med, hi = np.percentile(bs, [2.5, 50, 97.5])
    return {"ratio": float(ratio), "split_range": [float((dist / floor).min()),
            float((dist / floor).max())], "ci": [float(ratio - (med - lo)),
            float(ratio + (hi - med))], "floor": float(floor.mean())}  # fmt: skip


def spearman(a, b) -> float:
    ra = np.argsort(np.argsort(a)).astype(float)
    rb = np.argsort(np.argsort(b)).astype(float)
    return float(np.corrcoef(ra, rb)[0, 1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="a trained digits run folder")
    p.add_argument("--advise", action="store_true",
                   help="check the rows of the run's advise.json")
    p.add_argument("--num-samples", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    run = load_run(args.out)
    digits = np.asarray(sg.data.load_digits(dtype=np.float64)[0]).reshape(1797, -1)
    mean = digits.mean(0)
    comps = np.linalg.svd(digits - mean, full_matrices=False)[2][:16].T
    feats = lambda x: (np.asarray(x, np.float64).reshape(len(x), -1) - mean) @ comps
    keys = jr.split(jr.key(args.seed), args.num_samples)
    if args.advise:
        adv = json.loads((Path(args.out) / "advise.json").read_text())
        plan = [(r["solver"], r["num_steps"], r["grid"], r) for r in adv["rows"]]
    else:
        plan = [(*s, None) for s in SAMPLERS]
    rows = []
    for solver, steps, grid, adv_row in plan:
        sample = (sg.sample_ode if sg.SOLVERS[solver].ode else sg.sample_sde)
        fn = jax.jit(jax.vmap(lambda k, solver=solver, steps=steps, grid=grid, sample=sample:
                              sample(k, run.sde, run.model, run.shape, solver,
                                     num_steps=steps, grid=grid)))  # fmt: skip
        x = np.asarray(run.to_data(fn(keys)))
        ind = independent(feats(x), feats(digits))
        flat = x.reshape(len(x), -1)
        prod = adv_row or sg.metrics.verdict(flat, digits, key=jr.key(1),
                                             features=sg.metrics.digit_features())
        rows.append((solver, steps, grid, prod, ind))
        print(f"{solver} {steps} {grid}: product {prod['frechet_ratio']:.3f} "
              f"independent {ind['ratio']:.3f}", flush=True)
    print("\n| sampler | product: Fréchet ratio (95% interval) | independent: ratio "
          "(95% bootstrap; range over 20 splits) |\n| --- | --- | --- |")
    for solver, steps, grid, prod, ind in rows:
        lo, hi = prod["frechet_ratio_ci"]
        print(f"| {solver}-{steps} ({grid}) | {prod['frechet_ratio']:.2f} ({lo:.2f}-"
              f"{hi:.2f}) | {ind['ratio']:.2f} ({ind['ci'][0]:.2f}-{ind['ci'][1]:.2f}; "
              f"{ind['split_range'][0]:.2f}-{ind['split_range'][1]:.2f}) |")
    a = [r[3]["frechet_ratio"] for r in rows]
    b = [r[4]["ratio"] for r in rows]
    print(f"\nSpearman correlation of the two rankings: {spearman(a, b):.3f} over "
          f"{len(rows)} samplers")
    if args.advise and adv.get("recommended"):
        rec = adv["recommended"]
        ind = next(r[4] for r in rows if (r[0], r[1]) == (rec["solver"], rec["num_steps"]))
        print(f"recommended {rec['solver']}-{rec['num_steps']}: independent ratio "
              f"{ind['ratio']:.3f} against the target {adv['target']}")


if __name__ == "__main__":
    main()
