"""mtl: detect and segment manipulated faces (ClassNSeg, Nguyen et al., BTAS 2019)."""

from .constants import FAMILIES, FAMILY_DISPLAY
from .ensemble import Ensemble
from .hub import DEFAULT_CHECKPOINT, ModelLoadError, load_model
from .model import ClassNSeg, Prediction

__all__ = ["ClassNSeg", "Ensemble", "Prediction", "load_model", "ModelLoadError", "DEFAULT_CHECKPOINT", "FAMILIES",
           "FAMILY_DISPLAY"]
__version__ = "0.1.0"
