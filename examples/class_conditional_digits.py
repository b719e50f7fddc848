r"""Class-conditional digits with both kinds of guidance.

Trains (or loads) one label-conditional noise-prediction MLP on the embedded 8x8 digits
under the VP SDE, with label dropout: each training label is replaced by the null
label $K = 10$ with probability `--p-uncond` (0.1), so the same network gives the
conditional score $s(t, x, y)$ and the unconditional one $s(t, x, \varnothing)$
(Ho & Salimans 2021). Then, for every class $y$, it samples with

- **classifier guidance** (Song et al. 2021, §5; Dhariwal & Nichol 2021): the
  unconditional branch plus $\gamma\,\nabla_x \log p_t(y \mid x)$ of a time-dependent
  classifier [`sdegen.TimeClassifier`][] trained on noised digits
  ([`sdegen.classifier_guidance`][]);
- **classifier-free guidance** ([`sdegen.classifier_free_guidance`][]):
  $(1 + w)\,s(t, x, y) - w\,s(t, x, \varnothing)$ at $w = 0$ (plain conditional
  sampling) and $w > 0$.

Writes `class_conditional_digits.png` (requested class | samples of each method |
real digits of the class: observation | samples | ground truth) and prints, for each method, the accuracy of a
logistic-regression digit classifier (trained on the real training digits) at
recognising the requested class in the samples.

    .venv/bin/python examples/class_conditional_digits.py          # a few minutes
    .venv/bin/python examples/class_conditional_digits.py --quick  # seconds
"""

from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from _common import (
    cached,
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


NUM_CLASSES = 10
FULL = dict(steps=6000, sample_steps=500, width=512, classifier_steps=3000,
            per_class=20, show=6, scale=1.0, strong_scale=4.0, w=2.0)  # fmt: skip
QUICK = dict(steps=20, sample_steps=10, width=32, classifier_steps=2, per_class=1,
             show=1, scale=1.0, strong_scale=4.0, w=2.0)  # fmt: skip


class CondScore(eqx.Module):
    """`cond_score(t, x, label)` of a label-conditional score model (`label=None`:
    the null label, i.e. the unconditional branch)."""

    model: eqx.Module

    def __call__(self, t, x, label):
        if label is None:
            return self.model(t, x)
        return self.model(t, x, label=label)


@eqx.filter_jit
def _sample(kind, model, classifier, sde, keys, labels, strength, num_steps):
    """One sample per `(key, label)`: `kind` "cg" (classifier guidance with scale
    `strength`) or "cfg" (classifier-free guidance with weight `strength`)."""

    def one(key, label):
        if kind == "cg":
            score = sg.classifier_guidance(model, classifier, label, strength)
        else:
            score = sg.classifier_free_guidance(CondScore(model), label, strength)
        return sg.sample_sde(key, sde, score, (1, 8, 8), "euler_maruyama",
                             num_steps=num_steps, denoise=True)  # fmt: skip

    return jax.vmap(one)(keys, labels)


def main(argv=None):
    p = parser(__doc__.splitlines()[0], steps=FULL["steps"],
               sample_steps=FULL["sample_steps"])  # fmt: skip
    p.add_argument("--classifier-steps", type=int, default=None,
                   help="training steps of the time-dependent classifier (default "
                        "3000)")  # fmt: skip
    p.add_argument("--p-uncond", type=float, default=0.1,
                   help="label-dropout probability (default 0.1)")
    p.add_argument("--per-class", type=int, default=None,
                   help="samples per class and method in the metrics (default 20)")
    p.add_argument("--show", type=int, default=None,
                   help="samples per class and method in the figure (default 6)")
    p.add_argument("--scale", type=float, default=None,
                   help="classifier-guidance scale gamma (default 1: exact Bayes)")
    p.add_argument("--strong-scale", type=float, default=None,
                   help="a second, larger classifier-guidance scale (default 4)")
    p.add_argument("--w", type=float, default=None,
                   help="classifier-free guidance weight w > 0 (default 2)")
    args = resolve(p.parse_args(argv), FULL, QUICK)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (x_train, y_train), (x_test, y_test) = digits_split()
    shape = tuple(x_train.shape[1:])
    sde = sg.VPSDE()
    p_uncond = float(args.p_uncond)

    def loss_fn(model, batch, key):
        x, labels = batch
        k_drop, k_loss = jr.split(key)
        drop = jr.bernoulli(k_drop, p_uncond, labels.shape)
        labels = jnp.where(drop, NUM_CLASSES, labels)  # the null label
        return sg.dsm_loss(model, sde, x, k_loss, labels=labels)

    model = score_model(jr.key(args.seed), shape, sde, width=args.width,
                        num_classes=NUM_CLASSES)  # fmt: skip
    cfg = train_config(args, batch_size=128)
    model = train_or_load(model, loss_fn, (x_train, y_train), cfg,
                          path=out / "class_conditional_digits_model.ckpt",
                          hparams={"model": "mlp-noise-vp-cond", "width": args.width,
                                   "p_uncond": p_uncond},
                          checkpoint=args.checkpoint, retrain=args.retrain)  # fmt: skip

    clf0 = sg.TimeClassifier(shape, NUM_CLASSES, width=64, depth=2,
                             key=jr.key(args.seed + 10))  # fmt: skip

    def fit_classifier():
        log(f"training the time-dependent classifier for {args.classifier_steps} "
            "steps")  # fmt: skip
        clf, losses = sg.train_classifier(jr.key(args.seed + 11), clf0, sde, x_train,
                                          y_train, num_steps=args.classifier_steps,
                                          batch_size=128)  # fmt: skip
        tail = np.asarray(losses)[-max(1, len(losses) // 10) :]
        log(f"classifier cross-entropy at the end: {float(np.mean(tail)):.3f} nats")
        return clf

    time_clf = cached(out / "class_conditional_digits_classifier.ckpt", clf0,
                      {"classifier_steps": args.classifier_steps, "seed": args.seed},
                      fit_classifier, retrain=args.retrain)  # fmt: skip
    t_small = jnp.asarray(1e-3, x_test.dtype)
    clean_acc = float(np.mean(np.argmax(np.asarray(jax.vmap(
        lambda x: time_clf(t_small, x))(x_test)), axis=1) == np.asarray(y_test)))  # fmt: skip
    log(f"time-dependent classifier accuracy on clean held-out digits: {clean_acc:.3f}")

    ref = digit_classifier(x_train, y_train)
    ref_acc = float(np.mean(predict(ref, x_test) == np.asarray(y_test)))
    log(f"reference (logistic-regression) classifier, held-out accuracy: {ref_acc:.3f}")

    m = max(args.per_class, args.show)
    labels = jnp.repeat(jnp.arange(NUM_CLASSES), m)
    keys = jr.split(jr.key(args.seed + 1), len(labels))  # same noise for every method
    methods = [
        (f"classifier guidance, gamma={args.scale:g}", "cg", args.scale),
        (f"classifier guidance, gamma={args.strong_scale:g}", "cg", args.strong_scale),
        ("classifier-free, w=0", "cfg", 0.0),
        (f"classifier-free, w={args.w:g}", "cfg", args.w),
    ]
    dtype = x_train.dtype
    results, samples = {}, {}
    log(f"accuracy on the requested class ({m} samples per class, "
        f"{args.sample_steps} Euler-Maruyama steps; chance 0.1):")  # fmt: skip
    for name, kind, strength in methods:
        x = np.asarray(_sample(kind, model, time_clf, sde, keys, labels,
                               jnp.asarray(strength, dtype), args.sample_steps))  # fmt: skip
        check_finite(name, x)
        acc = float(np.mean(predict(ref, x) == np.asarray(labels)))
        per_class = [float(np.mean(predict(ref, x[labels == c]) == c))
                     for c in range(NUM_CLASSES)]  # fmt: skip
        log(f"  {name:32s} {acc:.3f}   per class "
            + " ".join(f"{a:.2f}" for a in per_class))
        results[name] = acc
        samples[name] = x.reshape(NUM_CLASSES, m, *shape)

    # Figure: one row per class.
    k = args.show
    obs = -np.ones((NUM_CLASSES, *shape))
    real = np.stack([np.asarray(x_test)[np.asarray(y_test) == c][:k]
                     for c in range(NUM_CLASSES)])  # fmt: skip
    shown = [(methods[0][0], f"classifier guidance\n$\\gamma$ = {args.scale:g}"),
             (methods[1][0], f"classifier guidance\n$\\gamma$ = "
                             f"{args.strong_scale:g}"),
             (methods[2][0], "classifier-free\n$w$ = 0"),
             (methods[3][0], f"classifier-free\n$w$ = {args.w:g}")]  # fmt: skip
    panels = [(title, samples[name][:, :k].reshape(-1, *shape), k)
              for name, title in shown]  # fmt: skip
    save_panels(out / "class_conditional_digits.png",
                [("class\n", obs, 1, [str(c) for c in range(NUM_CLASSES)]), *panels,
                 ("ground truth\n(real digits)", real.reshape(-1, *shape), k)],
                title="Class-conditional digits: classifier and classifier-free "
                      "guidance")  # fmt: skip
    return results


if __name__ == "__main__":
    main()
