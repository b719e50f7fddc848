r"""Inpaint the lower half of held-out digits with an unconditional score model.

Trains (or loads) a noise-prediction MLP on the embedded 8x8 digits under the VP SDE,
then completes digits of the held-out split whose upper four rows are observed with
[`sdegen.inpaint`][]: a predictor-corrector sampler that, after every update at time
$t$, replaces the observed pixels by $\alpha(t)\,y + \sigma(t)\,z$ (Song et al. 2021,
Appendix I.2), and by $y$ exactly at the end.

Writes `inpaint_digits.png` (observation | samples | ground truth) and prints the mean
squared error of the filled-in half against the truth, next to two baselines (the
training mean of the lower half, and the lower half of the training digit whose upper
half is nearest), the accuracy of a logistic-regression digit classifier on the
completions, and the largest change to the observed pixels (zero).

    .venv/bin/python examples/inpaint_digits.py            # a few minutes on 2 cores
    .venv/bin/python examples/inpaint_digits.py --quick    # seconds
"""

from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from _common import (
    check_finite,
    digit_classifier,
    digits_split,
    log,
    parser,
    predict,
    resolve,
    save_panels,
    score_model,
    train_config,
    train_or_load,
)

import sdegen as sg


FULL = dict(steps=4000, sample_steps=500, width=512, num_eval=200, num_show=10,
            samples_per_digit=6)  # fmt: skip
QUICK = dict(steps=20, sample_steps=10, width=32, num_eval=8, num_show=3,
             samples_per_digit=2)  # fmt: skip


@eqx.filter_jit
def _inpaint_many(model, sde, keys, ys, mask, num_steps):
    def one(key, y):
        return sg.inpaint(key, sde, model, y, mask, num_steps=num_steps, denoise=True)

    return jax.vmap(one)(keys, ys)


def main(argv=None):
    p = parser(__doc__.splitlines()[0], steps=FULL["steps"],
               sample_steps=FULL["sample_steps"])  # fmt: skip
    p.add_argument("--num-eval", type=int, default=None,
                   help="held-out digits in the metrics (default 200: all 179)")
    p.add_argument("--samples-per-digit", type=int, default=None,
                   help="completions per digit in the figure (default 6)")
    args = resolve(p.parse_args(argv), FULL, QUICK)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (x_train, y_train), (x_test, y_test) = digits_split()
    shape = tuple(x_train.shape[1:])
    sde = sg.VPSDE()

    def loss_fn(model, batch, key):
        return sg.dsm_loss(model, sde, batch, key)

    model = score_model(jr.key(args.seed), shape, sde, width=args.width)
    cfg = train_config(args, batch_size=128)
    model = train_or_load(model, loss_fn, x_train, cfg,
                          path=out / "inpaint_digits_model.ckpt",
                          hparams={"model": "mlp-noise-vp", "width": args.width},
                          checkpoint=args.checkpoint, retrain=args.retrain)  # fmt: skip

    # Observed: the upper four rows; unknown: the lower four.
    mask = np.zeros(shape, bool)
    mask[:, : shape[1] // 2] = True
    unknown = ~mask

    # One completion of each of the first `num_eval` held-out digits (the metrics),
    # and `samples_per_digit` of one held-out digit per class (the figure), drawn in
    # one batch so the sampler compiles once.
    n = min(args.num_eval, len(x_test))
    picks = [int(np.flatnonzero(np.asarray(y_test) == c)[0]) for c in range(10)]
    picks = np.asarray(picks[: args.num_show])
    k = args.samples_per_digit
    ys = jnp.concatenate([x_test[:n], jnp.repeat(x_test[picks], k, axis=0)])
    keys = jr.split(jr.key(args.seed + 1), len(ys))
    out_all = np.asarray(_inpaint_many(model, sde, keys, ys, mask, args.sample_steps))
    check_finite("inpaint", out_all)
    samples, shown = out_all[:n], out_all[n:]
    truth = np.asarray(x_test[:n])
    mse = float(np.mean((samples - truth)[:, unknown] ** 2))
    known_err = float(np.max(np.abs(samples - truth)[:, mask]))
    xt = np.asarray(x_train)
    mean_fill = np.mean(xt[:, unknown], axis=0)
    mse_mean = float(np.mean((truth[:, unknown] - mean_fill) ** 2))
    d = np.sum((truth[:, None][..., mask] - xt[None][..., mask]) ** 2, axis=-1)
    nearest = xt[np.argmin(d, axis=1)]
    mse_nn = float(np.mean((truth[:, unknown] - nearest[:, unknown]) ** 2))
    clf = digit_classifier(x_train, y_train)
    labels = np.asarray(y_test[:n])
    acc = float(np.mean(predict(clf, samples) == labels))
    acc_truth = float(np.mean(predict(clf, truth) == labels))
    half_filled = truth.copy()
    half_filled[:, unknown] = mean_fill
    acc_mean = float(np.mean(predict(clf, half_filled) == labels))
    log(f"inpainting the lower half of {n} held-out digits ({args.sample_steps} PC "
        "steps):")  # fmt: skip
    log(f"  MSE of the unknown half: {mse:.4f}  (training-mean fill {mse_mean:.4f}, "
        f"nearest training digit by upper half {mse_nn:.4f})")
    log(f"  classifier accuracy on the completions: {acc:.3f}  (mean fill "
        f"{acc_mean:.3f}, ground truth {acc_truth:.3f})")
    log(f"  largest change to the observed half: {known_err:.2e}")

    obs = np.asarray(x_test[picks]).copy()
    obs[:, unknown] = 0.0  # unknown pixels drawn mid-grey
    save_panels(out / "inpaint_digits.png", [
        ("observation\n", obs, 1),
        (f"samples\n({k} per digit)", shown, k),
        ("ground truth\n", np.asarray(x_test[picks]), 1),
    ], title="Inpainting the lower half (sdegen.inpaint)")  # fmt: skip
    return {"mse": mse, "mse_mean_fill": mse_mean, "mse_nearest": mse_nn,
            "accuracy": acc, "known_max_abs_err": known_err}  # fmt: skip


if __name__ == "__main__":
    main()
