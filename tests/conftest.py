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
