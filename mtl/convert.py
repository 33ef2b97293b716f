"""Convert the authors' released ClassNSeg checkpoints (encoder_N.pt + decoder_N.pt) to this project's format.

    python -m mtl.convert --encoder ENC.pt --decoder DEC.pt --out DIR

Their files are plain state dicts; ``torch.load(weights_only=True)`` reads them without running any pickled code.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from .model import ClassNSeg

# the authors' module names -> ours (their reconstruction branch is called `decoder`)
KEY_MAP = (
    ("encoder.", "encoder.layers."),
    ("shared.", "decoder.shared."),
    ("segmenter.", "decoder.segmenter."),
    ("decoder.", "decoder.reconstructor."),
)


def _rename(state: dict, prefixes: tuple[tuple[str, str], ...]) -> dict:
    renamed = {}
    for key, value in state.items():
        for old, new in prefixes:
            if key.startswith(old):
                renamed[new + key[len(old):]] = value
                break
        else:
            raise KeyError(f"unexpected key {key!r} in the authors' checkpoint")
    return renamed


def convert_authors_checkpoint(encoder_path, decoder_path, name: str = "classnseg-authors",
                               description: str = "") -> ClassNSeg:
    encoder_state = torch.load(encoder_path, map_location="cpu", weights_only=True)
    decoder_state = torch.load(decoder_path, map_location="cpu", weights_only=True)
    state = _rename(encoder_state, KEY_MAP[:1]) | _rename(decoder_state, KEY_MAP[1:])
    model = ClassNSeg(encoder="classnseg", latent_channels=128, name=name,
                      description=description
                      or f"converted from {Path(encoder_path).name} + {Path(decoder_path).name}")
    model.load_state_dict(state, strict=True)
    return model.eval()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", required=True, type=Path)
    parser.add_argument("--decoder", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--name", default="classnseg-authors")
    args = parser.parse_args(argv)
    model = convert_authors_checkpoint(args.encoder, args.decoder, name=args.name)
    model.save_pretrained(args.out)
    print(f"wrote {args.out} ({sum(p.numel() for p in model.parameters()):,} parameters)")


if __name__ == "__main__":
    main()
