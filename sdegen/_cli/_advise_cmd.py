"""`sdegen advise`: measure every sampler by name on a trained run's model, at several
budgets of score evaluations, and recommend the cheapest that reaches a target sample
quality ([`sdegen.advise`][]); writes `advise.json` and `advise.md` in the run folder."""

import argparse
from typing import Any

import jax.random as jr

import sdegen as sg

from .._runs._checkpoint import atomic_write_json
from ._data import reference_pool
from ._errors import CLIError, flag_names
from ._report import say
from ._run import load_run, prepare_out
from ._sample_cmd import held_out_data


def cmd_advise(args: argparse.Namespace) -> dict[str, Any]:
    out = prepare_out(args.out, writer=False)
    run = load_run(out)
    data = held_out_data(run.cfg, int(run.cfg["train"]["seed"]))
    if data is None:
        raise CLIError("--out: the run's data set cannot be loaded, so there is no data "
                       "to measure the samples against.")  # fmt: skip
    solvers = args.solvers or sg.DEFAULT_SOLVERS
    for name in solvers:
        if sg.SOLVERS.get(name) is None:
            raise CLIError(f"--solvers: unknown solver {name!r} (see `sdegen solvers`).")
    pool, what = reference_pool(data)
    quick = getattr(args, "quick", False)
    with flag_names({"nfes": "--nfe", "solvers": "--solvers"}):
        advice = sg.advise(jr.key(args.seed), run.sde, run.model, run.to_model(pool),
                           solvers=solvers, nfes=args.nfe,
                           num_samples=args.num_samples, target=args.target,
                           transform=run.to_data, progress=not args.no_progress,
                           quick=quick, reference_name=what)  # fmt: skip
    result = {"target": advice.target, "floor": advice.floor, "rows": advice.rows,
              "recommended": advice.recommended, "reference": what,
              "summary": advice.summary()}  # fmt: skip
    if sg.is_main_process():
        atomic_write_json(out / "advise.json", result)
        (out / "advise.md").write_text(advice.table() + "\n\n" + advice.summary() + "\n")
        print(advice.table())
        say(advice.summary())
        say(f"wrote {out / 'advise.json'} and {out / 'advise.md'}")
    return result
