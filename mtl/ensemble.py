"""Several detectors scoring each face together: the mean of their calibrated log-odds decides.

Two networks trained apart make different mistakes, so the mean of their evidence ranks faces better than either
(the shipped default's card measures it). An ensemble checkpoint is a directory whose ``config.json`` names its
members, each a checkpoint in a sub-directory of its own (``config.json`` + ``model.safetensors``)::

    lite0-forge/
        config.json          {"members": ["a", "b"], "calibration_scale": ..., "calibration_bias": ...,
                              "threshold": ..., "name": ..., "description": ...}
        a/config.json  a/model.safetensors
        b/config.json  b/model.safetensors

Each member keeps its own calibration (``p_i = sigmoid(s_i * margin_i + b_i)``); the ensemble's statistic is the
mean of the members' log-odds ``z = mean_i(s_i * margin_i + b_i)``, and its own calibration maps that to
``p_fake = sigmoid(scale * z + bias)``, fitted on a validation split by ``train.calibrate`` like a single network's.
The mask and the method guess are the means of the members', each member decoding the half the *ensemble's*
verdict names (the fake half of every face judged manipulated), as the paper decodes the winning half. With torch on
one thread (the app's default) the members run side by side on threads of their own, so an ensemble of two costs
about the wall time of one where a second core is free.

``python -m train.ensemble --out DIR MEMBER MEMBER [...]`` writes one from trained checkpoints.
"""

from __future__ import annotations

import json
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import nn

from .constants import CONFIG_NAME
from .model import ClassNSeg, PlattCalibration, Prediction


def member_names(config: dict) -> list[str] | None:
    """The member sub-directories an ensemble's ``config.json`` names (None for a single network's); ValueError
    unless they are two or more plain names (no path separators, no ``..``), checked before anything is read."""
    names = config.get("members")
    if names is None:
        return None
    if (not isinstance(names, list) or len(names) < 2
            or not all(isinstance(n, str) and re.fullmatch(r"\w[\w.-]*", n) and ".." not in n for n in names)):
        raise ValueError(f"an ensemble's 'members' must list two sub-directory names or more, not {names!r}")
    return names


_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_lock = threading.Lock()


def _member_pool(n: int) -> ThreadPoolExecutor | None:
    """Threads to run the members side by side, or None to run them in turn.

    With torch on one intra-op thread (the app's default, ``MTL_TORCH_THREADS``) a member leaves the other cores idle,
    and torch releases the GIL inside its kernels, so members on threads of their own run at once. With more torch
    threads than that, or one core, they would only contend: in turn then."""
    global _pool, _pool_size
    if n < 2 or torch.get_num_threads() != 1 or (os.cpu_count() or 1) < 2:
        return None
    with _pool_lock:
        if _pool_size < n:
            # the smaller pool is not shut down: a caller in another thread may hold it still and submit to it; the
            # pool only grows, so what is left idle is bounded by the largest ensembles' sizes
            _pool, _pool_size = ThreadPoolExecutor(max_workers=n, thread_name_prefix="mtl-ensemble"), n
        return _pool


def _in_inference_mode(fn):
    """``fn`` under inference mode in whatever thread runs it (the mode is thread-local)."""
    def run(*args):
        with torch.inference_mode():
            return fn(*args)
    return run


class Ensemble(nn.Module, PlattCalibration):
    """Members scoring together; ``predict`` returns what ``ClassNSeg.predict`` does."""

    def __init__(self, members: list[ClassNSeg], member_dirs: list[str] | None = None, calibration_scale: float = 1.0,
                 calibration_bias: float = 0.0, threshold: float = 0.5, name: str = "ensemble",
                 description: str = ""):
        super().__init__()
        if len(members) < 2:
            raise ValueError("an ensemble needs two members or more")
        self.members = nn.ModuleList(members)
        self.member_dirs = list(member_dirs or [f"member-{i}" for i in range(len(members))])
        if len(self.member_dirs) != len(members) or len(set(self.member_dirs)) != len(members):
            raise ValueError("one distinct sub-directory name per member")
        self.set_calibration(calibration_scale, calibration_bias, threshold)
        self.name = name
        self.description = description
        # the method guess averages the heads' probabilities: all members need one, or none is used
        self._method_head = all(m.method_head is not None for m in members)

    # -- what the tools and the app read ---------------------------------------------------------------------------
    @property
    def encoder_name(self) -> str:
        return " + ".join(m.encoder_name for m in self.members)

    @property
    def test_time_flip(self) -> bool:
        return False

    @property
    def config(self) -> dict:
        return {"members": self.member_dirs, "calibration_scale": self.calibration_scale,
                "calibration_bias": self.calibration_bias, "threshold": self.threshold, "name": self.name,
                "description": self.description, "method_head": self._method_head}

    def calibrate_margin(self, margin: torch.Tensor) -> torch.Tensor:
        """p_fake from the (B,) mean of the members' log-odds."""
        return torch.sigmoid(self.calibrated_log_odds(margin))

    # -- saving and loading ----------------------------------------------------------------------------------------
    def save_pretrained(self, save_directory) -> None:
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        for sub, member in zip(self.member_dirs, self.members):
            member.save_pretrained(out / sub)
            (out / sub / "README.md").unlink(missing_ok=True)  # the mixin's generic card: the ensemble's card is above
        (out / CONFIG_NAME).write_text(json.dumps(self.config, indent=2, sort_keys=True) + "\n")

    def push_to_hub(self, repo_id: str, *, private: bool | None = None, token: str | None = None,
                    commit_message: str = "Upload an ensemble checkpoint"):
        """Publish the ensemble (its config and every member's folder) as one Hub repository, which
        ``load_model("owner/name")`` reads back."""
        import tempfile

        from huggingface_hub import HfApi

        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp)
            return api.upload_folder(repo_id=repo_id, folder_path=tmp, commit_message=commit_message)

    @classmethod
    def from_config(cls, config: dict, member_dir, map_location: str = "cpu") -> "Ensemble":
        """``config`` is the ensemble's ``config.json``; ``member_dir(sub)`` the local directory of member ``sub``."""
        subs = member_names(config)
        if subs is None:
            raise ValueError("this config names no members: not an ensemble")
        members = [ClassNSeg.from_pretrained(str(member_dir(s)), map_location=map_location) for s in subs]
        keep = {k: config[k] for k in ("calibration_scale", "calibration_bias", "threshold", "name", "description")
                if k in config}
        return cls(members, subs, **keep).eval()

    # -- inference -------------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def predict(self, x: torch.Tensor, precision: str = "auto") -> Prediction:
        """As ``ClassNSeg.predict``; ``activations`` are the members' mean (a_fake, a_real), ``margin`` the mean of
        their log-odds."""
        if self.training:
            self.eval()
        pool = _member_pool(len(self.members))

        def each(fn, *columns):
            if pool is None:
                return [fn(*args) for args in zip(*columns)]
            return list(pool.map(_in_inference_mode(fn), *columns))

        encoded = each(lambda m: m.encode_views(x, precision), self.members)
        log_odds = torch.stack([m.log_odds(a) for m, (_, _, a) in zip(self.members, encoded)])
        margin = log_odds.mean(dim=0).float()
        p_fake = self.calibrate_margin(margin)
        is_fake = p_fake > self.threshold
        keep = (~is_fake).long()
        decoded = each(lambda m, e: m.decode_views(e[0], e[1], keep, precision), self.members, encoded)
        masks = [mask for mask, _ in decoded]
        method_probs = [torch.softmax(logits, dim=1) for _, logits in decoded] if self._method_head else []
        activations = torch.stack([a for _, _, a in encoded]).mean(dim=0).float()
        return Prediction(p_fake.float(), is_fake, activations, torch.stack(masks).mean(dim=0),
                          torch.stack(method_probs).mean(dim=0) if self._method_head else None, margin)
