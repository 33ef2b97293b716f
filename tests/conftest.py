"""Shared fixtures: a real face that needs no download, and the project's photo folders when present."""

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"


@pytest.fixture(scope="session")
def astronaut():
    """scikit-image's astronaut (Eileen Collins): a real 512x512 RGB portrait shipped with the library."""
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip("needs ../shared (project data), absent on this machine")
    return SHARED.resolve()


@pytest.fixture(scope="session")
def random_checkpoint():
    """Writes an untrained, seeded ClassNSeg named "tiny-random" to a folder and returns it loaded from there."""

    def write(folder: Path):
        import torch

        from mtl import load_model
        from mtl.model import ClassNSeg

        torch.manual_seed(0)
        ClassNSeg(name="tiny-random").save_pretrained(folder)
        return load_model(folder)

    return write
