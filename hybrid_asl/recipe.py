"""The recipe: the seed design's fixes as small functions that tests call directly (class weights, the warmup +
cosine schedule, the feature-width check), and the model that a configuration describes.

    from hybrid_asl.recipe import compute_class_weights, get_cosine_schedule_with_warmup, verify_feature_dimensions
    config = model_config(args, num_classes, gemma_dim)      # what a checkpoint keeps to rebuild the model
    model = build_model(config)
"""
import json
import math
from pathlib import Path

import numpy as np
import torch

from hybrid_asl.cli import available_memory_bytes
from hybrid_asl.errors import DataError
from hybrid_asl.files import not_a_regular_file, read_text
from hybrid_asl.landmarks import hand_channels, landmark_feature_dim
from hybrid_asl_model import Ensemble, FullHybridASLModel
from hybrid_asl_model_simple import SimpleHybridASLModel


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
    """Returns the Gemma feature width found in features_dir (or expected_dim if there is nothing to read).

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
# The model a configuration describes

def model_config(args, num_classes, gemma_dim):
    """The keyword arguments of the model the run's flags describe: saved in every checkpoint as "model_config", so
    evaluation and prediction rebuild the same model without the training flags."""
    config = dict(model=args.model, num_classes=num_classes, gemma_feature_dim=gemma_dim, hidden_dim=args.hidden_dim,
                  dropout=args.dropout,
                  landmark_dim=landmark_feature_dim(not args.no_landmark_norm, **hand_channels(args)),
                  num_layers=args.num_layers, num_heads=args.num_heads, encoder_dropout=args.encoder_dropout,
                  use_sinusoidal_pos=not args.legacy_pos_encoding, drop_path=args.drop_path,
                  max_len=max(512, args.num_frames), members=getattr(args, "ensemble", None) or 1)
    if args.model == "simple":
        config.update(fusion_type=args.fusion_type, modality=args.modality,
                      encoder=getattr(args, "encoder", "transformer"))
    return config


def build_model(config):
    """SimpleHybridASLModel or FullHybridASLModel from a model_config dict; an Ensemble of them with members > 1
    (checkpoints from before --ensemble have no "members": one model)."""
    kwargs = {k: v for k, v in config.items() if k not in ("model", "members")}
    model_class = FullHybridASLModel if config["model"] == "full" else SimpleHybridASLModel
    members = config.get("members", 1)
    return model_class(**kwargs) if members == 1 else Ensemble([model_class(**kwargs) for _ in range(members)])


def model_memory_check(args, config, train_clips, device):
    """Says what fits before anything large is allocated: the model with its gradients and AdamW state (counted on
    the meta device, which allocates nothing) and a rough upper bound of one batch's activations."""
    with torch.device("meta"):
        n_params = sum(p.numel() for p in build_model(config).parameters())
    model_bytes = n_params * 4 * (5 if args.ema else 4)  # weights, gradients, two AdamW moments (+ the EMA copy)
    streams = 2 if args.modality == "hybrid" else 1
    T, H = args.num_frames, args.hidden_dim
    per_token = streams * args.num_layers * (16 * H + args.num_heads * T) + 6 * 453 + \
        2 * (config["gemma_feature_dim"] or 0) + 4 * H
    per_clip = 4 * T * per_token * config.get("members", 1)
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
