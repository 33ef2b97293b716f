"""PyTorch datasets for training and evaluation.

``ManifestDataset`` reads what ``train.build_dataset`` and ``train.prepare_ffpp`` write (``ROOT/manifest.csv`` with
columns image,mask,label,method,person,split). ``ForgeDataset`` makes the same samples on the fly from a folder of
real faces. Items are dicts:

    image  float32 3x256x256, RGB in [0,1] normalised with ImageNet mean/std
    mask   int64 256x256, 1 = manipulated (binarised at 0.5; zeros for reals)
    label  int64, 1 = real, 0 = fake (the paper's class indices)
    method int64, index in FAMILIES, -1 for reals or unknown families

Training augmentation is applied identically to reals and fakes (and geometrically to the mask), so that no
augmentation can become the label: horizontal flip, a small scale/shift of the crop, colour jitter, lost resolution,
blur, black margins, and a random JPEG re-compression (quality 40-95) or, with ``h264`` > 0, sometimes an H.264
round trip instead (what a face in a video goes through); with ``motion`` > 0, sometimes the smear of a face moving
during the exposure, over the whole crop or only where a talking face moves (``motion_blur``).
``PairedAugmentDataset`` gives a photo's real crop and its forgeries one and the same augmentation in an epoch, so
that they differ only by the manipulation.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import re
from pathlib import Path

import av
import cv2
import numpy as np
import torch

from mtl.constants import FACE_SIZE, FAMILIES
from mtl.preprocess import to_model_input

# OpenCV's thread pool does not survive a fork, and a loader worker is one process per core already: keep OpenCV
# serial for both datasets, so forked DataLoader workers can neither hang nor run a thread per core each
cv2.setNumThreads(1)

NO_TWIN = -1  # the "photo" of an item with no twins in the training set (a face forged on the fly)
_FAMILY_INDEX = {name: i for i, name in enumerate(FAMILIES)}
_BUILT = re.compile(r"^(?P<photo>.+)_(?P<k>\d+)_(?P<kind>[a-z]+)$")


def source_photo(row: dict) -> str:
    """The photo a crop of ``train.build_dataset`` was made from: its folder and ``<photo>`` in
    ``<photo>_<k>_<family>``, shared by the photo's real crop (k 0) and its forgeries; a crop named otherwise is its
    own source."""
    image = Path(row["image"])
    m = _BUILT.match(image.stem)
    return f"{image.parent}/{m['photo']}" if m else str(image)


@functools.lru_cache(maxsize=64)
def _resolved(root: str) -> Path:
    return Path(root).resolve()


def photo_id(root, row: dict) -> int:
    """A number for ``source_photo(row)`` under ``root``: equal for a photo's real crop and its forgeries, and (a
    62-bit hash) practically never for two photos, even across datasets joined in one training set."""
    key = f"{_resolved(str(root))}/{source_photo(row)}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 2


def family_pairs(rows: list[dict], family: str) -> list[dict]:
    """The forgeries of ``family`` among ``rows`` and the real crops of the photos they were made from
    (``source_photo``), in the rows' order: a training set where a real crop and its forgery differ only by that
    family's manipulation."""
    photos = {source_photo(r) for r in rows if r["label"] != "real" and r["method"] == family}
    return [r for r in rows if source_photo(r) in photos and (r["label"] == "real" or r["method"] == family)]


def read_manifest(root: str | Path, split: str | None = None) -> list[dict]:
    with open(Path(root) / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return [r for r in rows if split is None or r["split"] == split]


def scale_round_trip(rgb: np.ndarray, small: int, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """A square crop shrunk to ``small`` pixels and scaled back up: the look of a small face in a large frame."""
    size = rgb.shape[0]
    return cv2.resize(cv2.resize(rgb, (small, small), interpolation=cv2.INTER_AREA), (size, size),
                      interpolation=interpolation)


def jpeg_round_trip(rgb: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1]


def h264_round_trip(rgb: np.ndarray, crf: int, frames: int = 2) -> np.ndarray:
    """The crop through libx264 (yuv420p, preset veryfast) at constant-rate factor ``crf``: the last of a few frames
    that move into place (0.7 and 0.4 px per frame), so it comes back motion-predicted (a P-frame), at its own position.

    FaceForensics++ ships its videos at crf 23 ("c23") and 40 ("c40"); the app's clips come through such codecs too.
    """
    buf = io.BytesIO()
    h, w = rgb.shape[:2]
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": str(int(crf)), "preset": "veryfast", "threads": "1"}
        for k in reversed(range(frames)):
            shift = np.float32([[1, 0, 0.7 * k], [0, 1, 0.4 * k]])
            frame = cv2.warpAffine(rgb, shift, (w, h), borderMode=cv2.BORDER_REFLECT)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        out.mux(stream.encode())
    buf.seek(0)
    with av.open(buf) as c:
        decoded = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    return decoded[-1]


# Where a talking face moves most, as (centre, half-axes) in fractions of a face crop's side (crop_square's framing):
# the mouth and jaw, and the eyes and brows. Their motion smears only that part of a frame.
MOTION_REGIONS = {"mouth": ((0.5, 0.645), (0.165, 0.095)), "eyes": ((0.5, 0.42), (0.275, 0.08))}


def motion_kernel(length: int, angle: float) -> np.ndarray:
    """A line ``length`` pixels long at ``angle`` degrees (0 = horizontal), summing to 1: the path of a point that
    moves during the exposure."""
    k = np.zeros((length, length), np.float32)
    k[length // 2, :] = 1
    turn = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2), angle, 1.0)
    k = cv2.warpAffine(k, turn, (length, length), flags=cv2.INTER_LINEAR)
    return k / k.sum()


def motion_blur(rgb: np.ndarray, length: int, angle: float, region: str | None = None,
                rng: np.random.Generator | None = None) -> np.ndarray:
    """The crop smeared along a line of ``length`` pixels at ``angle`` degrees: over all of it (``region`` None, the
    head or camera moved), or inside a soft ellipse around a part of the face (``MOTION_REGIONS``: a talking mouth, a
    blink), the rest left sharp. With ``rng`` the ellipse is moved and sized a little at random.

    Video frames carry either, and a local smear can look like a re-rendered part of the face to a detector that never
    saw one on a real face: ``train.diagnose degradations`` measures it, ``--motion-blur`` trains with it. An even
    ``length`` puts the line half a pixel off the kernel's centre, so the smear also shifts the crop by up to half a
    pixel (training draws every length from 3 to 11).
    """
    smeared = cv2.filter2D(np.ascontiguousarray(rgb), -1, motion_kernel(int(length), float(angle)),
                           borderType=cv2.BORDER_REFLECT101)
    if region is None:
        return smeared
    size = rgb.shape[0]
    (cx, cy), (ax, ay) = MOTION_REGIONS[region]
    if rng is not None:
        cx, cy = cx + rng.uniform(-0.04, 0.04), cy + rng.uniform(-0.04, 0.04)
        grow = rng.uniform(0.8, 1.3)
        ax, ay = ax * grow, ay * grow
    alpha = np.zeros(rgb.shape[:2], np.float32)
    cv2.ellipse(alpha, (int(round(cx * size)), int(round(cy * size))),
                (max(int(round(ax * size)), 1), max(int(round(ay * size)), 1)), 0, 0, 360, 1.0, -1)
    alpha = cv2.GaussianBlur(alpha, (0, 0), max(size / 32, 1.0))[..., None]
    return np.clip(smeared * alpha + rgb * (1 - alpha) + 0.5, 0, 255).astype(np.uint8)


def random_motion_blur(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``motion_blur`` as training draws it: 3-11 pixels in any direction, over the whole crop, the mouth or the eyes
    (a third each)."""
    length, angle = int(rng.integers(3, 12)), rng.uniform(0, 180)
    region = [None, "mouth", "eyes"][int(rng.integers(3))]
    return motion_blur(rgb, length, angle, region, rng)


def augment_pair(rgb: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
                 h264: float = 0.0, video: bool = True, motion: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The same random geometry for image and mask; photometric changes on the image only.

    Besides the usual jitter it imitates what video frames do to a face crop, with the same odds for real and fake
    faces so that none of it can mark a class: lost resolution (a small face scaled up), blur, JPEG down to quality
    40 (or, with probability ``h264``, an H.264 round trip at crf 18-38 instead), and the black margin that
    ``crop_square`` leaves where a face's square runs past the frame's edge. With ``h264`` 0 no random number is
    drawn for it, so a seed gives the same augmentation as before the option existed. With probability ``motion``
    (likewise no draw at 0) the face is smeared as by motion during the exposure, whole or only the mouth or the eyes
    (``random_motion_blur``), before the losses of resolution and compression. With ``video`` False the
    video-like losses are left out (no lost resolution, no blur, no H.264) and the JPEG step keeps quality 70-95:
    geometry, colour jitter, the margins and a mild re-compression only, so that faint evidence (a self-blend's soft
    colour or sharpness change) survives in every training crop.
    """
    size = rgb.shape[0]
    if rng.random() < 0.5:
        rgb, mask = rgb[:, ::-1], mask[:, ::-1]
    scale = rng.uniform(0.92, 1.08)
    shift = rng.uniform(-0.04, 0.04, 2) * size
    matrix = cv2.getRotationMatrix2D((size / 2, size / 2), rng.uniform(-5, 5), scale)
    matrix[:, 2] += shift
    rgb = cv2.warpAffine(np.ascontiguousarray(rgb), matrix, (size, size), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REFLECT101)
    mask = cv2.warpAffine(np.ascontiguousarray(mask), matrix, (size, size), flags=cv2.INTER_NEAREST,
                          borderMode=cv2.BORDER_CONSTANT)
    img = rgb.astype(np.float32)
    img = img * rng.uniform(0.8, 1.2) + rng.uniform(-20, 20)  # contrast, brightness
    grey = img.mean(axis=2, keepdims=True)
    img = grey + (img - grey) * rng.uniform(0.7, 1.3)  # saturation
    rgb = np.clip(img, 0, 255).astype(np.uint8)
    if video and motion > 0 and rng.random() < motion:
        rgb = random_motion_blur(rgb, rng)
    if video and rng.random() < 0.3:  # a small face scaled up
        small = max(int(size * rng.uniform(0.3, 0.75)), 16)
        rgb = scale_round_trip(rgb, small, cv2.INTER_LINEAR if rng.random() < 0.5 else cv2.INTER_CUBIC)
    if video and rng.random() < 0.3:
        rgb = cv2.GaussianBlur(rgb, (0, 0), rng.uniform(0.3, 1.2))
    if video and h264 > 0 and rng.random() < h264:
        rgb = h264_round_trip(np.ascontiguousarray(rgb), int(rng.integers(18, 39)))
    elif rng.random() < 0.7:
        rgb = jpeg_round_trip(rgb, int(rng.integers(40 if video else 70, 96)))
    if rng.random() < 0.2:  # the face's square runs past one or two edges of the frame
        rgb, mask = rgb.copy(), mask.copy()
        for side in rng.choice(4, size=int(rng.integers(1, 3)), replace=False):
            w = int(size * rng.uniform(0.03, 0.2))
            region = [(slice(0, w), slice(None)), (slice(size - w, size), slice(None)),
                      (slice(None), slice(0, w)), (slice(None), slice(size - w, size))][side]
            rgb[region] = 0
            mask[region] = 0
    return rgb, mask


def fresh_augment_rng(seed: int, index: int) -> np.random.Generator:
    """Draws for one item's augmentation, fresh for every item and epoch (a loader worker's torch seed changes each
    epoch)."""
    return np.random.default_rng([seed, index, int(torch.randint(0, 2**31 - 1, ()).item())])


def _item(rgb: np.ndarray, mask: np.ndarray, label: int, method: int, photo: int = NO_TWIN) -> dict:
    return {
        "image": to_model_input([np.ascontiguousarray(rgb)])[0],
        "mask": torch.from_numpy((mask >= 128).astype(np.int64)),
        "label": torch.tensor(label, dtype=torch.int64),
        "method": torch.tensor(method, dtype=torch.int64),
        "photo": torch.tensor(photo, dtype=torch.int64),  # photo_id, shared with the crop's twins; NO_TWIN if none
    }


class ManifestDataset(torch.utils.data.Dataset):
    def __init__(self, root, split: str, augment: bool = False, seed: int = 0, rows: list[dict] | None = None,
                 h264: float = 0.0, video: bool = True, motion: float = 0.0):
        self.root = Path(root)
        self.h264 = h264
        self.motion = motion
        self.video = video  # augmentation: the video-like losses too (augment_pair)
        self.rows = rows if rows is not None else read_manifest(self.root, split)
        if not self.rows:
            raise ValueError(f"{self.root / 'manifest.csv'} has no samples in split {split!r}")
        self.augment = augment
        self.seed = seed
        self.epoch_rng = np.random.default_rng(seed)
        self.photos = [photo_id(self.root, row) for row in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def _read(self, row: dict) -> tuple[np.ndarray, np.ndarray]:
        bgr = cv2.imread(str(self.root / row["image"]), cv2.IMREAD_COLOR)
        if bgr is None:
            raise OSError(f"cannot read {self.root / row['image']}")
        rgb = bgr[:, :, ::-1]
        if rgb.shape[:2] != (FACE_SIZE, FACE_SIZE):
            rgb = cv2.resize(rgb, (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_AREA)
        if row["mask"]:
            mask = cv2.imread(str(self.root / row["mask"]), cv2.IMREAD_GRAYSCALE)
            if mask.shape != (FACE_SIZE, FACE_SIZE):
                mask = cv2.resize(mask, (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_NEAREST)
        else:
            mask = np.zeros((FACE_SIZE, FACE_SIZE), np.uint8)
        return rgb, mask

    def __getitem__(self, index: int) -> dict:
        row = self.rows[index]
        rgb, mask = self._read(row)
        if self.augment:
            rgb, mask = augment_pair(rgb, mask, self._augment_rng(index), h264=self.h264, video=self.video,
                                     motion=self.motion)
        label = 1 if row["label"] == "real" else 0
        method = _FAMILY_INDEX.get(row["method"], -1) if label == 0 else -1
        return _item(rgb, mask, label, method, self.photos[index])

    def _augment_rng(self, index: int) -> np.random.Generator:
        return fresh_augment_rng(self.seed, index)


class PairedAugmentDataset(ManifestDataset):
    """A ``ManifestDataset`` whose augmentation is drawn per source photo (``source_photo``) and epoch, not per item.

    A photo's real crop and its forgeries then get the same flip, geometry, colour jitter, blur and compression, so
    within a ``--by-person`` batch the pair differs only by the manipulation, as in Self-Blended Images (Shiohara and
    Yamasaki, CVPR 2022), where the blend is made from the already augmented source. With independent draws a
    brightness jitter of up to 20 grey levels dwarfs a self-blend's typical change of 4-8. A row repeated by
    ``--oversample`` draws its own augmentation for each copy after the first. ``set_epoch`` (called by the trainer,
    which then starts the loader's workers afresh each epoch) changes every draw.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.epoch = 0
        photos: dict[int, int] = {}
        seen: dict[str, int] = {}
        self.keys = []
        for row, key in zip(self.rows, self.photos):
            photo = photos.setdefault(key, len(photos))  # numbered in order of first appearance
            copy = seen[row["image"]] = seen.get(row["image"], -1) + 1
            self.keys.append((photo, copy))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _augment_rng(self, index: int) -> np.random.Generator:
        photo, copy = self.keys[index]
        return np.random.default_rng([self.seed, self.epoch, photo, copy])


class ForgeDataset(torch.utils.data.Dataset):
    """The samples ``train.build_dataset`` would write, made on the fly from a folder of real face photos.

    Item ``i`` is variant ``i % (K + 1)`` of photo ``i // (K + 1)`` (variant 0 the real crop, then K fakes with the
    families cycling), with the builder's photo selection, person splits, donors, seeds and JPEG steps: at epoch 0 an
    item equals the built one. ``set_epoch(n)`` draws fresh forgeries for each epoch. A photo without a usable face is
    replaced by the next one.

    Building the first item runs mediapipe; each DataLoader worker process creates its own models.
    """

    def __init__(self, faces, split: str = "train", augment: bool = False, fakes_per_real: int = 1, seed: int = 0,
                 val_frac: float = 0.1, test_frac: float = 0.1, limit: int | None = None, person_rule: str = "auto",
                 split_seed: int = 0, h264: float = 0.0, video: bool = True, motion: float = 0.0):
        from train.build_dataset import plan_jobs, select_photos

        # the split depends on split_seed only: a val set made with another forgery seed shares no person with train
        photos, people = select_photos(str(faces), limit, seed, val_frac, test_frac, person_rule, split_seed)
        jobs = plan_jobs(photos, people, fakes_per_real, seed, out="")
        self.jobs = [j for j in jobs if j.split == split]
        if not self.jobs:
            raise ValueError(f"no photos under {faces} fall in split {split!r}")
        self.per_photo = fakes_per_real + 1
        self.augment = augment
        self.h264 = h264
        self.motion = motion
        self.video = video
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.jobs) * self.per_photo

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _sample(self, index: int):
        from train.build_dataset import SAVE_QUALITY, make_samples

        k = index % self.per_photo
        seed = self.seed if self.epoch == 0 else self.seed + 1_000_003 * self.epoch
        for step in range(16):
            job = self.jobs[(index // self.per_photo + step) % len(self.jobs)]
            outcome = make_samples(job.photo.path, [job.variants[k]], seed, job.index, ks=[k])
            if not outcome.skipped and outcome.samples[0] is not None:
                sample = outcome.samples[0]
                # the builder stores crops as JPEG; make the same last step
                ok, buf = cv2.imencode(".jpg", sample.image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, SAVE_QUALITY])
                rgb = cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1]
                mask = (np.zeros(rgb.shape[:2], np.uint8) if sample.mask is None
                        else np.rint(sample.mask * 255).astype(np.uint8))
                return rgb, mask, sample.family
        raise RuntimeError(f"no usable face in 16 photos from item {index} on")

    def __getitem__(self, index: int) -> dict:
        rgb, mask, family = self._sample(index)
        if self.augment:
            rgb, mask = augment_pair(rgb, mask, fresh_augment_rng(self.seed, index), h264=self.h264,
                                     video=self.video, motion=self.motion)
        label = 1 if family is None else 0
        return _item(rgb, mask, label, _FAMILY_INDEX.get(family, -1) if family else -1)


class EpochBatches(torch.utils.data.Sampler):
    """Batches in an order that follows from the seed and the epoch alone (``_batches``), so that a run resumed
    mid-epoch replays that epoch's order and carries on after the batches it had done.

    ``set_epoch`` chooses the epoch; iterating has no side effect, since a DataLoader with workers iterates its
    sampler twice as it starts them (a sampler that moved on an epoch per iteration skipped its first one there).
    """

    epoch, skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Yield epoch ``epoch``'s order, less its first ``skip`` batches (a run resumed mid-epoch)."""
        self.epoch, self.skip = epoch, skip

    def __iter__(self):
        return iter(self._batches()[self.skip:])

    def whole_epoch(self, epoch: int) -> list[list[int]]:
        """Epoch ``epoch``'s batches, all of them whatever ``skip`` says: for a sampler built of others."""
        self.epoch = epoch
        return self._batches()

    def _batches(self) -> list[list[int]]:
        raise NotImplementedError


class PersonBatchSampler(EpochBatches):
    """Batches made of whole people: each batch holds the real photos of a few people *and* their forgeries.

    With random batches a small network first learns "a face is here" (masks cover faces) instead of what changed
    in a face; when a real face and its own forgeries sit in the same batch the only difference left to learn is
    the manipulation (the same idea as Self-Blended Images' paired batches). People are shuffled anew for each epoch.
    """

    def __init__(self, people: list[str], batch_size: int, seed: int = 0, drop_last: bool = True):
        groups: dict[str, list[int]] = {}
        for i, person in enumerate(people):
            groups.setdefault(person, []).append(i)
        self.groups = list(groups.values())
        self.batch_size, self.seed, self.drop_last = batch_size, seed, drop_last

    def _batches(self) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        batches, batch = [], []
        for g in rng.permutation(len(self.groups)):
            batch.extend(self.groups[g])
            while len(batch) >= self.batch_size:  # a person with more crops than a batch fills several
                batches.append(batch[: self.batch_size])
                batch = batch[self.batch_size:]
        if batch and not self.drop_last:
            batches.append(batch)
        return batches

    def __len__(self) -> int:
        """Batches in a whole epoch (a resumed epoch yields fewer)."""
        n = sum(len(g) for g in self.groups)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)


class InterleavedBatches(EpochBatches):
    """The batches of ``main`` with one batch of pairs after every ``every - 1`` of them (``every`` 2: every other
    batch), the pair batches taken from the samplers in ``pure`` in turn (one per family), the indices of each
    shifted by its ``offsets`` entry (its place in a ``ConcatDataset`` after the main set).

    ``turns`` gives each family its number of turns in a round (default one each: (2, 1) gives the first family two
    pair batches for each of the second's, in the order first, first, second).

    Each family's pairs run on as one endless stream across the main epochs, each of its passes reshuffled: the
    run's pair slots are numbered on from epoch to epoch, slot ``s`` going to the family whose turn it is in round
    ``s // sum(turns)`` and taking the next batch of its stream, so a family smaller than the whole set is cycled
    through in turn rather than its first batches seen over and over. The order still follows from the seed and the
    epoch alone, as a resumed run needs.
    """

    def __init__(self, main: EpochBatches, pure: list[EpochBatches], every: int, offsets: list[int],
                 turns: list[int] | None = None):
        if every < 2:
            raise ValueError("every must be 2 or more (every batch pure is a dataset of that family alone)")
        if not pure or len(pure) != len(offsets):
            raise ValueError("give one offset for each set of pairs, and at least one set")
        if any(len(p) == 0 for p in pure):
            raise ValueError("an interleaved set has fewer samples than one batch")
        turns = list(turns) if turns is not None else [1] * len(pure)
        if len(turns) != len(pure) or any(t < 1 for t in turns):
            raise ValueError("give each set of pairs a whole number of turns, 1 or more")
        self.main, self.pure, self.every, self.offsets = main, list(pure), every, list(offsets)
        self.round = [f for f, t in enumerate(turns) for _ in range(t)]  # slot s % len(round) -> its family

    def _family_of(self, slot: int) -> tuple[int, int]:
        """Slot ``slot``'s family and the place in that family's stream of the batch it takes."""
        rounds, at = divmod(slot, len(self.round))
        family = self.round[at]
        return family, rounds * self.round.count(family) + self.round[:at].count(family)

    def _pure_share(self, main_batches: int) -> int:
        return main_batches // (self.every - 1)

    def _batches(self) -> list[list[int]]:
        main = self.main.whole_epoch(self.epoch)
        wanted = self._pure_share(len(main))
        first = self.epoch * wanted  # this epoch's first pair slot, numbered across the run
        slots = [self._family_of(s) for s in range(first, first + wanted)]
        streams = []
        for f, (sampler, offset) in enumerate(zip(self.pure, self.offsets)):
            mine = [place for family, place in slots if family == f]  # consecutive places in family f's stream
            taken = _stream(sampler, mine[0], len(mine)) if mine else []
            streams.append(iter([[i + offset for i in b] for b in taken]))
        out = []
        for k, batch in enumerate(main, 1):
            out.append(batch)
            if k % (self.every - 1) == 0:
                out.append(next(streams[slots[k // (self.every - 1) - 1][0]]))
        return out

    def __len__(self) -> int:
        """Batches in a whole epoch (a resumed epoch yields fewer)."""
        return len(self.main) + self._pure_share(len(self.main))


def _stream(sampler: EpochBatches, first: int, count: int) -> list[list[int]]:
    """Batches ``first`` to ``first + count - 1`` of ``sampler``'s epochs laid end to end (an endless stream)."""
    per_pass, out = len(sampler), []
    for n in range(first // per_pass, (first + count - 1) // per_pass + 1):  # the passes it reaches into
        out.extend(sampler.whole_epoch(n))
    return out[first % per_pass:first % per_pass + count]


class ShuffledBatches(EpochBatches):
    """Random batches, the last incomplete one dropped. Under DDP, ``indices`` (a ``DistributedSampler``) gives
    this process's share of the epoch in place of the whole-set shuffle."""

    def __init__(self, n: int, batch_size: int, seed: int = 0, indices=None):
        self.n, self.batch_size, self.seed, self.indices = n, batch_size, seed, indices

    def _batches(self) -> list[list[int]]:
        if self.indices is not None:
            self.indices.set_epoch(self.epoch)
            order = list(self.indices)
        else:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n).tolist()
        size = self.batch_size
        return [order[i:i + size] for i in range(0, len(order) - size + 1, size)]

    def __len__(self) -> int:
        """Batches in a whole epoch (a resumed epoch yields fewer)."""
        return (len(self.indices) if self.indices is not None else self.n) // self.batch_size
