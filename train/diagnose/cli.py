"""``python -m train.diagnose ANALYSIS ...``: runs one analysis and prints its table (see the package's text)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import train.diagnose as package
from train.diagnose.degradation import DEGRADATIONS, degradations, format_degradations
from train.diagnose.ensembles import ensemble, format_ensemble
from train.diagnose.probe import format_probes, probes
from train.diagnose.readout import format_readouts, readouts
from train.diagnose.scale import SCALES, at_scales
from train.diagnose.selfblend import format_selfblend, selfblend_ingredients
from train.diagnose.video_alarms import DEFAULT_TPRS, format_tradeoff, tradeoff
from train.diagnose.pixel_change import by_visibility, format_visibility
from train.evaluate import open_split, write_scores


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m train.diagnose", description=package.__doc__.split("\n\n")[0])
    p.add_argument("analysis",
                   choices=["degradations", "visibility", "selfblend", "tradeoff", "ensemble", "readout", "probe",
                            "scale"])
    p.add_argument("--data", type=Path, required=True, help="a dataset root with manifest.csv")
    p.add_argument("--split", default="val")
    p.add_argument("--model", action="append", required=True,
                   help="checkpoint directory or Hub id (ensemble: repeat it, one per model)")
    p.add_argument("--reference-split", default="val", help="ensemble: the split that standardizes each model")
    p.add_argument("--limit", type=int, default=None, help="a seeded random subset of this many rows")
    p.add_argument("--fit-split", default="train", help="probe: the split its regressions are fitted on")
    p.add_argument("--fit-limit", type=int, default=None, help="probe: a seeded random subset of the fit split")
    p.add_argument("--scale", type=float, action="append",
                   help=f"scale: times the trained face size to resize to (repeatable; default {SCALES})")
    p.add_argument("--only", action="append", choices=list(DEGRADATIONS), help="degradations: run only these")
    p.add_argument("--precision", choices=["fp32", "bf16"], default=None,
                   help="default: bf16, except tradeoff, selfblend and ensemble (fp32, as train.evaluate)")
    p.add_argument("--videos", nargs="+", metavar="DIR_OR_FILE", help="tradeoff: real videos")
    p.add_argument("--every", type=int, default=10, help="tradeoff: analyse every k-th frame")
    p.add_argument("--tpr", type=float, action="append", help="tradeoff: detection rates to match (repeatable)")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--scores", type=Path, metavar="CSV",
                   help="degradations: every crop's p_fake, one column per degradation, as train.evaluate --scores "
                        "writes them (python -m train.compare CSV --base none: each degradation's AUC cost, paired)")
    p.add_argument("--name", metavar="NAME",
                   help="degradations --scores: name the columns 'NAME: degradation', so that two checkpoints' "
                        "files compare by name (train.compare A.csv B.csv --base 'A: none' --model 'B: none')")
    args = p.parse_args(argv)
    if args.scores and args.analysis != "degradations":
        p.error("--scores goes with degradations")
    if args.name and not args.scores:
        p.error("--name names the columns of --scores")
    if args.analysis == "tradeoff" and not args.videos:
        p.error("tradeoff needs --videos")
    if args.analysis != "ensemble" and len(args.model) > 1:
        p.error(f"{args.analysis} takes one --model; only ensemble takes several")
    if args.analysis == "ensemble" and len(args.model) < 2:
        p.error("ensemble needs at least two --model")

    from mtl import load_model

    models = [load_model(m).eval() for m in args.model]
    model = models[0]
    data = open_split(args.data, args.split, limit=args.limit)
    print(f"{len(models)} models on {args.data} ({args.split}, {len(data)} crops)" if args.analysis == "ensemble" else
          f"{args.model[0]} on {args.data} ({args.split}, {len(data)} crops), threshold {model.threshold:.3f}")
    if args.analysis == "ensemble":
        reference = open_split(args.data, args.reference_split, limit=args.limit)
        result = ensemble(models, args.model, data, reference, args.precision or "fp32")
        print(format_ensemble(result))
    elif args.analysis == "tradeoff":
        result = tradeoff(model, data, args.videos, args.every, args.tpr or DEFAULT_TPRS, args.precision or "fp32")
        print(format_tradeoff(result))
    elif args.analysis == "selfblend":
        result = selfblend_ingredients(model, data, args.precision or "fp32")
        print(format_selfblend(result))
    elif args.analysis == "readout":
        result = readouts(model, data)
        print(format_readouts(result))
    elif args.analysis == "scale":
        result = at_scales(model, data, args.scale or SCALES)
        print(format_readouts(result))
    elif args.analysis == "probe":
        result = probes(model, open_split(args.data, args.fit_split, limit=args.fit_limit), data)
        print(format_probes(result))
    elif args.analysis == "degradations":
        result = degradations(model, data, args.only, args.precision or "bf16", keep_scores=bool(args.scores))
        print(format_degradations(result))
        if args.scores:
            prefix = f"{args.name}: " if args.name else ""
            write_scores(args.scores, data.rows, [{"model": prefix + r["degradation"], "p_fake": r.pop("p_fake")}
                                                   for r in result])
            print(f"wrote {args.scores}")
    else:
        result = by_visibility(model, data, args.precision or "bf16")
        print(format_visibility(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=float))
