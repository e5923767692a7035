"""Batches: a packed split served as named Batch tuples, on the GPU or from host memory; padding and masks.

    Batch(gemma (B, T, D) float16 | None, landmarks (B, T, 162) float32 | None, mask (B, T) bool, labels, weight)

mask is True on real frames (left-aligned, padding after them); weight 0 marks rows that only pad a fixed-size batch.
"""
from typing import NamedTuple, Optional

import numpy as np
import torch

from hybrid_asl.clips import pad_clips
from hybrid_asl.packing import ARRAYS


class Batch(NamedTuple):
    gemma: Optional[torch.Tensor]      # (B, T, D) float16: the Gemma features, or None without that stream
    landmarks: Optional[torch.Tensor]  # (B, T, 162) float32 raw MediaPipe coordinates, or None
    mask: torch.Tensor                 # (B, T) bool, True on real frames
    labels: torch.Tensor               # (B,) int64 class indices
    weight: torch.Tensor               # (B,) float: 1 for a real clip, 0 for a row that only pads the batch


def frame_mask(lengths, num_frames):
    """(B,) real frames per clip -> (B, num_frames) bool, True on the first lengths[i] frames."""
    return torch.arange(num_frames, device=lengths.device)[None, :] < lengths[:, None]


def clips_batch(clips, num_frames, device):
    """Sampled clips [(gemma or None, landmarks or None)] (clips.sample_clip) -> one Batch on device, padded as a
    packed split is (prediction: no labels, every row real)."""
    gemma, landmarks, mask = pad_clips(clips, num_frames)
    return Batch(None if gemma is None else torch.from_numpy(gemma).to(device),
                 None if landmarks is None else torch.from_numpy(landmarks).to(device),
                 torch.from_numpy(mask).to(device), torch.zeros(len(clips), dtype=torch.int64, device=device),
                 torch.ones(len(clips), device=device))


def place_splits_on_device(splits, device, budget_gb):
    """Which packed splits to keep on the GPU: train first, then val and test, while they fit the budget."""
    on_device, left = {}, budget_gb * 1e9 if device.type == "cuda" else 0
    for name in ("train", "val", "test"):
        split = splits[name]
        size = sum(a.nbytes for a in (split.gemma, split.landmarks, split.lengths, split.labels) if a is not None)
        on_device[name] = size <= left
        left -= size if on_device[name] else 0
    return on_device


class BatchLoader:
    """Serves batches from a packed split: gathered on the GPU when the split lives there (on_device=True), else
    gathered from the memory-mapped arrays and copied (pinned, non-blocking) to the device.

    With fixed_size=True the last batch is padded to batch_size with weight-0 rows, so every step has the same shapes
    (what CUDA graphs need); padded rows sit at the end of the batch.
    """

    def __init__(self, split, batch_size, device, on_device=False, fixed_size=False, balanced=False):
        self.split, self.batch_size, self.device = split, batch_size, torch.device(device)
        self.fixed_size, self.on_device, self.balanced = fixed_size, on_device, balanced
        assert fixed_size or not on_device, "batches gathered on the device are fixed-size (one shape to replay)"
        self.num_frames = next(a.shape[1] for a in (split.gemma, split.landmarks) if a is not None)
        if on_device:
            self.tensors = {name: None if getattr(split, name) is None else
                            torch.from_numpy(np.array(getattr(split, name))).to(self.device)  # copy: maps are read-only
                            for name in ARRAYS}

    def __len__(self):
        return (len(self.split) + self.batch_size - 1) // self.batch_size

    def batch_indices(self, shuffle=False, seed=0):
        """Row indices of every batch, in order, and how many rows of each are real."""
        n = len(self.split)
        rng = np.random.default_rng(seed)
        if shuffle and self.balanced:
            # Class-balanced (--balanced_sampling): every class is drawn equally often in expectation; an epoch is
            # still n clips, drawn with replacement with probability 1 / (clips of its class).
            labels = np.asarray(self.split.labels)
            p = 1.0 / np.bincount(labels)[labels]
            order = rng.choice(n, size=n, replace=True, p=p / p.sum())
        else:
            order = rng.permutation(n) if shuffle else np.arange(n)
        batches = []
        for start in range(0, n, self.batch_size):
            # Sorted rows read sequentially from the memory map; the order inside a batch does not matter.
            index = np.sort(order[start:start + self.batch_size])
            real = len(index)
            if self.fixed_size and real < self.batch_size:
                # Repeat real rows so the padding is valid input; its weight of 0 removes it from loss and metrics.
                index = np.concatenate([index, order[np.arange(self.batch_size - real) % n]])
            batches.append((index, real))
        return batches

    def gather(self, index, real):
        if self.on_device:
            rows = {name: None if t is None else t.index_select(0, index) for name, t in self.tensors.items()}
        else:
            pin = self.device.type == "cuda"

            def take(name):
                a = getattr(self.split, name)
                if a is None:
                    return None
                t = torch.from_numpy(np.ascontiguousarray(a[index]))
                return t.pin_memory().to(self.device, non_blocking=True) if pin else t
            rows = {name: take(name) for name in ARRAYS}
        lengths = rows["lengths"]
        weight = (torch.arange(len(lengths), device=lengths.device) < real).float()
        return Batch(rows["gemma"], rows["landmarks"], frame_mask(lengths, self.num_frames), rows["labels"], weight)

    def plan(self, shuffle=False, seed=0):
        """What each step of an epoch consumes. A GPU-resident split yields (row index, real rows) as device
        tensors, gathered by `materialize` inside the step (so a CUDA graph can include the gather); a host split
        yields ready batches."""
        plan = self.batch_indices(shuffle, seed)
        if not self.on_device:
            for index, real in plan:
                yield self.gather(index, real)
            return
        if not plan:
            return
        # One host-to-device copy of the epoch's indices instead of one per batch (on-device batches are
        # fixed-size, so the indices stack).
        all_index = torch.from_numpy(np.stack([index for index, _ in plan])).to(self.device)
        all_real = torch.tensor([real for _, real in plan], device=self.device)
        for i in range(len(plan)):
            yield all_index[i], all_real[i]

    def materialize(self, step_input):
        return self.gather(*step_input) if self.on_device else step_input

    def batches(self, shuffle=False, seed=0):
        for step_input in self.plan(shuffle, seed):
            yield self.materialize(step_input)
