"""Checkpoints: written atomically, read without running code, explained when they come from another version.

A checkpoint (format hybrid-asl-trainer/2) carries what inference needs beside the weights, so that evaluation and
prediction never need the training flags:
    model_config            the keyword arguments of the model (recipe.build_model)
    landmark_normalization  LandmarkPreprocessor.state(): normalize flag, per-channel mean/std (None: not used)
    model, ema              weights (ema: the moving average, when the run kept one; inference uses it)
    label_mapping, num_classes, gemma_dim, train_counts, args (the resolved flags), epoch, best_epoch, ...
and, for resuming, the optimizer, scheduler and scaler states. Format 1 (before 2026-12-03) kept the landmark
statistics inside the model and named the Gemma stream "visual"; it is read and converted here.
"""
import io
import pickle
import re
from pathlib import Path
from types import SimpleNamespace

import torch

from hybrid_asl.errors import DataError
from hybrid_asl.files import atomic_write, require_regular_file
from hybrid_asl.landmarks import LandmarkPreprocessor
from hybrid_asl.recipe import build_model, model_config
from hybrid_asl_model import SinusoidalPositionalEncoding

CHECKPOINT_FORMAT = "hybrid-asl-trainer/2"
FORMAT_1 = "hybrid-asl-trainer/1"
# What a checkpoint must hold to be evaluated or resumed, and what older versions of this project left out
ESSENTIAL_KEYS = ("model", "args", "label_mapping", "num_classes", "epoch", "best_epoch")
ADDED_LATER = {"train_counts": ("2026-11-25", None), "ema_updates": ("2026-11-25", 0.0)}  # key: (since, stand-in)
# Model flags of format-1 checkpoints written before a flag existed: the value those versions used
FORMAT_1_MODEL_FLAGS = dict(model="simple", modality="hybrid", fusion_type="concat", hidden_dim=512, num_layers=2,
                            num_heads=8, dropout=0.5, encoder_dropout=0.1, drop_path=0.0, num_frames=16,
                            legacy_pos_encoding=False, no_landmark_norm=False)
# Data flags that evaluation and prediction read from a run's saved flags, with the value of runs that lack them
DATA_FLAG_DEFAULTS = dict(data_dir="data/wlasl", subset="nslt_100.json", gemma_features_dir=None, landmarks_dir=None,
                          cache_dir=None, no_cache=False, modality="hybrid", num_frames=16, batch_size=32,
                          output_dir=None, model="simple", tta_flip=False)


def save_checkpoint(state, path):
    """Serialized in memory first: torch's zip writer turns a failed disk write (disk full) into an opaque
    RuntimeError, while a plain write raises the OSError that atomic_write names in one line."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write(path, lambda f: f.write(buffer.getbuffer()), "wb")


def detached_copy(state):
    """A copy of a checkpoint dict that later training does not change: tensors copied to host memory, containers
    copied. What save_checkpoint would have written at this moment."""
    if torch.is_tensor(state):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        return {k: detached_copy(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(detached_copy(v) for v in state)
    return state


def load_checkpoint(path):
    """A checkpoint of this trainer in the current layout, loaded without running any code from the file
    (weights_only=True: tensors and plain values only), with one-line errors for anything else. Fields older
    versions did not write get stand-ins (noted in checkpoint["older_version"])."""
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
    if checkpoint["format"] not in (FORMAT_1, CHECKPOINT_FORMAT):
        raise DataError(f"{path} was written by a newer version of this project (checkpoint format "
                        f"{checkpoint['format']}, this one reads {FORMAT_1} and {CHECKPOINT_FORMAT}); update the "
                        "project")
    missing = [k for k in ESSENTIAL_KEYS if k not in checkpoint]
    if checkpoint["format"] == FORMAT_1 and "feature_dim" not in checkpoint:
        missing.append("feature_dim")
    if missing or not isinstance(checkpoint.get("args"), dict):
        raise DataError(f"{path} was written by an incompatible version of train_simple.py (format "
                        f"{checkpoint['format']} without {', '.join(missing) or 'its settings'}); retrain with this "
                        "version")
    if checkpoint["format"] == FORMAT_1:
        older = [k for k in ADDED_LATER if k not in checkpoint]
        for key in older:
            checkpoint[key] = ADDED_LATER[key][1]
        if older:
            checkpoint["older_version"] = (f"written before {min(ADDED_LATER[k][0] for k in older)} (no "
                                           f"{', '.join(older)} in it)")
        upgrade_format_1(checkpoint)
    return checkpoint


def upgrade_format_1(checkpoint):
    """Format 1 -> 2 in place: the model configuration from the saved flags, the landmark statistics out of the
    model's weights, the Gemma stream's modules renamed from "visual"."""
    args = SimpleNamespace(**{**FORMAT_1_MODEL_FLAGS, **checkpoint["args"]})
    checkpoint["gemma_dim"] = checkpoint.pop("feature_dim")
    checkpoint["model_config"] = model_config(args, checkpoint["num_classes"], checkpoint["gemma_dim"])
    statistics = None
    for key in ("model", "ema"):
        weights = checkpoint.get(key)
        if weights is None:
            continue
        mean, std = weights.pop("landmark_standardizer.mean", None), weights.pop("landmark_standardizer.std", None)
        if key == "model" or statistics is None:
            statistics = (mean, std)
        checkpoint[key] = {name.replace("visual", "gemma"): t for name, t in weights.items()}
    mean, std = statistics or (None, None)
    if mean is not None and (mean.any() or (std != 1).any()):  # identity statistics: not standardized
        standardized = (mean, std)
    else:
        standardized = (None, None)
    checkpoint["landmark_normalization"] = None if args.modality == "gemma" else {
        "normalize": not args.no_landmark_norm, "mean": standardized[0], "std": standardized[1]}
    checkpoint["format"] = CHECKPOINT_FORMAT


def positional_tables(weights):
    """The positional-encoding tables (1, max_len, width) in a state dict."""
    return [t for name, t in weights.items() if name.endswith("pos_encoding.pe")]


def learned_positions(weights):
    """True when the positional encodings in these weights are a learned table (the seed's legacy encoding), False
    when they are the sinusoidal formula, None when there is none: read from the weights, not from a flag."""
    tables = positional_tables(weights)
    if not tables:
        return None
    for table in tables:
        formula = SinusoidalPositionalEncoding(table.shape[-1], table.shape[1], dropout=0.0).pe
        if table.shape != formula.shape or not torch.allclose(table.float(), formula, atol=1e-5):
            return True
    return False


def inference_weights(checkpoint):
    """The weights training evaluated: the EMA when the run kept one."""
    return checkpoint.get("ema") or checkpoint["model"]


def model_from_checkpoint(checkpoint, path, device):
    """(model in eval mode, landmark preprocessor or None) as the run evaluated them, on device.

    The positional encoding is the one the weights hold (learned or sinusoidal), whatever the flags said."""
    config = dict(checkpoint["model_config"])
    weights = inference_weights(checkpoint)
    broken = [name for name, t in weights.items()
              if torch.is_tensor(t) and t.is_floating_point() and not torch.isfinite(t).all()]
    if broken:  # the model would only ever answer NaN
        raise DataError(f"{path} holds NaN or infinite weights ({', '.join(broken[:3])}); it cannot predict: use "
                        "another checkpoint (e.g. the run's best.pt)")
    learned = learned_positions(weights)
    if learned is not None:
        config["use_sinusoidal_pos"] = not learned
        config["max_len"] = positional_tables(weights)[0].shape[1]
    model = build_model(config)
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise DataError(f"{path}: the weights do not fit the model its own settings describe "
                        f"({str(e).splitlines()[-1].strip()[:120]}); was it written by another version?")
    state = checkpoint.get("landmark_normalization")
    prepare = None if state is None else LandmarkPreprocessor.from_state(state).to(device)
    return model.to(device).eval(), prepare


def load_trained(path, device, overrides=None):
    """(model, landmark preprocessor or None, the run's flags with `overrides` applied, checkpoint): what evaluation
    and prediction need from a checkpoint, on device."""
    checkpoint = load_checkpoint(path)
    args = SimpleNamespace(**{**DATA_FLAG_DEFAULTS, **checkpoint["args"],
                              **{k: v for k, v in (overrides or {}).items() if v is not None}})
    model, prepare = model_from_checkpoint(checkpoint, path, device)
    return model, prepare, args, checkpoint


def restore_training(checkpoint, path, model, optimizer, scheduler, scaler, ema):
    """Puts a resumed run's state back (weights, optimizer, schedule, scaler, EMA); returns (epoch, best val
    top-1, best epoch, history) so that the run continues where it stopped."""
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as e:
        raise DataError(f"--resume {path}: the checkpoint is from another model shape "
                        f"({str(e).splitlines()[1].strip()[:120]}); resume with the run's own data and flags")
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    scaler.load_state_dict(checkpoint["scaler"])
    if ema is not None and checkpoint.get("ema") is not None:
        ema.model.load_state_dict(checkpoint["ema"])
        ema.updates.fill_(checkpoint.get("ema_updates", 0.0))
    return checkpoint["epoch"], checkpoint["best_val_top1"], checkpoint["best_epoch"], checkpoint["history"]
