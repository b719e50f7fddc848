r"""Colorize grey digits with a score model of tinted colour digits.

A small colour data set is built from the embedded 8x8 digits: each digit, with
intensity $v = (x + 1)/2 \in [0, 1]$, is tinted by a colour $c \in [0, 1]^3$ drawn from
a palette of five, giving the RGB image $2 v c - 1$ (black background, coloured
strokes). The tint is a latent the grey image $g = \frac13\sum_k x_k$ only hints at
(through the brightness of the strokes, $\bar c\,v$), and the sampler must recover it.

Trains (or loads) a noise-prediction MLP on the colour digits (fresh random tints every
batch) under the VP SDE, then colours held-out grey digits with [`sdegen.colorize`][]:
a predictor-corrector sampler that, in the decoupled coordinates $u = Q x$ of
[`sdegen.decoupling_matrix`][], replaces the grey coordinate $u_0 = \sqrt3\,g$ by
$\alpha(t)\sqrt3\,g + \sigma(t) z$ after every update (Song et al. 2021, Appendix
I.3), and by $\sqrt3\,g$ at the end.

Writes `colorize_digits.png` (grey observation | samples | ground truth) and prints the
per-pixel error of the colour reconstruction against the truth (with the colourless
reconstruction, the grey value in every channel, as a baseline), the fraction of
samples whose tint is the true palette colour (chance 1/5), and the largest deviation
of the samples' channel mean from the observed grey image (zero).

    .venv/bin/python examples/colorize_digits.py          # a few minutes on 2 cores
    .venv/bin/python examples/colorize_digits.py --quick  # seconds
"""

from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from _common import (
    check_finite,
    digits_split,
    log,
    parser,
    resolve,
    save_panels,
    score_model,
    train_config,
    train_or_load,
)

import sdegen as sg


# Red, green, blue, yellow, magenta: distinct channel means, so the brightness of the
# strokes in the grey image says which tint it was.
PALETTE = np.array([
    [1.0, 0.2, 0.2],
    [0.3, 1.0, 0.3],
    [0.35, 0.55, 1.0],
    [1.0, 0.9, 0.25],
    [1.0, 0.45, 1.0],
])  # fmt: skip
PALETTE_NAMES = ("red", "green", "blue", "yellow", "magenta")

FULL = dict(steps=5000, sample_steps=500, width=512, num_eval=200, num_show=10,
            samples_per_digit=5)  # fmt: skip
QUICK = dict(steps=20, sample_steps=10, width=32, num_eval=8, num_show=3,
             samples_per_digit=2)  # fmt: skip


def tint(grey_digits, colour_index):
    r"""Colour digits `(n, 1, H, W)` in $[-1, 1]$ by palette entries `(n,)`:
    $2 v c - 1$ with $v = (x + 1)/2$; returns `(n, 3, H, W)`."""
    v = (grey_digits + 1) / 2
    c = jnp.asarray(PALETTE, grey_digits.dtype)[colour_index][:, :, None, None]
    return 2 * v * c - 1


def tint_of(images) -> np.ndarray:
    """The palette entry nearest to each colour image's chromaticity (the share of
    each channel in the total intensity of its strokes)."""
    v = np.clip((np.asarray(images, np.float64) + 1) / 2, 0, None)
    chroma = v.sum(axis=(2, 3))
    chroma = chroma / np.maximum(chroma.sum(axis=1, keepdims=True), 1e-12)
    pal = PALETTE / PALETTE.sum(axis=1, keepdims=True)
    return np.argmin(np.sum((chroma[:, None] - pal[None]) ** 2, axis=-1), axis=1)


@eqx.filter_jit
def _colorize_many(model, sde, keys, greys, num_steps):
    def one(key, grey):
        return sg.colorize(key, sde, model, grey, num_channels=3, num_steps=num_steps,
                           denoise=True)  # fmt: skip

    return jax.vmap(one)(keys, greys)


def main(argv=None):
    p = parser(__doc__.splitlines()[0], steps=FULL["steps"],
               sample_steps=FULL["sample_steps"])  # fmt: skip
    p.add_argument("--num-eval", type=int, default=None,
                   help="held-out digits in the metrics (default 200: all 179)")
    p.add_argument("--samples-per-digit", type=int, default=None,
                   help="colourings per digit in the figure (default 5)")
    args = resolve(p.parse_args(argv), FULL, QUICK)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (x_train, _), (x_test, y_test) = digits_split()
    shape = (3, *x_train.shape[2:])
    sde = sg.VPSDE()
    k_pal = len(PALETTE)

    def colour_digits(key, n):
        """`n` training digits with fresh random tints (a sampler `f(key, n)`)."""
        ki, kc = jr.split(key)
        idx = jr.randint(ki, (n,), 0, x_train.shape[0])
        return tint(x_train[idx], jr.randint(kc, (n,), 0, k_pal))

    def loss_fn(model, batch, key):
        return sg.dsm_loss(model, sde, batch, key)

    model = score_model(jr.key(args.seed), shape, sde, width=args.width)
    cfg = train_config(args, batch_size=128)
    model = train_or_load(model, loss_fn, colour_digits, cfg,
                          path=out / "colorize_digits_model.ckpt",
                          hparams={"model": "mlp-noise-vp-colour",
                                   "width": args.width,
                                   "palette": PALETTE.tolist()},
                          checkpoint=args.checkpoint, retrain=args.retrain)  # fmt: skip

    # Held-out digits with random tints: the metrics use one colouring of each of the
    # first `num_eval`, the figure `samples_per_digit` of one digit per class; one
    # batch, so the sampler compiles once.
    n = min(args.num_eval, len(x_test))
    tints = np.asarray(jr.randint(jr.key(args.seed + 3), (len(x_test),), 0, k_pal))
    colour_test = np.asarray(tint(x_test, tints))
    picks = [int(np.flatnonzero(np.asarray(y_test) == c)[0]) for c in range(10)]
    picks = np.asarray(picks[: args.num_show])
    k = args.samples_per_digit
    truth = np.concatenate([colour_test[:n], np.repeat(colour_test[picks], k, 0)])
    greys = truth.mean(axis=1)
    keys = jr.split(jr.key(args.seed + 1), len(greys))
    x = np.asarray(_colorize_many(model, sde, keys, jnp.asarray(greys, x_test.dtype),
                                  args.sample_steps))  # fmt: skip
    check_finite("colorize", x)
    samples, shown = x[:n], x[n:]
    err = samples - truth[:n]
    rmse = float(np.sqrt(np.mean(err**2)))
    mae = float(np.mean(np.abs(err)))
    grey_copy = np.repeat(greys[:n, None], 3, axis=1)
    rmse_grey = float(np.sqrt(np.mean((grey_copy - truth[:n]) ** 2)))
    mae_grey = float(np.mean(np.abs(grey_copy - truth[:n])))
    grey_err = float(np.max(np.abs(samples.mean(axis=1) - greys[:n])))
    found = tint_of(samples)
    acc = float(np.mean(found == tints[:n]))
    acc_truth = float(np.mean(tint_of(truth[:n]) == tints[:n]))
    log(f"colorizing {n} held-out grey digits ({args.sample_steps} PC steps):")
    log(f"  per-pixel error of the colour image: RMSE {rmse:.4f}, MAE {mae:.4f}  "
        f"(grey in every channel: RMSE {rmse_grey:.4f}, MAE {mae_grey:.4f})")
    log(f"  tint recovered (nearest palette colour): {acc:.3f}  (chance "
        f"{1 / k_pal:.3f}; the same rule on the true images {acc_truth:.3f})")
    counts = np.bincount(found, minlength=k_pal)
    log("  tints of the samples: " + ", ".join(
        f"{name} {c}" for name, c in zip(PALETTE_NAMES, counts)))  # fmt: skip
    log(f"  largest |channel mean - grey|: {grey_err:.2e}")

    save_panels(out / "colorize_digits.png", [
        ("observation\n(grey)", colour_test[picks].mean(axis=1, keepdims=True), 1),
        (f"samples\n({k} per digit)", shown, k),
        ("ground truth\n", colour_test[picks], 1),
    ], title="Colorization of tinted digits (sdegen.colorize)")  # fmt: skip
    return {"rmse": rmse, "rmse_grey": rmse_grey, "tint_accuracy": acc,
            "grey_max_abs_err": grey_err}  # fmt: skip


if __name__ == "__main__":
    main()
