"""Datasets, the group samplers (balanced, natural ratio, fresh subset) and the padding collate function."""

from __future__ import annotations

import abc
import math
import os

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from faap import GROUPS
from faap.data.coco import GroupSplit
from faap.errors import DataError


class GenderDetection(Dataset):
    """Images of one or both groups of a split with DETR targets.

    Item: ``(image, target)`` where ``image`` is a normalised 3 x H x W tensor and
    ``target`` holds ``boxes`` (cx, cy, w, h normalised by the transformed image size, as
    DETR's criterion expects), ``class_labels`` (the detector's class indices), ``image_id``,
    ``orig_size`` and ``size`` (H, W), and ``group`` (0 male, 1 female).
    """

    def __init__(self, groups: dict[str, GroupSplit], transform, category_to_label: dict[int, int] | None = None):
        self.transform = transform
        self.category_to_label = category_to_label
        self.items = []  # (GroupSplit, image dict)
        self.group_index = {}  # group name -> list of item positions
        for name in GROUPS[::-1]:  # female first, then male
            if name not in groups:
                continue
            gs = groups[name]
            self.group_index[name] = list(range(len(self.items), len(self.items) + len(gs.images)))
            self.items += [(gs, im) for im in gs.images]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        gs, im = self.items[i]
        try:
            with Image.open(gs.path(im)) as f:
                image = f.convert("RGB")
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise DataError(f"cannot decode image {gs.path(im)} ({type(e).__name__}: {e})") from None
        anns = [a for a in gs.anns_by_image[im["id"]] if not a.get("iscrowd", 0)]
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        cats = [a["category_id"] for a in anns]
        labels = [self.category_to_label.get(c, -1) for c in cats] if self.category_to_label else cats
        img, t = self.transform(image, {"boxes": boxes, "labels": torch.tensor(labels, dtype=torch.int64)})
        h, w = img.shape[-2:]
        b = t["boxes"]
        keep = t["labels"] >= 0  # categories the detector does not know are not its targets
        b = b[keep]
        cxcywh = torch.stack([(b[:, 0] + b[:, 2]) / 2 / w, (b[:, 1] + b[:, 3]) / 2 / h,
                              (b[:, 2] - b[:, 0]) / w, (b[:, 3] - b[:, 1]) / h], -1).reshape(-1, 4)
        target = {"boxes": cxcywh, "class_labels": t["labels"][keep], "image_id": im["id"],
                  "orig_size": (im["height"], im["width"]), "size": (h, w),
                  "group": GROUPS.index(gs.group)}
        return img, target


class GroupSampler(Sampler, abc.ABC):
    """The training sampler's shared part: a seeded draw per epoch (:meth:`set_epoch`), shared
    across ranks like ``DistributedSampler`` (rank ``r`` takes every ``world_size``-th sample; the
    draw is padded so every rank gets as many). Subclasses say what one epoch's draw is.

    ``cap`` limits each group's pool; the subclasses say whether that is one fixed, seeded subset
    for the whole run or a fresh one each epoch. ``samples_per_epoch`` (0: the mode's own length)
    sets the epoch's length.
    """

    mode = ""
    fixed_cap = True
    """Whether ``cap`` draws one fixed subset per group at construction (else: the subclass draws)."""

    def __init__(self, group_index: dict[str, list[int]], seed: int, cap: int = 0,
                 samples_per_epoch: int = 0, rank: int = 0, world_size: int = 1):
        g = torch.Generator().manual_seed(seed)
        self.pools, self.cap = [], cap
        for name in ("female", "male"):
            pool = torch.tensor(group_index[name])
            if self.fixed_cap and cap and cap < len(pool):
                pool = pool[torch.randperm(len(pool), generator=g)[:cap]]
            self.pools.append(pool)
        self.total = samples_per_epoch or self.natural_length()
        self.seed, self.epoch, self.rank, self.world_size = seed, 0, rank, world_size

    @abc.abstractmethod
    def natural_length(self) -> int:
        """Samples in an epoch when ``samples_per_epoch`` is 0."""

    @abc.abstractmethod
    def draw(self, g: torch.Generator) -> torch.Tensor:
        """This epoch's ``self.total`` dataset indices, drawn from ``g`` only."""

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def __len__(self):
        return math.ceil(self.total / self.world_size)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1000003 + self.epoch)
        out = self.draw(g)
        pad = len(self) * self.world_size - self.total  # every rank gets as many samples (like DistributedSampler)
        out = torch.cat([out, out[:pad]])
        return iter(out[self.rank::self.world_size].tolist())

    def _without_replacement(self, g: torch.Generator, one_pass) -> torch.Tensor:
        """``self.total`` indices from passes ``one_pass(g)`` (each without replacement), concatenated
        until long enough: a ``samples_per_epoch`` beyond one pass starts a new pass, never repeats within one."""
        parts, n = [], 0
        while n < self.total:
            parts.append(one_pass(g))
            if not len(parts[-1]):
                raise ValueError(f"sampler '{self.mode}' has no images to draw")
            n += len(parts[-1])
        return torch.cat(parts)[:self.total]


class BalancedGroupSampler(GroupSampler):
    """Draws each group with probability 1/2, with replacement, as the original trainer did.

    An epoch has ``2 * max(n_f, n_m)`` samples, where each group's pool is optionally capped at
    ``cap`` images (one fixed, seeded subset for the whole run).
    """

    mode = "balanced"

    def natural_length(self) -> int:
        return 2 * max(len(p) for p in self.pools)

    def draw(self, g):
        which = torch.randint(0, 2, (self.total,), generator=g)
        out = torch.empty(self.total, dtype=torch.long)
        for k, pool in enumerate(self.pools):
            sel = which == k
            out[sel] = pool[torch.randint(0, len(pool), (int(sel.sum()),), generator=g)]
        return out


class NaturalSampler(GroupSampler):
    """The groups in their natural ratio: each epoch a shuffle of every image of both pools (each
    optionally a fixed ``cap`` subset), once each; the originals' ``balance_genders=False``
    (``RandomSampler`` over both groups)."""

    mode = "natural"

    def natural_length(self) -> int:
        return sum(len(p) for p in self.pools)

    def draw(self, g):
        both = torch.cat(self.pools)
        return self._without_replacement(g, lambda g: both[torch.randperm(len(both), generator=g)])


class FreshSubsetSampler(GroupSampler):
    """The 5th's ``BalancedSubsetSampler``: each epoch a fresh random subset of ``cap`` images per
    group (all of a smaller group), without replacement, shuffled together."""

    mode = "fresh_subset"
    fixed_cap = False

    def natural_length(self) -> int:
        return sum(min(self.cap, len(p)) for p in self.pools)

    def draw(self, g):
        def one_pass(g):
            both = torch.cat([p[torch.randperm(len(p), generator=g)[:self.cap]] for p in self.pools])
            return both[torch.randperm(len(both), generator=g)]
        return self._without_replacement(g, one_pass)


SAMPLERS = {cls.mode: cls for cls in (BalancedGroupSampler, NaturalSampler, FreshSubsetSampler)}
"""Training samplers by the config's ``sampler`` value."""


def collate(batch):
    """Pad images to the largest H, W of the batch; ``pixel_mask`` is 1 on real pixels."""
    images, targets = zip(*batch)
    h = max(i.shape[1] for i in images)
    w = max(i.shape[2] for i in images)
    x = images[0].new_zeros(len(images), 3, h, w)
    mask = torch.zeros(len(images), h, w, dtype=torch.long)
    for k, img in enumerate(images):
        x[k, :, : img.shape[1], : img.shape[2]] = img
        mask[k, : img.shape[1], : img.shape[2]] = 1
    groups = torch.tensor([t["group"] for t in targets])
    return {"pixel_values": x, "pixel_mask": mask, "groups": groups, "targets": list(targets)}


MAX_AUTO_WORKERS = 8
"""The originals ran 6-8 DataLoader workers per GPU."""


def loader_workers(num_workers: int, device) -> int:
    """Worker processes for config ``num_workers`` (-1: from the machine). On CUDA: the CPU cores per visible
    GPU less one, at most :data:`MAX_AUTO_WORKERS`, so decoding keeps up with the GPU; on the CPU none, since
    workers compete with the compute threads (on 2 cores oversubscription made steps up to 50x slower)."""
    if num_workers >= 0:
        return num_workers
    if torch.device(device).type != "cuda":
        return 0
    per_gpu = (os.cpu_count() or 1) // max(1, torch.cuda.device_count())
    return max(1, min(MAX_AUTO_WORKERS, per_gpu - 1))


def make_loader(dataset, batch_size: int, sampler=None, num_workers: int = 0, shuffle=False, seed: int = 0,
                device="cpu"):
    """A seeded loader; ``num_workers`` -1 chooses from the machine (:func:`loader_workers`), and batches are
    pinned in page-locked memory when they go to a GPU."""
    g = torch.Generator().manual_seed(seed)
    workers = loader_workers(num_workers, device)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=shuffle if sampler is None else False,
                      num_workers=workers, collate_fn=collate, generator=g, pin_memory=torch.device(device).type == "cuda",
                      persistent_workers=workers > 0, worker_init_fn=_seed_worker)


def _seed_worker(worker_id):
    import random

    import numpy as np

    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)
