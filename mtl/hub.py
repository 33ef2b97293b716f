"""Loading checkpoints by name: the shipped default, a local directory, or a Hugging Face Hub id.

A checkpoint is a directory (or Hub repository) with ``config.json`` (the ClassNSeg constructor arguments) and
``model.safetensors``; or an ensemble (``mtl.ensemble``), whose ``config.json`` names sub-directories that are each
such a checkpoint. Loading never unpickles: safetensors only, with strict key matching.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from .constants import CONFIG_NAME, WEIGHTS_NAME
from .ensemble import Ensemble, member_names
from .model import ClassNSeg

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CHECKPOINT = PROJECT_ROOT / "checkpoints" / "lite0-forge"

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")


class ModelLoadError(RuntimeError):
    """A checkpoint could not be found or read; the message says what to do instead."""


def parse_hub_id(spec: str) -> tuple[str, str | None]:
    """'owner/name@revision' -> ('owner/name', 'revision'); revision None when absent."""
    if not _HUB_ID.match(spec):
        raise ModelLoadError(f"{spec!r} is neither an existing checkpoint directory nor a Hub id "
                             "'owner/name[@revision]'")
    repo_id, _, revision = spec.partition("@")
    return repo_id, revision or None


def _ensemble_members(config_path: Path) -> list | None:
    """The member sub-directories an ensemble's ``config.json`` names; None for a single network's."""
    try:
        config = json.loads(Path(config_path).read_text())
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"cannot read {str(config_path)!r} as JSON ({e})") from e
    if not isinstance(config, dict):
        raise ModelLoadError(f"{str(config_path)!r} does not hold a JSON object")
    try:
        return member_names(config)
    except ValueError as e:
        raise ModelLoadError(f"{str(config_path)!r}: {e}") from e


def _load_ensemble(config_path: Path, member_dir, device: str):
    try:
        return Ensemble.from_config(json.loads(Path(config_path).read_text()), member_dir, map_location=device)
    except ValueError as e:
        raise ModelLoadError(f"ensemble checkpoint {str(config_path)!r}: {e}") from e


def _check_local_dir(path: Path) -> Path:
    if path.is_dir() and (path / CONFIG_NAME).is_file() and _ensemble_members(path / CONFIG_NAME) is not None:
        return path
    missing = [n for n in (CONFIG_NAME, WEIGHTS_NAME) if not (path / n).is_file()]
    if not path.is_dir() or missing:
        what = "is not a directory" if not path.is_dir() else f"lacks {', '.join(missing)}"
        raise ModelLoadError(f"checkpoint directory {str(path)!r} {what}; "
                             f"a checkpoint holds {CONFIG_NAME} and {WEIGHTS_NAME}")
    return path


def resolve_weights(model_id: str, **download_kwargs) -> str:
    """The local path of ``model.safetensors`` for a directory or Hub repository (downloaded and cached)."""
    if os.path.isdir(model_id):
        return str(_check_local_dir(Path(model_id)) / WEIGHTS_NAME)
    from huggingface_hub import hf_hub_download

    return hf_hub_download(repo_id=model_id, filename=WEIGHTS_NAME, **download_kwargs)


def load_model(spec: str | os.PathLike | None = None, device: str = "cpu"):
    """A ClassNSeg (or an ``mtl.ensemble.Ensemble`` of them) in eval mode from ``spec``.

    ``None`` is the shipped default checkpoint; otherwise a local checkpoint directory, or a Hub id
    ``owner/name`` / ``owner/name@revision`` (downloaded once into the Hugging Face cache; ``HF_ENDPOINT`` and
    ``HF_HUB_OFFLINE`` are honoured).
    """
    path = Path(spec) if spec is not None else DEFAULT_CHECKPOINT
    if spec is None or path.exists():
        _check_local_dir(path)
        members = _ensemble_members(path / CONFIG_NAME)
        if members is not None:
            for sub in members:
                _check_local_dir(path / sub)
            model = _load_ensemble(path / CONFIG_NAME, lambda sub: path / sub, device)
            model.source = str(path)
            return model
        model = ClassNSeg.from_pretrained(str(path), map_location=device)
        model.source = str(path)
        return model
    repo_id, revision = parse_hub_id(str(spec))
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    from huggingface_hub import hf_hub_download

    try:
        # the config first and explicitly: the mixin would fall back to default arguments without one
        config_path = Path(hf_hub_download(repo_id=repo_id, filename=CONFIG_NAME, revision=revision))
        members = _ensemble_members(config_path)
        if members is not None:  # an ensemble: each member's two files, beside the config in the same snapshot
            for sub in members:
                for name in (CONFIG_NAME, WEIGHTS_NAME):
                    hf_hub_download(repo_id=repo_id, filename=f"{sub}/{name}", revision=revision)
            model = _load_ensemble(config_path, lambda sub: config_path.parent / sub, device)
        else:
            model = ClassNSeg.from_pretrained(repo_id, revision=revision, map_location=device)
    except RevisionNotFoundError as e:
        raise ModelLoadError(f"the Hub repository {repo_id!r} has no revision {revision!r}") from e
    except RepositoryNotFoundError as e:
        raise ModelLoadError(
            f"no Hub repository {repo_id!r} (or it is private: log in with `hf auth login`); "
            f"to use a checkpoint on disk, pass its directory (with {CONFIG_NAME} and {WEIGHTS_NAME}) instead"
        ) from e
    except LocalEntryNotFoundError as e:  # a subclass of EntryNotFoundError: the network, not the repository
        raise _unreachable(spec, repo_id, e) from e
    except EntryNotFoundError as e:
        raise ModelLoadError(f"the Hub repository {repo_id!r} holds no {WEIGHTS_NAME} or {CONFIG_NAME}") from e
    except (HfHubHTTPError, OSError) as e:
        raise _unreachable(spec, repo_id, e) from e
    model.source = str(spec)
    return model.to(device)


def _unreachable(spec, repo_id: str, e: Exception) -> ModelLoadError:
    return ModelLoadError(
        f"could not download model {str(spec)!r} from the Hugging Face Hub ({type(e).__name__}: {e}). "
        f"Without network, download it elsewhere (`hf download {repo_id}`) and pass the local directory "
        f"instead, e.g. --model ./my-checkpoint"
    )

