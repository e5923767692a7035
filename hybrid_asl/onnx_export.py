"""ONNX export, the torch side: a checkpoint -> one self-contained .onnx file, checked against the checkpoint.

    from hybrid_asl.onnx_export import export_checkpoint
    metadata, parity = export_checkpoint("runs/x/best.pt", "model.onnx")   # parity: [(case, max |diff|)]

The graph is the product's own inference path on raw inputs (inference_logits: engine.prepare_inputs with the
checkpoint's LandmarkPreprocessor, then the model, and the run's test-time flip averaging when it used it), so the
landmark normalization and standardization are baked into it: a consumer feeds raw MediaPipe rows and never
re-implements clip medians, hand-local coordinates or velocities (where train/serve skew would come from).
Inputs, only the streams the model uses, in this order:

    gemma      float32 (batch, time, gemma_dim)  Gemma features per frame; rounded to float16 in the graph, as the
                                                 packed splits store them
    landmarks  float32 (batch, time, 162)        raw MediaPipe rows, zeros where not detected
    mask       bool    (batch, time)             True on real frames; real frames first, padding after
    -> logits  float32 (batch, num_classes)

batch and time are dynamic (time up to the positional table, 512). What a consumer needs beside the graph travels
as JSON under the metadata key "hybrid_asl" (format hybrid-asl-onnx/1): classes, inputs and their layout, num_frames
and the sampling rule, the normalization (statistics for reference: already applied in the graph), the extraction
settings of the training data. hybrid_asl.onnx_model reads such a file without torch.

The exporter is torch.onnx's dynamo exporter at opset 18 (the maintained one; needs onnxscript); the TorchScript
exporter is the fallback (exporter="torchscript"). Before the file is written, onnxruntime and torch are compared
on batch sizes 1-16 and clip lengths 1-2*num_frames, padded clips and garbage in the padding included.
"""
import contextlib
import hashlib
import io
import json
import logging
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from hybrid_asl.batches import Batch
from hybrid_asl.checkpoint import inference_weights, learned_positions, load_trained, positional_tables
from hybrid_asl.clips import LANDMARK_DIM
from hybrid_asl import engine
from hybrid_asl.errors import DataError
from hybrid_asl.extraction import read_metadata
from hybrid_asl.files import atomic_write_bytes
from hybrid_asl.landmarks import HAND_FLAGS, landmark_feature_dim
from hybrid_asl.onnx_model import METADATA_FORMAT, METADATA_KEY, STREAMS

DEFAULT_OPSET = 18  # onnxruntime 1.14 and newer run it
EXPORTERS = ("dynamo", "torchscript")
PARITY_TOLERANCE = 1e-4
INSTALL_HINT = "pip install -r requirements-export.txt"
LANDMARK_LAYOUT = ("per frame: left hand 21 x (x, y, z) | right hand 21 x (x, y, z) | MediaPipe pose landmarks "
                   "11..22 x (x, y, z), MediaPipe's normalized image coordinates (extract_landmarks.py); a part "
                   "that was not detected is all zeros")
SAMPLING_RULE = ("hybrid_asl.clips.sample_clip: L = min(num_frames, frames of the longer stream); each stream takes "
                 "its frames floor((i + 0.5) * n / L) for i in 0..L-1 (n: its own frame count), NaN/inf landmarks "
                 "become 0; then zero-padded to num_frames, mask False on the padding")


def inference_logits(model, prepare, inputs, tta_flip=False):
    """The product's inference path on raw inputs {"gemma", "landmarks", "mask"} (absent streams omitted): the
    Gemma features as the packed splits store them (float16), then engine.inference_logits (normalization, the model,
    the run's test-time flip averaging). The exported graph and the parity reference are both this function."""
    gemma = inputs.get("gemma")
    batch = Batch(None if gemma is None else gemma.to(torch.float16), inputs.get("landmarks"), inputs["mask"],
                  None, None)
    return engine.inference_logits(model, prepare, batch, tta_flip)


class ExportedGraph(nn.Module):
    """inference_logits as a module with positional inputs (the streams the model uses, then the mask)."""

    def __init__(self, model, prepare, names, tta_flip=False):
        super().__init__()
        self.model, self.prepare, self.names, self.tta_flip = model, prepare, names, tta_flip

    def forward(self, *inputs):
        return inference_logits(self.model, self.prepare, dict(zip(self.names, inputs)), self.tta_flip)


def input_names(modality):
    return STREAMS[modality] + ("mask",)


def random_inputs(names, gemma_dim, batch, frames, seed, garbage=False):
    """Raw inputs as the product feeds them: real frames first; the other clips padded (lengths down to 1). The
    padding holds zeros, or random values with garbage=True (the mask must hide them)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([frames] + [max(1, frames - 1 - 3 * i) for i in range(batch - 1)])
    mask = torch.arange(frames)[None] < lengths[:, None]
    keep = torch.ones_like(mask) if garbage else mask
    landmarks = torch.rand(batch, frames, LANDMARK_DIM, generator=g) * keep[..., None]
    landmarks[1::3, :, 63:126] = 0   # every third clip from the second: no right hand (a left-handed signer) ...
    landmarks[2::3, :, 0:63] = 0     # ... and from the third: no left hand, so the paths of unseen hands run too
    values = {"gemma": torch.randn(batch, frames, gemma_dim or 1, generator=g) * keep[..., None],
              "landmarks": landmarks, "mask": mask}
    return tuple(values[name] for name in names)


def parity_cases(names, gemma_dim, num_frames):
    """(what, inputs): batch 1, 2, 5, 8, 16 and clip lengths 1 .. 2 * num_frames, with padded clips."""
    T = num_frames
    # 2 frames: torch.export guards time != 2 (the velocity channels), which the ONNX exporter relaxes
    shapes = ((1, T), (2, T), (5, T), (8, T), (3, max(2, T // 2)), (2, 1), (3, 2), (4, 2 * T), (1, 3), (16, T))
    cases = [(f"batch {b} x {t} frames, padded rows", random_inputs(names, gemma_dim, b, t, seed))
             for seed, (b, t) in enumerate(shapes)]
    cases.append((f"batch 16 x {T} frames, garbage in the padding",
                  random_inputs(names, gemma_dim, 16, T, seed=99, garbage=True)))
    return cases


# ----------------------------------------------------------------------------------------------------------------
# Export

def require_export_packages(exporter):
    for name in ("onnx", "onnxruntime") + (("onnxscript",) if exporter == "dynamo" else ()):
        try:
            __import__(name)
        except ImportError:
            raise DataError(f"{name} is not installed, which the export needs: {INSTALL_HINT}")


@contextlib.contextmanager
def quiet_exporter():
    """The exporters' progress lines and deprecation warnings are not the user's business."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            logger.setLevel(level)


def export_graph(graph, names, gemma_dim, num_frames, max_frames, opset=DEFAULT_OPSET, exporter="dynamo"):
    """The onnx.ModelProto of `graph` (an ExportedGraph in eval mode, on the CPU), batch and time dynamic."""
    import onnx
    example = random_inputs(names, gemma_dim, batch=2, frames=max(num_frames, 4), seed=0)
    with torch.no_grad(), quiet_exporter():
        if exporter == "dynamo":
            batch, frames = torch.export.Dim("batch", min=1), torch.export.Dim("time", min=1, max=max_frames)
            shapes = (tuple({0: batch, 1: frames} for _ in names),)  # forward(*inputs): one entry, the varargs
            program = torch.onnx.export(graph, example, input_names=list(names), output_names=["logits"],
                                        dynamic_shapes=shapes, opset_version=opset, dynamo=True, optimize=True)
            return program.model_proto
        buffer = io.BytesIO()
        axes = {name: {0: "batch", 1: "time"} for name in names}
        torch.onnx.export(graph, example, buffer, input_names=list(names), output_names=["logits"],
                          dynamic_axes={**axes, "logits": {0: "batch"}}, opset_version=opset, dynamo=False)
        return onnx.load_from_string(buffer.getvalue())


def check_parity(graph, names, onnx_bytes, cases, tolerance=PARITY_TOLERANCE):
    """[(case, max |onnxruntime - torch| of the logits)]; DataError past the tolerance."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    results = []
    for what, inputs in cases:
        with torch.no_grad():
            reference = graph(*inputs).numpy()
        got = session.run(["logits"], {name: value.numpy() for name, value in zip(names, inputs)})[0]
        diff = float(np.abs(got - reference).max())
        results.append((what, diff))
        if not diff < tolerance:  # NaN fails too
            raise DataError(f"the exported graph differs from the checkpoint by {diff:.3g} on {what} (tolerance "
                            f"{tolerance:g}); nothing was written: try --exporter torchscript")
    return results


def export_checkpoint(checkpoint_path, output, opset=DEFAULT_OPSET, exporter="dynamo", check=True, extra_cases=()):
    """checkpoint -> .onnx file with its metadata, written (atomically) only after the parity check passes.
    Returns (metadata, parity [(case, max abs diff)], or None with check=False). extra_cases: more (what, inputs)."""
    require_export_packages(exporter)
    import onnx
    model, prepare, args, checkpoint = load_trained(checkpoint_path, torch.device("cpu"))
    names = input_names(args.modality)
    gemma_dim, num_frames = checkpoint["gemma_dim"], int(args.num_frames)
    tables = positional_tables(inference_weights(checkpoint))
    max_frames = tables[0].shape[1] if tables else max(512, num_frames)
    graph = ExportedGraph(model, prepare, names, bool(args.tta_flip)).eval()
    proto = export_graph(graph, names, gemma_dim, num_frames, max_frames, opset, exporter)
    metadata = build_metadata(checkpoint_path, checkpoint, args, prepare, names, max_frames, opset, exporter)
    del proto.metadata_props[:]
    proto.metadata_props.add(key=METADATA_KEY, value=json.dumps(metadata))
    proto.producer_name = "hybrid-asl-trainer export_onnx.py"
    proto.doc_string = (f"Word-level sign recognition (WLASL). Inputs, outputs and class names: metadata key "
                        f"'{METADATA_KEY}' (JSON, format {METADATA_FORMAT}).")
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    parity = None
    if check:
        parity = check_parity(graph, names, data, list(parity_cases(names, gemma_dim, num_frames)) + list(extra_cases))
    atomic_write_bytes(output, data)
    return metadata, parity


# ----------------------------------------------------------------------------------------------------------------
# Metadata

def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def extraction_settings(checkpoint_path, args, names):
    """How the training features were made (what --video prediction and live recognition must repeat): the
    extraction_metadata.json beside the training data; "recorded": false when it is not there."""
    from hybrid_asl.run_folder import recorded_dir
    data_dir = Path(recorded_dir(checkpoint_path, args, args.data_dir) or "")
    out = {}
    if "landmarks" in names:
        meta = read_metadata(recorded_dir(checkpoint_path, args, args.landmarks_dir) or data_dir / "landmarks")
        settings = meta.get("settings", {})
        out["landmarks"] = {"recorded": bool(meta), "tool": "MediaPipe Holistic, extract_landmarks.py",
                            "mediapipe": meta.get("versions", {}).get("mediapipe"),
                            "model_complexity": settings.get("model_complexity", 1),
                            "num_frames": settings.get("num_frames")}  # None: every frame of the clip, tracked
    if "gemma" in names:
        meta = read_metadata(recorded_dir(checkpoint_path, args, args.gemma_features_dir)
                                 or data_dir / "gemma_features")
        out["gemma"] = {"recorded": bool(meta), **{k: meta.get(k) for k in ("model", "layer", "num_frames")}}
    return out


def build_metadata(checkpoint_path, checkpoint, args, prepare, names, max_frames, opset, exporter):
    """The JSON document stored under METADATA_KEY (format METADATA_FORMAT)."""
    config, mapping = checkpoint["model_config"], checkpoint["label_mapping"]
    gemma_dim = checkpoint["gemma_dim"]
    inputs = {
        "gemma": {"name": "gemma", "dtype": "float32", "shape": ["batch", "time", gemma_dim],
                  "layout": "frozen Gemma 3 visual features, one row per frame (extract_gemma_features.py)",
                  "notes": "rounded to float16 in the graph, as training stores them"},
        "landmarks": {"name": "landmarks", "dtype": "float32", "shape": ["batch", "time", LANDMARK_DIM],
                      "layout": LANDMARK_LAYOUT,
                      "notes": "raw, as extract_landmarks.py writes them; normalized in the graph; NaN/inf read as 0"},
        "mask": {"name": "mask", "dtype": "bool", "shape": ["batch", "time"],
                 "layout": "True on real frames, real frames first, padding after; padding values are ignored"}}
    preprocessing = {"in_graph": True, "tta_flip": bool(args.tta_flip)}  # flip averaging, when on, is in the graph
    if prepare is not None:
        state = prepare.state()
        options = prepare.options()
        channels = landmark_feature_dim(state["normalize"], **{flag: options[flag] for flag in HAND_FLAGS})
        preprocessing["landmarks"] = {
            "normalize": state["normalize"], "channels": channels, **options,
            "description": ("left-handed clips mirrored, then " * options["mirror_left_handed"]
                            + ("hybrid_asl.landmarks.make_landmark_features: shoulder-centred and scaled body points, "
                               "hand-local points, velocities, presence flags" + ", hand shapes" * options["hand_shape"]
                               + ", hands in their own frames" * options["hand_frame"]
                               if state["normalize"] else "the raw 162 coordinates")),
            "standardized": state["mean"] is not None}
        if state["mean"] is not None:
            preprocessing["landmarks"]["standardization"] = {
                "note": "(channel - mean) / std, applied in the graph after the normalization; for reference only",
                "mean": [float(v) for v in state["mean"]], "std": [float(v) for v in state["std"]]}
    if gemma_dim is not None and "gemma" in names:
        preprocessing["gemma"] = {"float16_rounding": True}
    learned = learned_positions(inference_weights(checkpoint))
    return {
        "format": METADATA_FORMAT, "exported_by": "export_onnx.py", "exporter": exporter, "opset": opset,
        "torch": torch.__version__, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "checkpoint": {"file": Path(checkpoint_path).name, "sha256": file_sha256(checkpoint_path),
                       "epoch": checkpoint.get("epoch"), "best_epoch": checkpoint.get("best_epoch"),
                       "best_val_top1": checkpoint.get("best_val_top1"), "ema": checkpoint.get("ema") is not None},
        "model": {"model": config["model"], "modality": args.modality, "fusion_type": config.get("fusion_type"),
                  "hidden_dim": config["hidden_dim"], "num_layers": config["num_layers"],
                  "num_heads": config["num_heads"],
                  "positional_encoding": {True: "learned", False: "sinusoidal", None: None}[learned],
                  "max_frames": int(max_frames), "members": config.get("members", 1)},
        "num_frames": int(args.num_frames), "num_classes": len(mapping), "gemma_dim": gemma_dim,
        "inputs": [inputs[name] for name in names],
        "outputs": [{"name": "logits", "dtype": "float32", "shape": ["batch", len(mapping)],
                     "notes": "softmax over the last axis gives the class probabilities"}],
        "sampling": {"rule": SAMPLING_RULE, "pad_to": int(args.num_frames)},
        "preprocessing": preprocessing,
        "extraction": extraction_settings(checkpoint_path, args, names),
        "classes": [{"index": m["index"], "wlasl_id": m["wlasl_id"], "gloss": m["gloss"]} for m in mapping],
    }
