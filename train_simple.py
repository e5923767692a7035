"""
Train a word-level ASL recognizer on WLASL from frozen Gemma 3 visual features and MediaPipe landmarks.

    python train_simple.py --demo                                   # ~15 s on the bundled demo data (CPU)
    python train_simple.py --subset nslt_100.json --use_class_weights --warmup_epochs 5 --epochs 50 --verbose
    python train_simple.py --subset nslt_1000.json --use_class_weights --warmup_epochs 10 --epochs 100 \\
        --batch_size 32 --verbose
    python train_simple.py --resume runs/nslt_1000-20261124-120000/last.pt   # continue a stopped run

Data layout (README, 'WLASL data layout'): <data_dir>/nslt_*.json, <data_dir>/gemma_features/{id}_gemma.npy (T, D),
<data_dir>/landmarks/{id}_landmarks.npy (T, 162). Each run directory gets best.pt, last.pt, args.json,
label_mapping.json, summary.csv (one row per epoch) and metrics.json (val and test of the best-on-val checkpoint).
"""
import argparse
import contextlib
import copy
import csv
import io
import json
import math
import pickle
import re
import shlex
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

import plots
from augment import add_augment_args, augment_batch, augment_config_from_args
from hybrid_asl_model import FullHybridASLModel
from hybrid_asl_model_simple import FUSION_TYPES, MODALITIES, SimpleHybridASLModel
from landmark_features import channel_statistics, landmark_feature_dim, make_landmark_features
from safe_io import (DataError, RunLock, Terminated, atomic_write, atomic_write_text, available_memory_bytes,
                     check_output_path, exit_code, float_range, int_range, make_folder, not_a_regular_file, read_text,
                     remove_stale_temporaries, require_regular_file, run_cli, write_json)
from wlasl_data import BatchLoader, build_label_mapping, load_glosses, load_split, load_splits

ROOT = Path(__file__).resolve().parent
CHECKPOINT_FORMAT = "hybrid-asl-trainer/1"
DEMO_SETTINGS = dict(data_dir=str(ROOT / "data" / "demo"), subset="nslt_demo.json", hidden_dim=128, num_heads=4,
                     epochs=30, batch_size=16, warmup_epochs=3, lr=1e-3, dropout=0.3, use_class_weights=True)
# A model built with these settings only accepts checkpoints built with the same ones.
# The learning-rate schedule and its steps live in the checkpoint: a resumed run cannot change them.
SCHEDULE_KEYS = ("lr", "warmup_epochs", "min_lr_ratio", "batch_size", "weight_decay")
MODEL_SHAPE_KEYS = ("model", "modality", "fusion_type", "hidden_dim", "num_layers", "num_heads", "num_frames",
                    "no_landmark_norm", "legacy_pos_encoding")


# ----------------------------------------------------------------------------------------------------------------
# The seed design's fixes, as small functions that tests call directly

def compute_class_weights(labels, num_classes, smoothing=1.0):
    """Inverse-frequency class weights: 1 / (count + smoothing), normalized to mean 1, clipped to [0.1, 10].

    Smoothing keeps a class with no training clip finite; clipping stops a 5-clip class from dominating the loss.
    """
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)[:num_classes]
    weights = 1.0 / (counts + smoothing)
    weights = weights / weights.mean()
    return torch.tensor(np.clip(weights, 0.1, 10.0), dtype=torch.float32)


def get_cosine_schedule_with_warmup(optimizer, warmup_epochs, total_epochs, steps_per_epoch, min_lr_ratio=0.0):
    """Linear warmup over warmup_epochs, then cosine decay to min_lr_ratio * lr; call .step() after every batch."""
    total_steps = max(1, total_epochs * steps_per_epoch)
    warmup_steps = min(warmup_epochs * steps_per_epoch, total_steps)

    def lr_factor(step):
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)


def verify_feature_dimensions(features_dir, expected_dim):
    """Returns the visual feature width found in features_dir (or expected_dim if there is nothing to read).

    Reads only .npy headers. Warns when the width differs from expected_dim, and names files that disagree with
    the majority: those clips will be skipped by the loader.
    """
    features_dir = Path(features_dir)
    widths = {}
    for path in sorted(features_dir.glob("*_gemma.npy")):
        if not_a_regular_file(path):  # never open a FIFO or device: reading it could block for ever
            continue
        try:
            shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
        except Exception:
            continue  # unreadable files are reported, by name, when the split is packed
        widths[path.name] = shape[-1] if len(shape) == 2 else None
    found = [w for w in widths.values() if w]
    if not found:
        return expected_dim
    detected = max(set(found), key=found.count)
    odd = [name for name, w in widths.items() if w != detected]
    if odd:
        print(f"warning: {len(odd)} feature files in {features_dir} are not {detected}-wide and will be skipped: "
              + ", ".join(odd[:5]) + (" ..." if len(odd) > 5 else ""))
    if expected_dim is not None and detected != expected_dim:
        print(f"warning: feature dimension mismatch: --gemma_feature_dim {expected_dim} but the files in "
              f"{features_dir} are {detected}-wide; continuing with {detected}")
    return detected


def read_extraction_dim(features_dir):
    """feature_dim recorded by extract_gemma_features.py, or None."""
    try:
        return int(json.loads(read_text(Path(features_dir) / "extraction_metadata.json", "metadata"))["feature_dim"])
    except (DataError, ValueError, KeyError, TypeError):
        return None


# ----------------------------------------------------------------------------------------------------------------
# Command line

# Every numeric flag has a range: a value outside it is an argparse error naming the flag, before any work.
positive_int = int_range(1)
non_negative_int = int_range(0)
probability = float_range(0.0, 1.0, high_open=True)   # dropout, label smoothing, EMA decay
fraction = float_range(0.0, 1.0)
SEED_RANGE = (0, 2**32 - 1)  # what numpy and torch accept


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--data_dir", default="data/wlasl", help="folder with the split files and class list")
    g.add_argument("--subset", default="nslt_100.json", help="split file, in --data_dir or a path")
    g.add_argument("--gemma_features_dir", default=None, help="{video_id}_gemma.npy files (default <data_dir>/gemma_features)")
    g.add_argument("--landmarks_dir", default=None, help="{video_id}_landmarks.npy files (default <data_dir>/landmarks)")
    g.add_argument("--modality", default="hybrid", choices=MODALITIES,
                   help="hybrid: both streams; landmarks or gemma: one stream, the other's files are not needed")
    g.add_argument("--num_frames", type=int_range(1, 4096), default=16, help="frames per clip after uniform sampling")
    g.add_argument("--gemma_feature_dim", type=int_range(1, 65536), default=2560,
                   help="visual feature width (2560 Gemma 3 projector, 1152 vision tower); detected from the files")
    g.add_argument("--cache_dir", default=None, help="packed-feature cache (default <data_dir>/.cache)")
    g.add_argument("--no_cache", action="store_true", help="pack the data in memory only, write no cache")
    g.add_argument("--demo", action="store_true", help="train on the bundled demo data with CPU-sized settings")

    g = p.add_argument_group("model")
    g.add_argument("--model", default="simple", choices=("simple", "full"),
                   help="simple: one encoder per stream, fused per clip; full: per-frame cross-attention fusion")
    g.add_argument("--fusion_type", default="concat", choices=FUSION_TYPES, help="how the simple model fuses streams")
    g.add_argument("--hidden_dim", type=int_range(1, 8192), default=512, help="model width")
    g.add_argument("--num_layers", type=int_range(1, 64), default=2, help="transformer layers per encoder")
    g.add_argument("--num_heads", type=int_range(1, 256), default=8, help="attention heads")
    g.add_argument("--dropout", type=probability, default=0.5, help="dropout in the fusion and classifier")
    g.add_argument("--encoder_dropout", type=probability, default=0.1, help="dropout inside the transformers")
    g.add_argument("--drop_path", type=probability, default=0.1, help="stochastic depth rate of the top layer")
    g.add_argument("--no_landmark_standardize", action="store_true",
                   help="do not standardize the normalized landmark channels with the training split's mean and std "
                        "(raw coordinates, --no_landmark_norm, are never standardized)")
    g.add_argument("--legacy_pos_encoding", action="store_true",
                   help="learned/random positional encoding of old checkpoints instead of sinusoidal")

    g = p.add_argument_group("optimization")
    g.add_argument("--epochs", type=int_range(1, 100000), default=50, help="training epochs")
    g.add_argument("--batch_size", type=int_range(1, 65536), default=32, help="clips per step")
    g.add_argument("--lr", type=float_range(0.0, 10.0, low_open=True), default=3e-4, help="peak learning rate (AdamW)")
    g.add_argument("--weight_decay", type=float_range(0.0, 100.0), default=0.05, help="AdamW weight decay")
    g.add_argument("--warmup_epochs", type=int_range(0, 100000), default=5, help="linear warmup epochs, then cosine")
    g.add_argument("--min_lr_ratio", type=fraction, default=0.01, help="final learning rate as a fraction of --lr")
    g.add_argument("--grad_clip", type=float_range(0.0, 1e6, low_open=True), default=1.0, help="max gradient norm")
    g.add_argument("--label_smoothing", type=probability, default=0.1, help="label smoothing of the loss")
    g.add_argument("--use_class_weights", dest="use_class_weights", action="store_true", default=False,
                   help="weight the loss by inverse class frequency (recommended for nslt_1000)")
    g.add_argument("--no_class_weights", dest="use_class_weights", action="store_false",
                   help="plain loss (overrides --use_class_weights)")
    g.add_argument("--ema", action="store_true", help="evaluate and save an exponential moving average of weights")
    g.add_argument("--ema_decay", type=probability, default=0.999,
                   help="EMA decay per step (warmed up as (1+n)/(10+n) over the first steps)")

    add_augment_args(p)

    g = p.add_argument_group("run")
    g.add_argument("--output_dir", default=None, help="run folder (default runs/<subset>-<timestamp>)")
    g.add_argument("--resume", default=None, help="continue the run saved in this last.pt")
    g.add_argument("--overwrite", action="store_true", help="train into an --output_dir that already holds a run")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    g.add_argument("--seed", type=int_range(*SEED_RANGE), default=42, help="random seed (same seed + data + CPU = same metrics)")
    g.add_argument("--gpu_cache_gb", type=float_range(0.0, 1e4), default=1.25,
                   help="GPU memory for keeping packed splits on the GPU (train first); 0 keeps them in host memory")
    g.add_argument("--no_cuda_graphs", action="store_true", help="run CUDA steps eagerly instead of graph replay")
    g.add_argument("--no_compile", action="store_true",
                   help="on CUDA, do not torch.compile the forward pass before graph capture (compiling fuses the "
                        "many small kernels of augmentation, normalization and the model; it costs ~1 minute once)")
    g.add_argument("--tensorboard", action="store_true",
                   help="also log to <output_dir>/tensorboard (scalars per epoch, lr per step); needs tensorboard")
    g.add_argument("--verbose", action="store_true", help="more detail in the log")
    return p


def explicit_flags(parser, argv):
    """Names of the flags given on the command line (used to let them override --demo and --resume)."""
    quiet = argparse.ArgumentParser(add_help=False)
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            kwargs = dict(dest=action.dest, default=argparse.SUPPRESS)
            if action.nargs == 0:
                kwargs["action"] = "store_const"
                kwargs["const"] = action.const
            quiet.add_argument(*action.option_strings, **kwargs)
    known, _ = quiet.parse_known_args(argv)
    return set(vars(known))


def resolve_device(parser, name):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        parser.error(f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        parser.error(f"--device {name}: no such CUDA device here; use --device cpu (or auto)")
    if device.type not in ("cpu", "cuda"):
        parser.error(f"--device {name}: only cpu and cuda are supported")
    return device


# ----------------------------------------------------------------------------------------------------------------
# Model, inputs, evaluation

def data_paths(args, base="."):
    """(data_dir, split file, gemma dir, landmarks dir, cache dir or None) from the data flags, relative paths taken
    from `base` (evaluate.py passes the folder training ran in)."""
    base = Path(base)
    data_dir = base / args.data_dir
    split_path = base / args.subset if (base / args.subset).is_file() else data_dir / args.subset
    gemma_dir = base / args.gemma_features_dir if args.gemma_features_dir else data_dir / "gemma_features"
    landmarks_dir = base / args.landmarks_dir if args.landmarks_dir else data_dir / "landmarks"
    cache_dir = None if args.no_cache else base / args.cache_dir if args.cache_dir else data_dir / ".cache"
    return data_dir, split_path, gemma_dir, landmarks_dir, cache_dir


def place_splits_on_device(splits, device, budget_gb):
    """Which packed splits to keep on the GPU: train first, then val and test, while they fit the budget."""
    on_device, left = {}, budget_gb * 1e9 if device.type == "cuda" else 0
    for name in ("train", "val", "test"):
        split = splits[name]
        size = sum(a.nbytes for a in (split.gemma, split.landmarks, split.lengths, split.labels) if a is not None)
        on_device[name] = size <= left
        left -= size if on_device[name] else 0
    return on_device


def uses_bf16(device):
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 0)


def amp_context(device, cache_enabled=True):
    """The autocast of this device: bf16 on Ampere and newer, else fp16; none on CPU."""
    if device.type != "cuda":
        return nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if uses_bf16(device) else torch.float16,
                          cache_enabled=cache_enabled)


def standardizes_landmarks(args):
    """Normalized landmark channels are standardized by default (Protocol 3 in BENCHMARKS.md); the plain legacy
    input (--no_landmark_norm) stays raw."""
    return args.modality != "gemma" and not args.no_landmark_norm and not args.no_landmark_standardize


def build_model(args, num_classes, feature_dim):
    common = dict(num_classes=num_classes, gemma_feature_dim=feature_dim, hidden_dim=args.hidden_dim,
                  dropout=args.dropout, landmark_dim=landmark_feature_dim(not args.no_landmark_norm),
                  num_layers=args.num_layers, num_heads=args.num_heads, encoder_dropout=args.encoder_dropout,
                  use_sinusoidal_pos=not args.legacy_pos_encoding, drop_path=args.drop_path,
                  max_len=max(512, args.num_frames))
    if args.model == "full":
        return FullHybridASLModel(**common)
    return SimpleHybridASLModel(**common, fusion_type=args.fusion_type, modality=args.modality)


def model_inputs(batch, args, augment_cfg=None, generator=None):
    """Batch from the loader -> (gemma, landmark channels, mask): augmentation (training only), then normalization."""
    gemma, landmarks, mask, labels, weight = batch
    if gemma is not None:
        gemma = gemma.float()  # stored as float16 to halve memory; computed in float32 or autocast
    if augment_cfg is not None:
        gemma, landmarks, mask = augment_batch(gemma, landmarks, mask, augment_cfg, generator)
    if landmarks is not None:
        landmarks = make_landmark_features(landmarks, mask, normalize=not args.no_landmark_norm)
    return gemma, landmarks, mask


def topk_correct(logits, labels, k):
    """(N,) bool: is the label among the k highest logits."""
    k = min(k, logits.shape[1])
    return (logits.topk(k, dim=1).indices == labels[:, None]).any(dim=1)


def classification_metrics(logits, labels, num_classes):
    """Per-instance and per-class top-1/top-5 (fractions), plain cross-entropy, and how many clips were scored.

    Per-class accuracy averages over the classes that have at least one clip in this split.
    """
    logits, labels = torch.as_tensor(logits, dtype=torch.float32), torch.as_tensor(labels, dtype=torch.int64)
    if len(labels) == 0:
        return dict(top1=0.0, top5=0.0, per_class_top1=0.0, per_class_top5=0.0, loss=float("nan"), n=0)
    metrics = dict(n=len(labels), loss=F.cross_entropy(logits, labels).item())
    for k in (1, 5):
        counts, hits = per_class_hits(logits, labels, num_classes, k)
        metrics[f"top{k}"] = (hits.sum() / counts.sum()).item()
        metrics[f"per_class_top{k}"] = (hits / counts.clamp(min=1))[counts > 0].mean().item()
    return {key: metrics[key] for key in ("top1", "top5", "per_class_top1", "per_class_top5", "loss", "n")}


def per_class_hits(logits, labels, num_classes, k):
    """(clips per class, clips per class whose label is in the top k), as float tensors of length num_classes."""
    logits, labels = torch.as_tensor(logits, dtype=torch.float32), torch.as_tensor(labels, dtype=torch.int64)
    correct = topk_correct(logits, labels, k).float()
    return (torch.bincount(labels, minlength=num_classes).float(),
            torch.bincount(labels, weights=correct, minlength=num_classes))


def make_eval_step(model, loader, args, amp_ctx, compile_forward=False):
    """Step input of `loader` -> (logits float32, labels, weight); weight 0 marks batch padding."""
    def forward(batch):
        gemma, landmarks, mask = model_inputs(batch, args)
        with torch.no_grad(), amp_ctx:
            return model(gemma, landmarks, mask).float()

    if compile_forward:
        forward = torch.compile(forward, dynamic=False)

    def eval_step(step_input):
        batch = loader.materialize(step_input)
        return forward(batch), batch[3], batch[4]
    return eval_step


def predict_logits(model, loader, args, amp_ctx, step=None):
    """Logits (N, C) float32 and labels (N,) for every clip of the loader's split, in split order.

    step: a callable from make_eval_step (possibly replayed as a CUDA graph); default runs the model eagerly.
    """
    model.eval()
    step = step or make_eval_step(model, loader, args, amp_ctx)
    all_logits, all_labels = [], []
    for step_input in loader.plan(shuffle=False):
        logits, labels, weight = step(step_input)
        real = weight > 0
        all_logits.append(logits[real].cpu())
        all_labels.append(labels[real].cpu())
    return torch.cat(all_logits).numpy(), torch.cat(all_labels).numpy()


def evaluate(model, loader, args, amp_ctx, num_classes, step=None):
    logits, labels = predict_logits(model, loader, args, amp_ctx, step)
    metrics = classification_metrics(logits, labels, num_classes)
    metrics["n_listed"] = loader.split.listed
    return metrics


# ----------------------------------------------------------------------------------------------------------------
# The training step, and its CUDA-graph replay

def weighted_loss(logits, labels, weight, class_weights, label_smoothing):
    """Class-weighted, label-smoothed cross-entropy; rows with weight 0 (batch padding) do not count.
    Equals F.cross_entropy(..., weight=class_weights)'s mean when every row has weight 1."""
    per_clip = F.cross_entropy(logits, labels, weight=class_weights, label_smoothing=label_smoothing,
                               reduction="none")
    return (per_clip * weight).sum() / (class_weights[labels] * weight).sum().clamp(min=1e-12)


def make_train_step(model, optimizer, args, class_weights, amp_ctx, augment_cfg, scaler, ema, found_inf,
                    skip_all, compile_forward=False):
    """One optimisation step with no host synchronisation, so that it can be captured as a CUDA graph.

    A non-finite loss or gradient norm sets `found_inf`, and the fused AdamW then skips the update on the device
    (the step is counted, never applied). `skip_all` (a device flag) skips every update: the warm-up runs that
    CUDA-graph capture needs then leave weights and optimizer state untouched. Returns device tensors: loss,
    correct top-1, real clips, skipped (0/1).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not scaler.is_enabled():
        optimizer.found_inf = found_inf  # read by fused AdamW at every step (also inside a captured graph)

    def forward_loss(batch, generator):
        gemma, landmarks, mask = model_inputs(batch, args, augment_cfg, generator)
        with amp_ctx:
            logits = model(gemma, landmarks, mask)
        return weighted_loss(logits.float(), batch[3], batch[4], class_weights, args.label_smoothing), logits

    if compile_forward:  # fuses augmentation, normalization and the model's small ops into a few kernels
        forward_loss = torch.compile(forward_loss, dynamic=False)

    def train_step(batch, generator=None):
        labels, weight = batch[3], batch[4]
        loss, logits = forward_loss(batch, generator)
        if scaler.is_enabled():  # fp16 on GPUs without bf16: the scaler finds and skips overflowing steps itself
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(params, args.grad_clip, foreach=True)
            scaler.step(optimizer)
            scaler.update()
            skipped = (~torch.isfinite(loss)).float()
        else:
            loss.backward()
            norm = nn.utils.clip_grad_norm_(params, args.grad_clip, foreach=True)
            found_inf.copy_(torch.maximum((~(torch.isfinite(loss) & torch.isfinite(norm))).float(), skip_all))
            optimizer.step()
            skipped = found_inf.clone()
        if ema is not None:
            # ema += (1 - decay) * (params - ema), and not at all on a skipped step; foreach ops with a device
            # scalar, so nothing waits for the host.
            # The decay warms up as (1 + n) / (10 + n), capped at --ema_decay: early on the average follows the
            # weights instead of carrying the random initialisation for thousands of steps.
            ema_model, ema_params, updates = ema
            decay = torch.clamp((1.0 + updates) / (10.0 + updates), max=args.ema_decay)
            rate = (1.0 - decay) * (1.0 - skipped)
            delta = torch._foreach_sub(params, ema_params)
            torch._foreach_mul_(delta, rate)
            torch._foreach_add_(ema_params, delta)
            updates.add_(1.0 - skipped)
        kept = 1.0 - skipped
        correct = (topk_correct(logits.detach(), labels, 1).float() * weight).sum()
        return torch.nan_to_num(loss.detach()) * kept, correct * kept, weight.sum() * kept, skipped

    return train_step


class CudaGraphStep:
    """Captures `step(inputs)` once as a CUDA graph and replays it for every batch.

    This model is small: an eager step launches hundreds of tiny kernels and costs several times its arithmetic in
    launch overhead. Each call copies its inputs into static buffers and replays the graph; the outputs are static
    tensors that the next replay overwrites. The warm-up runs before capture must not change training: callers
    make them no-ops (the training step's skip_all flag).
    """

    def __init__(self, step, example_inputs, before_capture=None):
        self.inputs = tuple(t.clone() if torch.is_tensor(t) else t for t in example_inputs)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up (lazy state, cuBLAS workspaces) must happen outside the capture
            for _ in range(3):
                step(self.inputs)
        torch.cuda.current_stream().wait_stream(side)
        if before_capture is not None:
            before_capture()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.outputs = step(self.inputs)

    def __call__(self, inputs):
        for static, new in zip(self.inputs, inputs):
            if torch.is_tensor(static):
                static.copy_(new, non_blocking=True)
        self.graph.replay()
        return self.outputs


# ----------------------------------------------------------------------------------------------------------------
# Files: everything is written to a temporary name first, then renamed, so a crash never leaves half a file

def atomic_torch_save(obj, path):
    """Serialized in memory first: torch's zip writer turns a failed disk write (disk full) into an opaque
    RuntimeError, while a plain write raises the OSError that atomic_write names."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write(path, lambda f: f.write(buffer.getbuffer()), "wb")


def csv_text(rows, fieldnames):
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fieldnames, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def write_summary(path, history):
    if history:
        atomic_write_text(path, csv_text(history, list(history[0])))


# What a checkpoint must hold to be evaluated or resumed, and what older versions of this project left out
ESSENTIAL_KEYS = ("model", "args", "label_mapping", "num_classes", "feature_dim", "epoch", "best_epoch")
ADDED_LATER = {"train_counts": ("2026-11-25", None), "ema_updates": ("2026-11-25", 0.0)}  # key: (since, stand-in)


def load_checkpoint(path):
    """A checkpoint of this trainer, loaded without running any code from the file (weights_only=True: tensors and
    plain values only), with one-line errors for anything else. Fields that older versions did not write get
    stand-ins (noted in checkpoint["older_version"]); a file that lacks what evaluation needs is named with the
    version that wrote it."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"checkpoint {path} is a folder; pass {path / 'best.pt'} (or {path / 'last.pt'} to resume)")
    require_regular_file(path, "checkpoint", "pass a best.pt or last.pt written by train_simple.py")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        code = re.search(r"GLOBAL ([\w.]+)", str(e))  # the file asks for a Python function or class
        if code:
            raise DataError(f"{path} is not a plain checkpoint: loading it would run Python code named in the file "
                            f"({code.group(1)}), which this tool never does; use a best.pt or last.pt written by "
                            "train_simple.py")
        raise DataError(f"{path} is not a readable checkpoint (UnpicklingError); pass a best.pt or last.pt written "
                        "by train_simple.py")
    except Exception as e:
        raise DataError(f"{path} is not a readable checkpoint ({type(e).__name__}); pass a best.pt or last.pt "
                        "written by train_simple.py")
    if not isinstance(checkpoint, dict) or not str(checkpoint.get("format", "")).startswith("hybrid-asl-trainer/"):
        raise DataError(f"{path} is not a checkpoint written by train_simple.py; pass its best.pt or last.pt")
    if checkpoint["format"] != CHECKPOINT_FORMAT:
        raise DataError(f"{path} was written by a newer version of this project (checkpoint format "
                        f"{checkpoint['format']}, this one reads {CHECKPOINT_FORMAT}); update the project")
    missing = [k for k in ESSENTIAL_KEYS if k not in checkpoint]
    if missing or not isinstance(checkpoint.get("args"), dict):
        raise DataError(f"{path} was written by an incompatible version of train_simple.py (format "
                        f"{checkpoint['format']} without {', '.join(missing) or 'its settings'}); retrain with this "
                        "version")
    older = [k for k in ADDED_LATER if k not in checkpoint]
    for key in older:
        checkpoint[key] = ADDED_LATER[key][1]
    if older:
        checkpoint["older_version"] = (f"written before {min(ADDED_LATER[k][0] for k in older)} (no "
                                       f"{', '.join(older)} in it)")
    return checkpoint


def check_output_dir(args, resume_state):
    """Nothing is lost by a typo: a run folder that already holds a run is only written by resuming that run
    from its latest epoch; --overwrite is the explicit way past this."""
    if args.output_dir is None:
        return
    out_dir = Path(args.output_dir)
    last = out_dir / "last.pt"
    if resume_state is None or out_dir.resolve() != Path(args.resume).parent.resolve():
        found = [f for f in ("last.pt", "best.pt", "metrics.json") if (out_dir / f).is_file()]
        if found:
            todo = "branch off into an empty --output_dir" if resume_state else f"continue it with --resume {last}"
            raise DataError(f"--output_dir {out_dir} already holds a run ({', '.join(found)}); {todo}, or pick "
                            "another --output_dir (--overwrite replaces it)")
        return
    if last.is_file() and last.resolve() != Path(args.resume).resolve():
        latest = load_checkpoint(last)["epoch"]
        if latest > resume_state["epoch"]:
            raise DataError(f"--resume {args.resume} was saved after epoch {resume_state['epoch']} but {last} after "
                            f"epoch {latest}: resume from {last}, or branch off into a new --output_dir "
                            "(--overwrite replaces the later epochs)")


# ----------------------------------------------------------------------------------------------------------------
# The run

RUN_FILES = ("best.pt", "last.pt", "args.json", "label_mapping.json", "summary.csv", "metrics.json", "curves.png")


def lock_run_folder(out_dir, cleanup):
    """One run per output folder: a second run into it is refused while the first runs (safe_io.RunLock), and what
    a killed writer left behind (temporary files) is removed."""
    cleanup.enter_context(RunLock(out_dir))
    removed = remove_stale_temporaries(out_dir)
    if removed:
        print(f"removed {len(removed)} temporary files left in {out_dir} by an interrupted run")


def model_memory_check(args, num_classes, feature_dim, train_clips, device):
    """Says what fits before anything large is allocated: the model with its gradients and AdamW state (counted on
    the meta device, which allocates nothing) and a rough upper bound of one batch's activations."""
    with torch.device("meta"):
        n_params = sum(p.numel() for p in build_model(args, num_classes, feature_dim).parameters())
    model_bytes = n_params * 4 * (5 if args.ema else 4)  # weights, gradients, two AdamW moments (+ the EMA copy)
    streams = 2 if args.modality == "hybrid" else 1
    T, H = args.num_frames, args.hidden_dim
    per_token = streams * args.num_layers * (16 * H + args.num_heads * T) + 6 * 453 + 2 * (feature_dim or 0) + 4 * H
    per_clip = 4 * T * per_token
    batch = args.batch_size if device.type == "cuda" else min(args.batch_size, train_clips)  # CUDA pads batches
    if device.type == "cuda":
        available = torch.cuda.mem_get_info(device)[0]
    else:
        available = available_memory_bytes()
    need = model_bytes + batch * per_clip
    if available and need > available:
        fits = int((available - model_bytes) // per_clip)
        what = (f"--batch_size {fits} or fewer fits" if fits >= 1 else
                "the model alone does not fit: lower --hidden_dim or --num_layers")
        raise DataError(f"the model ({n_params / 1e6:.0f}M parameters, {model_bytes / 1e9:.1f} GB with its optimizer "
                        f"state) and a batch of {batch} clips of {T} frames need about {need / 1e9:.1f} GB, more than "
                        f"the {available / 1e9:.1f} GB available on {device}; {what}")


def main(argv=None):
    with contextlib.ExitStack() as cleanup:  # releases the run folder's lock however the run ends
        return train(argv, cleanup)


def train(argv, cleanup):
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    given = explicit_flags(parser, argv)
    for flag in ("output_dir", "cache_dir", "data_dir", "subset"):
        if getattr(args, flag) is not None and not str(getattr(args, flag)).strip():
            parser.error(f"--{flag} is empty; give a path")

    resume_state = None
    if args.resume:
        resume_state = load_checkpoint(args.resume)
        # The resumed run keeps its own settings; flags given now override (e.g. --epochs to train longer).
        saved = dict(resume_state["args"])
        saved.update({k: getattr(args, k) for k in given})
        saved["resume"] = args.resume
        if "output_dir" not in given:
            saved["output_dir"] = str(Path(args.resume).parent)
        args = argparse.Namespace(**{**vars(args), **saved})
        changed = [k for k in MODEL_SHAPE_KEYS + SCHEDULE_KEYS
                   if k in given and resume_state["args"].get(k) != getattr(args, k)]
        if changed:
            parser.error(f"--resume {args.resume}: that run was trained with different "
                         f"{', '.join('--' + k for k in changed)}; drop those flags to continue it "
                         "(start a new run to change them)")
    elif args.demo:
        for key, value in DEMO_SETTINGS.items():
            if key not in given:
                setattr(args, key, value)
    if args.model == "full" and args.modality != "hybrid":
        parser.error("--model full fuses both streams; use --modality hybrid (or --model simple)")
    if args.hidden_dim % args.num_heads:
        parser.error(f"--hidden_dim {args.hidden_dim} must be divisible by --num_heads {args.num_heads}")
    device = resolve_device(parser, args.device)
    if args.output_dir is not None and Path(args.output_dir).is_dir():
        lock_run_folder(args.output_dir, cleanup)  # before looking at what the folder holds: it may be in use
    if not args.overwrite:
        check_output_dir(args, resume_state)

    # ---- data ------------------------------------------------------------------------------------------------
    data_dir, split_path, gemma_dir, landmarks_dir, cache_dir = data_paths(args)
    clips = load_split(split_path, hint=", or try --demo")
    for needed, folder, flag, other in (("hybrid gemma", gemma_dir, "--gemma_features_dir", "landmarks"),
                                        ("hybrid landmarks", landmarks_dir, "--landmarks_dir", "gemma")):
        if args.modality in needed.split() and not folder.is_dir():
            raise DataError(f"{folder} not found: set {flag} (README 'WLASL data layout') "
                            f"or train on the other stream only with --modality {other}")
    feature_dim = None
    if args.modality != "landmarks":
        recorded = read_extraction_dim(gemma_dir)
        expected = args.gemma_feature_dim if "gemma_feature_dim" in given or recorded is None else recorded
        feature_dim = verify_feature_dimensions(gemma_dir, expected)
        args.gemma_feature_dim = feature_dim
    label_mapping = build_label_mapping(clips, load_glosses(data_dir))
    label_of = {entry["wlasl_id"]: entry["index"] for entry in label_mapping}
    num_classes = len(label_mapping)
    if resume_state is not None and ([e["wlasl_id"] for e in resume_state["label_mapping"]] != list(label_of)
                                     or resume_state["feature_dim"] != feature_dim):
        # Checked before anything is written: a refused resume must not overwrite the run's args.json.
        raise DataError(f"--resume {args.resume}: that run was trained on other classes or features "
                        f"({len(resume_state['label_mapping'])} classes, feature width {resume_state['feature_dim']}) "
                        f"than this data ({num_classes} classes, feature width {feature_dim}); resume with the "
                        f"run's own --data_dir and --subset")
    splits = load_splits(clips, label_of, gemma_dir, landmarks_dir, args.modality, args.num_frames, feature_dim,
                         cache_dir=cache_dir, subset_name=split_path.name)
    print(f"{split_path}: {num_classes} classes, modality {args.modality}")
    for split in splits.values():
        print("  " + split.report())
        if len(split) == 0:
            folders = [str(d) for d, stream in ((gemma_dir, "gemma"), (landmarks_dir, "landmarks"))
                       if args.modality in (stream, "hybrid")]
            reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(split.skipped.items()))
            raise DataError(f"no usable {split.name} clip in {split_path} (of {split.listed} listed; skipped: "
                            f"{reasons or 'none'}): check {' and '.join(folders)} (README 'WLASL data layout')")
    train_counts = np.bincount(splits["train"].labels, minlength=num_classes)
    if (train_counts == 0).any():
        empty = [str(label_mapping[i]["gloss"]) for i in np.flatnonzero(train_counts == 0)]
        print(f"warning: {len(empty)} classes have no training clip: {', '.join(empty[:10])}"
              + (" ..." if len(empty) > 10 else ""))

    # ---- run folder ------------------------------------------------------------------------------------------
    if args.output_dir is None:
        args.output_dir = str(Path("runs") / f"{split_path.stem}-{time.strftime('%Y%m%d-%H%M%S')}")
    out_dir = Path(args.output_dir)
    inputs = [("--subset", split_path), ("class list", data_dir / "wlasl_class_list.txt"),
              ("class list", data_dir / "WLASL_v0.3.json")]
    for name in RUN_FILES:  # the run writes these names: none of them may be one of its inputs
        check_output_path(out_dir / name, "--output_dir", inputs)
    model_memory_check(args, num_classes, feature_dim, len(splits["train"]), device)
    if not out_dir.is_dir():
        make_folder(out_dir, "--output_dir")
        lock_run_folder(out_dir, cleanup)
    source_best = Path(args.resume).parent / "best.pt" if args.resume else None
    if source_best is not None and source_best.is_file() and not (out_dir / "best.pt").is_file():
        # resuming into a new folder: it starts with the best checkpoint so far, so the branch is self-contained
        atomic_write(out_dir / "best.pt", lambda f: f.write(source_best.read_bytes()), "wb")
    write_json(out_dir / "args.json", vars(args))
    write_json(out_dir / "label_mapping.json", label_mapping)

    # ---- model, optimizer, schedule --------------------------------------------------------------------------
    torch.manual_seed(args.seed)
    model = build_model(args, num_classes, feature_dim).to(device)
    if standardizes_landmarks(args) and resume_state is None:
        # statistics of the (un-augmented) training clips; a resumed run gets them back from its checkpoint
        train = splits["train"]
        mean, std = channel_statistics(train.landmarks, train.lengths)
        model.landmark_standardizer.set_statistics(mean.to(device), std.to(device))
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]  # biases and norms are not decayed
    bf16 = uses_bf16(device)
    # CUDA graphs need static shapes and no host synchronisation; the fp16 GradScaler synchronises, so graphs
    # are used with bf16 (Ampere and newer) only.
    use_graphs = device.type == "cuda" and bf16 and not args.no_cuda_graphs
    # Autocast's weight-cast cache must be off under graph capture (a cached cast would be replayed stale).
    amp_ctx = amp_context(device, cache_enabled=not use_graphs)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and not bf16)
    # Fused AdamW with a tensor learning rate: one kernel per step, capturable in a CUDA graph, and it can skip
    # a step on the device when found_inf is set (no host round trip to check the loss).
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=torch.tensor(args.lr, device=device), fused=True, capturable=use_graphs)
    on_device = place_splits_on_device(splits, device, args.gpu_cache_gb)
    # On CUDA every batch has the same shape (the last one padded with weight-0 rows), graphs or not, so that
    # eager and replayed runs do the same arithmetic.
    fixed_size = device.type == "cuda"
    train_loader = BatchLoader(splits["train"], args.batch_size, device, on_device["train"], fixed_size)
    eval_loaders = {name: BatchLoader(splits[name], args.batch_size, device, on_device[name], fixed_size)
                    for name in ("val", "test")}
    scheduler = get_cosine_schedule_with_warmup(optimizer, args.warmup_epochs, args.epochs, len(train_loader),
                                                args.min_lr_ratio)
    class_weights = (compute_class_weights(splits["train"].labels, num_classes) if args.use_class_weights
                     else torch.ones(num_classes)).to(device)
    ema = None
    if args.ema:
        ema_model = copy.deepcopy(model).requires_grad_(False)
        ema = (ema_model, list(ema_model.parameters()), torch.zeros((), device=device))  # model, params, updates
    augment_cfg = augment_config_from_args(args)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {args.model} ({n_params / 1e6:.1f}M parameters) on {device}"
          + (f", {'bf16' if bf16 else 'fp16'} autocast, CUDA graphs {'on' if use_graphs else 'off'}, "
             f"on the GPU: {', '.join(k for k, v in on_device.items() if v) or 'none'}" if device.type == "cuda"
             else ""))
    if args.verbose:
        print(f"  settings: {json.dumps({k: v for k, v in vars(args).items() if v is not None})}")
        if args.use_class_weights:
            print(f"  class weights: min {class_weights.min():.2f} max {class_weights.max():.2f}")

    start_epoch, best_top1, best_epoch, history = 0, -1.0, -1, []
    if resume_state is not None:
        try:
            model.load_state_dict(resume_state["model"])
        except RuntimeError as e:
            raise DataError(f"--resume {args.resume}: the checkpoint is from another model shape "
                            f"({str(e).splitlines()[1].strip()[:120]}); resume with the run's own data and flags")
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        scaler.load_state_dict(resume_state["scaler"])
        if ema is not None and resume_state.get("ema") is not None:
            ema[0].load_state_dict(resume_state["ema"])
            ema[2].fill_(resume_state.get("ema_updates", 0.0))
        start_epoch, best_top1 = resume_state["epoch"], resume_state["best_val_top1"]
        best_epoch, history = resume_state["best_epoch"], resume_state["history"]
        print(f"resumed from {args.resume} after epoch {start_epoch}")

    def checkpoint(epoch):
        return {"format": CHECKPOINT_FORMAT, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "ema": ema[0].state_dict() if ema is not None else None,
                "ema_updates": ema[2].item() if ema is not None else 0.0, "epoch": epoch,
                "best_val_top1": best_top1, "best_epoch": best_epoch, "history": history, "args": vars(args),
                "label_mapping": label_mapping, "feature_dim": feature_dim, "num_classes": num_classes,
                "train_counts": train_counts.tolist()}

    eval_model = ema[0] if ema is not None else model  # evaluation and model selection use the EMA when it is on
    found_inf, skip_all = torch.zeros((), device=device), torch.zeros((), device=device)
    totals = torch.zeros(4, device=device)  # per epoch: loss * clips, correct, clips, skipped steps

    def build_steps(compile_forward):
        train_step = make_train_step(model, optimizer, args, class_weights, amp_ctx, augment_cfg, scaler, ema,
                                     found_inf, skip_all, compile_forward)

        def counted_train_step(step_input, generator=None):
            loss, correct, clips, skipped = train_step(train_loader.materialize(step_input), generator)
            totals.add_(torch.stack([loss * clips, correct, clips, skipped]))

        val_step = make_eval_step(eval_model, eval_loaders["val"], args, amp_ctx, compile_forward)
        if use_graphs:
            model.train()
            skip_all.fill_(1.0)  # the warm-up runs before capture must not train
            # Gradients must be None when capture starts, so the captured backward writes them instead of adding
            # to them on every replay.
            counted_train_step = CudaGraphStep(counted_train_step, next(train_loader.plan()),
                                               before_capture=lambda: optimizer.zero_grad(set_to_none=True))
            skip_all.fill_(0.0)
            eval_model.eval()
            val_step = CudaGraphStep(val_step, next(eval_loaders["val"].plan()))
        return counted_train_step, val_step

    compile_forward = use_graphs and not args.no_compile
    try:
        counted_train_step, val_step = build_steps(compile_forward)
    except Exception as e:  # a compiler toolchain problem must not cost the run: fall back to plain graphs
        if not compile_forward or isinstance(e, torch.OutOfMemoryError):
            raise
        print(f"warning: torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0][:100]}); "
              "continuing without it (--no_compile skips the attempt)")
        skip_all.fill_(0.0)
        counted_train_step, val_step = build_steps(False)
    if args.verbose and device.type == "cuda":
        print(f"  GPU memory after setup: {torch.cuda.memory_allocated(device) / 1e9:.2f} GB allocated, "
              f"peak {torch.cuda.max_memory_allocated(device) / 1e9:.2f} GB")

    writer = None
    if args.tensorboard:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise DataError("--tensorboard needs the tensorboard package: pip install tensorboard "
                            "(it is in requirements-extract.txt)")
        writer = SummaryWriter(str(out_dir / "tensorboard"))

    resume_command = f"python train_simple.py --resume {shlex.quote(str(out_dir / 'last.pt'))}"  # pastes as is
    if resume_state is None:
        atomic_torch_save(checkpoint(0), out_dir / "last.pt")  # so even an interrupted first epoch can resume

    # ---- training --------------------------------------------------------------------------------------------
    skipped_steps = 0
    try:
        for epoch in range(start_epoch, args.epochs):
            t0 = time.time()
            model.train()
            # Every epoch draws from its own seeds, so a resumed run replays exactly what the uninterrupted one did.
            torch.manual_seed(args.seed * 1000 + epoch)
            generator = None if use_graphs else torch.Generator(device).manual_seed(args.seed * 1000 + epoch)
            totals.zero_()
            data_seconds = 0.0  # host time spent producing batches (the data-wait share of the epoch)
            plan = iter(train_loader.plan(shuffle=True, seed=args.seed * 1000 + epoch))
            for _ in tqdm(range(len(train_loader)), desc=f"epoch {epoch + 1}", leave=False,
                          disable=not sys.stderr.isatty()):
                t_data = time.perf_counter()
                step_input = next(plan)
                data_seconds += time.perf_counter() - t_data
                if use_graphs:
                    counted_train_step(step_input)
                else:
                    optimizer.zero_grad(set_to_none=True)
                    counted_train_step(step_input, generator)
                scheduler.step()
                if writer is not None:  # the lr from the schedule's own formula: no device round trip
                    writer.add_scalar("lr", args.lr * scheduler.lr_lambdas[0](scheduler.last_epoch),
                                      scheduler.last_epoch)
            loss_sum, correct, seen, nonfinite = totals.tolist()
            nonfinite, steps = int(nonfinite), len(train_loader)
            skipped_steps += nonfinite
            if nonfinite and nonfinite > steps // 2:  # most of an epoch lost: something is wrong, stop
                print(f"error: {nonfinite} of {steps} steps in epoch {epoch + 1} had a non-finite loss; lower --lr "
                      f"(now {args.lr:g}) or check the features for extreme values. The last good checkpoint is "
                      f"{out_dir / 'last.pt'}", file=sys.stderr)
                return 1
            if nonfinite:
                print(f"warning: skipped {nonfinite} steps with a non-finite loss in epoch {epoch + 1}")

            train_seconds = time.time() - t0
            val = evaluate(eval_model, eval_loaders["val"], args, amp_ctx, num_classes, val_step)
            train_loss = loss_sum / max(seen, 1)
            row = dict(epoch=epoch + 1, train_loss=round(train_loss, 5), train_top1=round(correct / max(seen, 1), 5),
                       val_loss=round(val["loss"], 5), val_top1=round(val["top1"], 5), val_top5=round(val["top5"], 5),
                       val_per_class_top1=round(val["per_class_top1"], 5),
                       lr=f"{optimizer.param_groups[0]['lr']:.3e}", train_seconds=round(train_seconds, 3),
                       data_seconds=round(data_seconds, 3),
                       seconds=round(time.time() - t0, 2), skipped_steps=nonfinite)
            history.append(row)
            if val["top1"] > best_top1:
                best_top1, best_epoch = val["top1"], epoch + 1
                state = checkpoint(epoch + 1)
                state["model"] = eval_model.state_dict()  # best.pt holds the weights that were evaluated
                atomic_torch_save(state, out_dir / "best.pt")
            atomic_torch_save(checkpoint(epoch + 1), out_dir / "last.pt")
            write_summary(out_dir / "summary.csv", history)
            if writer is not None:
                for key, value in row.items():
                    if key not in ("epoch", "lr"):
                        writer.add_scalar(key, float(value), epoch + 1)
                writer.flush()
            print(f"epoch {epoch + 1:3d}/{args.epochs}  train loss {train_loss:.4f} top1 {row['train_top1']:.3f}  "
                  f"val loss {val['loss']:.4f} top1 {val['top1']:.3f} top5 {val['top5']:.3f}  "
                  f"lr {row['lr']}  {row['seconds']:.1f}s" + ("  *" if best_epoch == epoch + 1 else ""))
    except KeyboardInterrupt as stop:
        print(f"\ninterrupted{' (SIGTERM)' if isinstance(stop, Terminated) else ''}; {out_dir / 'last.pt'} holds the "
              f"last finished epoch. Resume with:\n  {resume_command}")
        return exit_code(stop)  # Ctrl-C: 130; SIGTERM (Terminated): 143

    # ---- final evaluation: the best-on-val weights, test split once -----------------------------------------
    best = load_checkpoint(out_dir / "best.pt")
    with torch.no_grad():
        for t, value in zip(eval_model.state_dict().values(), best["model"].values()):
            t.copy_(value)  # in place: a captured eval graph keeps reading the same tensors
    metrics = {"num_classes": num_classes, "best_epoch": best_epoch}
    for name in ("val", "test"):
        metrics[name] = evaluate(eval_model, eval_loaders[name], args, amp_ctx, num_classes,
                                 val_step if name == "val" else None)
    metrics["skipped"] = {name: dict(split.skipped, nonfinite_landmark_clips=split.nonfinite_landmark_clips)
                          for name, split in splits.items()}
    metrics["skipped_steps"] = skipped_steps
    write_json(out_dir / "metrics.json", metrics)  # strict JSON: a NaN loss (no clip scored) is written as null
    plots.plot_training_curves(out_dir / "summary.csv", out_dir / "curves.png")  # skipped without matplotlib
    test = metrics["test"]
    print(f"best epoch {best_epoch}: test top1 {test['top1']:.3f} top5 {test['top5']:.3f} "
          f"(per class {test['per_class_top1']:.3f} / {test['per_class_top5']:.3f}) on {test['n']} of "
          f"{test['n_listed']} test clips -> {out_dir / 'metrics.json'}")
    return 0


def run(argv=None):
    """Entry point: user errors become one line on stderr and exit code 2, never a traceback."""
    try:
        return run_cli(main, argv, interrupted="interrupted before training started; nothing to resume, run the "
                                               "same command again")
    except torch.OutOfMemoryError:
        print("error: CUDA out of memory; lower --batch_size (e.g. 16 or 8) or --gpu_cache_gb, or use --device cpu",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(run())
