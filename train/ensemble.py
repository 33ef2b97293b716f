"""Join trained checkpoints into an ensemble checkpoint (``mtl.ensemble``): the mean of their calibrated log-odds.

    python -m train.ensemble --out DIR MEMBER MEMBER [...] [--name NAME] [--description TEXT]
    python -m train.calibrate --data ROOT --split val --model DIR --target-fpr 0.003      # then fit its calibration

Each MEMBER is a checkpoint directory (``config.json`` + ``model.safetensors``), calibrated on its own validation
split beforehand (``train.calibrate``): its calibration sets how much its evidence weighs in the mean. The members are
copied into ``DIR/a``, ``DIR/b``, ...; the ensemble starts with the identity calibration (``p_fake`` = the sigmoid of
the mean log-odds) and threshold 0.5, so calibrate it before use. Unlike ``train.average``, which averages the weights
of one training trajectory into one network, this keeps every network and runs each on every face: the members can
come from unrelated runs, and inference costs their sum.
"""

from __future__ import annotations

import argparse
import string
import sys
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("members", nargs="+", help="checkpoint directories (two or more)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--name", help="model name stored in config.json (default: OUT's name)")
    p.add_argument("--description", default="")
    args = p.parse_args(argv)
    if len(args.members) < 2:
        p.error("name two member checkpoints or more")
    if len(args.members) > len(string.ascii_lowercase):
        p.error("at most 26 members")
    if args.out.exists() and any(args.out.iterdir()):
        p.error(f"{args.out} exists and is not empty")

    from mtl import load_model
    from mtl.ensemble import Ensemble

    members = []
    for spec in args.members:
        m = load_model(spec)
        if hasattr(m, "members"):
            p.error(f"{spec} is itself an ensemble: name its members instead")
        members.append(m)
    subs = list(string.ascii_lowercase[:len(members)])
    ens = Ensemble(members, subs, name=args.name or args.out.name, description=args.description)
    ens.save_pretrained(args.out)
    for sub, spec, m in zip(subs, args.members, members):
        print(f"{args.out / sub}: {spec} ({m.name}, calibration scale {m.calibration_scale:.4g}, bias "
              f"{m.calibration_bias:.4g})")
    print(f"wrote {args.out}/config.json; fit its calibration: python -m train.calibrate --data ROOT --split val "
          f"--model {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
