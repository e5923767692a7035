"""An exported .onnx model on onnxruntime and numpy alone: its metadata, clips in, probabilities and top-k out. No
torch is imported here, nor by the modules this one imports (clips, errors, files): a machine that only runs models
needs `pip install onnxruntime "numpy<2"`.

    from hybrid_asl.onnx_model import OnnxModel, top_k
    model = OnnxModel("model.onnx")                       # export_onnx.py wrote it
    clip = model.clip(landmarks="x_landmarks.npy")        # arrays or .npy paths, sampled as training samples them
    probs = model.predict([clip])                         # (clips, classes)
    top_k(probs[0], model.label_mapping, 5)               # [(gloss, wlasl_id, probability)]

A clip is read and sampled by hybrid_asl.clips (stream_array, sample_clip) and padded by clips.pad_clips,
as predict.py's checkpoint path batches it; the graph does the rest (hybrid_asl.onnx_export).
"""
import json

import numpy as np

from hybrid_asl.clips import LANDMARK_DIM, pad_clips, sample_clip, stream_array
from hybrid_asl.errors import DataError
from hybrid_asl.files import require_regular_file

METADATA_KEY = "hybrid_asl"
METADATA_FORMAT = "hybrid-asl-onnx/1"
STREAMS = {"hybrid": ("gemma", "landmarks"), "landmarks": ("landmarks",), "gemma": ("gemma",)}  # graph input order
INSTALL_HINT = 'pip install -r requirements-export.txt (or just: pip install onnxruntime "numpy<2")'


def is_onnx(path):
    return str(path).lower().endswith(".onnx")


def softmax(logits):
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def top_k(probs, label_mapping, k):
    """[(gloss, wlasl_id, probability)] of the k most probable classes; ties in class order."""
    order = np.argsort(-probs, kind="stable")[:k]
    return [(label_mapping[i]["gloss"], label_mapping[i]["wlasl_id"], float(probs[i])) for i in order]


class OnnxModel:
    """An exported model: an onnxruntime session and what its metadata says. The attributes predict.py and live
    recognition read are the same as for a checkpoint: path, modality, num_frames, gemma_dim, label_mapping,
    landmark_frames (frames the training landmarks were sampled to before tracking; None: every frame)."""

    def __init__(self, path, threads=None, batch_size=32):
        require_regular_file(path, "model", "pass a .onnx file written by export_onnx.py")
        try:
            import onnxruntime as ort
        except ImportError:
            raise DataError(f"onnxruntime is not installed, which .onnx models need: {INSTALL_HINT}")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # its warnings about unused initializers are not the user's business
        if threads:
            options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise DataError(f"{path} is not a readable ONNX model ({type(e).__name__}: {str(e).strip()[:120]})")
        stored = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if stored is None:
            raise DataError(f"{path} has no '{METADATA_KEY}' metadata (class names, inputs); export the model with "
                            "export_onnx.py")
        try:
            meta = json.loads(stored)
        except ValueError:
            raise DataError(f"{path}: its '{METADATA_KEY}' metadata is not JSON; export the model again")
        if meta.get("format") != METADATA_FORMAT:
            raise DataError(f"{path} has metadata format {meta.get('format')!r}; this version reads "
                            f"{METADATA_FORMAT}: update the project or export the model again")
        self.path, self.metadata, self.batch_size = str(path), meta, batch_size
        self.modality, self.num_frames, self.gemma_dim = meta["model"]["modality"], meta["num_frames"], meta["gemma_dim"]
        self.label_mapping = meta["classes"]
        self.streams = STREAMS[self.modality]
        self.landmark_frames = meta.get("extraction", {}).get("landmarks", {}).get("num_frames")

    def clip(self, gemma=None, landmarks=None):
        """One clip from arrays or .npy paths -> (gemma (L, D) float16 or None, landmarks (L, 162) float32 or None),
        sampled as training samples it; ClipError for an unusable input."""
        arrays = {}
        for stream, source, width in (("gemma", gemma, self.gemma_dim), ("landmarks", landmarks, LANDMARK_DIM)):
            if stream not in self.streams:
                arrays[stream] = None
            elif source is None:
                raise DataError(f"{self.path} (modality {self.modality}) needs {stream}")
            else:
                arrays[stream] = stream_array(source, width, f"the {stream} array")
        gemma, landmarks, _ = sample_clip(arrays["gemma"], arrays["landmarks"], self.num_frames)
        return gemma, landmarks

    def logits(self, gemma, landmarks, mask):
        """Raw batched inputs (None for a stream the model does not use) -> logits (B, C) float32."""
        given = {"gemma": gemma, "landmarks": landmarks}
        feed = {name: np.ascontiguousarray(given[name], dtype=np.float32) for name in self.streams}
        feed["mask"] = np.ascontiguousarray(mask, dtype=bool)
        return self.session.run(["logits"], feed)[0]

    def predict(self, clips):
        """Sampled clips [(gemma or None, landmarks or None)] -> probabilities (N, C), zero-padded to num_frames
        batch by batch (clips.pad_clips, as predict.py pads them for a checkpoint)."""
        probs = []
        for start in range(0, len(clips), self.batch_size):
            probs.append(softmax(self.logits(*pad_clips(clips[start:start + self.batch_size], self.num_frames))))
        return np.concatenate(probs) if probs else np.zeros((0, len(self.label_mapping)), np.float32)
