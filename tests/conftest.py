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


@pytest.fixture(scope="session")
def donor(astronaut):
    """A second face: the astronaut mirrored, warmed and slightly rescaled (a different 'person' geometrically),
    with its landmarks."""
    import cv2
    import numpy as np

    from mtl.faces import face_landmarks

    d = astronaut[:, ::-1].astype(np.float32)
    d = np.clip(d * np.array([1.1, 0.95, 0.85]) + 10, 0, 255).astype(np.uint8)
    d = cv2.resize(d, (460, 460))
    d = np.ascontiguousarray(cv2.copyMakeBorder(d, 30, 22, 10, 42, cv2.BORDER_REFLECT))
    return d, face_landmarks(d)[0]


@pytest.fixture(scope="session")
def landmarks(astronaut):
    """The astronaut's face landmarks (mediapipe's 468-point mesh, pixel coordinates)."""
    from mtl.faces import face_landmarks

    return face_landmarks(astronaut)[0]


@pytest.fixture
def fast_path_in_fp32(monkeypatch):
    """``model.predict(x, "auto")`` as it runs on a CPU without bf16, whatever this CPU has; the model's cached
    fast path is dropped before and after, so no other test meets the fp32 one."""
    used = []

    def networks(model):  # an ensemble's members each cache their own
        return list(getattr(model, "members", [model]))

    def run(model, x):
        monkeypatch.setattr("mtl.fastpath.cpu_has_bf16", lambda: False)
        for network in networks(model):
            network._fast = None
        used.append(model)
        return model.predict(x, "auto")

    yield run
    for model in used:
        for network in networks(model):
            network._fast = None
