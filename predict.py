"""
Predict the gloss of a sign with a trained checkpoint: from a video, from pre-extracted .npy files, or a folder.

    python train_simple.py --demo --output_dir runs/demo    # a run (default folder: runs/<subset>-<timestamp>)
    python predict.py --checkpoint runs/demo/best.pt --landmarks data/demo/landmarks/90001_landmarks.npy \\
        --gemma data/demo/gemma_features/90001_gemma.npy
    python predict.py --checkpoint runs/nslt_100-20261124-120000/best.pt --video clip.mp4      # needs the extras
    python predict.py --checkpoint best.pt --input_dir my_videos --output_csv predictions.csv
    python predict.py --checkpoint best.pt --input_dir data/wlasl/landmarks --gemma_dir data/wlasl/gemma_features
    python export_onnx.py --checkpoint runs/demo/best.pt --output runs/demo/model.onnx
    python predict.py --checkpoint runs/demo/model.onnx --landmarks data/demo/landmarks/90001_landmarks.npy \\
        --gemma data/demo/gemma_features/90001_gemma.npy        # onnxruntime alone: torch is never imported
    python predict.py --checkpoint model.onnx --stream 0        # live, from camera 0 (landmark-only models)
    python predict.py --checkpoint model.onnx --stream clip.mp4 --fast --segments segments.jsonl

From a video, landmarks (MediaPipe, as extract_landmarks.py does) and, for checkpoints with a Gemma stream, Gemma 3
features (as extract_gemma_features.py does) are extracted with the settings recorded in the training data's
extraction_metadata.json files (model, layer, frames per clip); extraction needs
`pip install -r requirements-extract.txt`. Every input then goes through hybrid_asl.clips.sample_clip and the
checkpoint's landmark normalization: the same sampling, masks and normalization as training and evaluate.py.
Prints the top-k glosses with probabilities; --output_csv writes one row per input.

--checkpoint takes a train_simple.py checkpoint (torch) or a .onnx file from export_onnx.py (onnxruntime; the
Gemma encoder is not in it, so --video needs a landmark-only model there). torch is imported only on the checkpoint
path. --stream is live recognition (hybrid_asl.live): a camera index or a video file read as if live, the recognized
gloss printed whenever it changes; landmark-only models only (the Gemma encoder is not live).
"""
import argparse
import os
import sys
from pathlib import Path

import numpy as np

# Nothing imported here imports torch: an .onnx model runs on onnxruntime alone. The checkpoint path imports torch
# where it needs it (CheckpointModel, predict_clips, the Gemma extractor).
from hybrid_asl import live
from hybrid_asl.cli import HelpFormatter, int_range, resolve_device, run_cli
from hybrid_asl.clips import LANDMARK_DIM, sample_clip, stream_array
from hybrid_asl.errors import INSTALL_HINT, ClipError, DataError
from hybrid_asl.extraction import read_metadata
from hybrid_asl.files import atomic_write_text, check_output_path, csv_text, not_a_regular_file
from hybrid_asl.onnx_model import OnnxModel, is_onnx, top_k
from hybrid_asl.run_folder import recorded_dir
from hybrid_asl.video import VIDEO_EXTENSIONS, VideoError, cv2_missing  # importable without OpenCV


def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--checkpoint", required=True,
                   help="best.pt or last.pt written by train_simple.py, or a .onnx file written by export_onnx.py")
    g = p.add_argument_group("input (one of: --video, --landmarks/--gemma, --input_dir, --stream)")
    g.add_argument("--video", default=None, help="a video file (.mp4, .mov, ...): features are extracted from it")
    g.add_argument("--start_frame", type=int, default=1, help="with --video: first frame, 1-indexed at 25 fps (WLASL)")
    g.add_argument("--end_frame", type=int, default=-1, help="with --video: last frame at 25 fps, -1 = to the end")
    g.add_argument("--landmarks", default=None, help="pre-extracted (T, 162) landmarks .npy (extract_landmarks.py)")
    g.add_argument("--gemma", default=None, help="(T, D) Gemma features .npy (extract_gemma_features.py)")
    g.add_argument("--input_dir", default=None,
                   help="a folder of videos, or of {id}_landmarks.npy (and/or {id}_gemma.npy) files: one answer each")
    g.add_argument("--gemma_dir", default=None,
                   help="with --input_dir of .npy files: where the {id}_gemma.npy files are (default: --input_dir)")
    g.add_argument("--stream", default=None,
                   help="live recognition: a camera index (0, 1, ...) or a video file read as if live")
    g = p.add_argument_group("feature extraction from videos (default: what the training features were made with)")
    g.add_argument("--gemma_model", default=None,
                   help="Gemma 3 model name or local folder (default: 'model' in the training features' metadata)")
    g.add_argument("--gemma_layer", default=None, choices=("projector", "vision"),
                   help="feature layer (default: 'layer' in the training features' metadata)")
    g = p.add_argument_group("output")
    g.add_argument("--top_k", type=int_range(1, 100000), default=5, help="how many glosses to show per input")
    g.add_argument("--output_csv", default=None, help="one row per input: input, top-k glosses and probabilities")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (a .onnx model runs on the CPU)")
    live.add_stream_args(p)
    return p, p.parse_args(argv)


# ----------------------------------------------------------------------------------------------------------------
# The model: a checkpoint (torch) or an exported .onnx file (onnxruntime, hybrid_asl.onnx_model.OnnxModel)

class CheckpointModel:
    """A train_simple.py checkpoint with OnnxModel's attributes (path, modality, num_frames, gemma_dim,
    label_mapping, landmark_frames, predict(clips)), so that everything after loading serves both."""

    def __init__(self, path, device, threads=None):
        import torch
        from hybrid_asl.checkpoint import load_trained
        if threads:
            torch.set_num_threads(threads)  # live: MediaPipe needs the other cores
        self.model, self.prepare, self.args, checkpoint = load_trained(path, device)
        # the extraction metadata next to the training data says how to turn a video into what the model saw
        for key in ("data_dir", "landmarks_dir", "gemma_features_dir"):
            setattr(self.args, key, recorded_dir(path, self.args, getattr(self.args, key)))
        self.path, self.device = str(path), device
        self.modality, self.num_frames = self.args.modality, self.args.num_frames
        self.label_mapping, self.gemma_dim = checkpoint["label_mapping"], checkpoint["gemma_dim"]

    @property
    def landmark_frames(self):
        """Frames per clip the training landmarks were sampled to before tracking (None: every frame)."""
        folder = self.args.landmarks_dir or Path(self.args.data_dir) / "landmarks"
        return read_metadata(folder).get("settings", {}).get("num_frames")

    def predict(self, clips):
        return predict_clips(self.model, self.prepare, self.args, clips, self.device)


def load_model(parser, cli, threads=None):
    """--checkpoint: an .onnx file (onnxruntime; torch is never imported) or a checkpoint (torch, on --device)."""
    if is_onnx(cli.checkpoint):
        if cli.device not in ("auto", "cpu"):
            raise DataError(f"--device {cli.device}: a .onnx model runs on onnxruntime's CPU provider here; leave "
                            "--device out (or use the checkpoint)")
        return OnnxModel(cli.checkpoint, threads)
    return CheckpointModel(cli.checkpoint, resolve_device(parser, cli.device), threads)


# ----------------------------------------------------------------------------------------------------------------
# From a video to (gemma, landmarks) arrays, with the extraction code and the training data's settings

def make_video_reader(model, cli):
    """A function video path -> (gemma (T, D) or None, landmarks (T, 162) or None) for this model's streams.

    Checks the extras first, so a missing package is one line before any work. The Gemma model is loaded once.
    """
    from hybrid_asl.mediapipe_landmarks import extract_video_landmarks, import_mediapipe, quiet_worker
    if model.modality != "landmarks" and isinstance(model, OnnxModel):
        raise DataError(f"{cli.checkpoint} (modality {model.modality}) needs Gemma features, and the Gemma encoder "
                        "is not part of the .onnx file: pass --gemma x_gemma.npy (extract_gemma_features.py), or use "
                        "the checkpoint")
    if cv2_missing():
        raise DataError(f"OpenCV is not installed, so videos cannot be read: {INSTALL_HINT}")
    landmark_frames = gemma = None
    if model.modality in ("hybrid", "landmarks"):
        quiet_worker()
        import_mediapipe()
        # MediaPipe tracks across frames, so extract the frames training's landmarks were extracted from.
        landmark_frames = model.landmark_frames
    if model.modality in ("hybrid", "gemma"):
        gemma = load_gemma_extractor(model.args, cli, model.gemma_dim, model.device)

    def read_video(path, start_frame=1, end_frame=-1):
        landmarks = features = None
        if model.modality in ("hybrid", "landmarks"):
            landmarks = extract_video_landmarks(str(path), start_frame, end_frame, landmark_frames)  # quiet itself
        if gemma is not None:
            features = gemma(str(path), start_frame, end_frame)
        return features, landmarks

    return read_video


def load_gemma_extractor(args, cli, gemma_dim, device):
    """video path -> (T, D) float32 Gemma features, made as extract_gemma_features.py made the training features."""
    import torch
    features_dir = Path(args.gemma_features_dir or Path(args.data_dir) / "gemma_features")
    meta = read_metadata(features_dir)
    model_name = cli.gemma_model or meta.get("model")
    recorded = meta.get("layer") if meta.get("layer") in ("projector", "vision") else None
    layer = cli.gemma_layer or recorded or ("projector" if cli.gemma_model else None)
    if model_name is None:
        raise DataError(f"{cli.checkpoint} uses Gemma features, but {features_dir / 'extraction_metadata.json'} "
                        "(which names the model and layer they came from) is not here: pass --gemma_model "
                        "(e.g. google/gemma-3-4b-it) and --gemma_layer, or --gemma x_gemma.npy")
    if layer is None:
        raise DataError(f"the training features came from {model_name!r} (layer {meta.get('layer')!r}), which "
                        "predict.py cannot re-create from a video; pass --gemma/--gemma_dir files made the same way")
    from hybrid_asl.gemma_vision import frame_features, load_vision_model, preprocess, preprocessing
    from hybrid_asl.video import read_clip_frames
    num_frames = int(meta.get("num_frames") or args.num_frames)
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16  # extraction's "auto"
    else:
        dtype = torch.float32
    try:
        tower, projector, config, model_dir = load_vision_model(model_name, layer, device, dtype)
    except DataError as e:  # its hints name extract_gemma_features.py's flag
        raise DataError(str(e).replace("--model_name", "--gemma_model"))
    width = config.text_config.hidden_size if layer == "projector" else config.vision_config.hidden_size
    if width != gemma_dim:
        raise DataError(f"{model_name} --gemma_layer {layer} gives {width}-wide features but {cli.checkpoint} was "
                        f"trained on {gemma_dim}-wide ones; use the model and layer of the training features")
    spec = preprocessing(model_dir, config)

    def features(path, start_frame, end_frame):
        frames, _ = read_clip_frames(path, start_frame, end_frame, num_frames)
        x = preprocess(torch.from_numpy(frames).to(device), spec, dtype)
        return torch.cat([frame_features(tower, projector, x[i:i + 8]) for i in range(0, len(x), 8)]).cpu().numpy()

    return features


# ----------------------------------------------------------------------------------------------------------------
# From arrays to probabilities, exactly as training reads a clip

def read_clip(gemma_source, landmarks_source, num_frames, gemma_dim, video=None):
    """One input -> the clip training would have read: each stream from a .npy path or from an array extracted
    from `video` (clips.stream_array), then clips.sample_clip. Messages name the user's own files.

    Returns (gemma (L, D) float16 or None, landmarks (L, 162) float32 or None); raises ClipError for a bad input.
    """
    arrays, names = {}, {}
    for stream, source, width in (("gemma", gemma_source, gemma_dim), ("landmarks", landmarks_source, LANDMARK_DIM)):
        if source is None:
            arrays[stream] = names[stream] = None
            continue
        names[stream] = f"the {stream} extracted from {video}" if isinstance(source, np.ndarray) else str(source)
        try:
            arrays[stream] = stream_array(source, width, names[stream])
        except ClipError as e:
            raise explained(e, stream, source, gemma_dim) from None
    gemma, landmarks, nonfinite = sample_clip(arrays["gemma"], arrays["landmarks"], num_frames, names["gemma"],
                                              names["landmarks"])
    if nonfinite:  # zeroed as training does; said once, since a tracker that writes NaN should be fixed
        bad = ~np.isfinite(arrays["landmarks"])
        print(f"warning: {names['landmarks']}: {int(bad.sum())} NaN/inf landmark values in "
              f"{int(bad.any(axis=1).sum())} of {len(bad)} frames set to 0 (not detected), as training does",
              file=sys.stderr)
    return gemma, landmarks


def explained(error, stream, source, gemma_dim):
    """A ClipError with a hint of what to do; `swapped` is set when the widths say the landmarks and the Gemma
    features were given the other way round."""
    text, width = str(error), None
    if error.reason == "bad_shape":
        try:
            width = (source if isinstance(source, np.ndarray)
                     else np.load(source, mmap_mode="r", allow_pickle=False)).shape[-1]
        except Exception:
            pass
    swapped = gemma_dim != LANDMARK_DIM and (stream, width) in (("gemma", LANDMARK_DIM), ("landmarks", gemma_dim))
    if error.reason in ("unreadable", "empty"):
        tool = "extract_gemma_features.py" if stream == "gemma" else "extract_landmarks.py"
        text += f"; re-create it with {tool}"
    out = ClipError(error.reason, text)
    out.swapped = swapped
    return out


def predict_clips(model, prepare, args, clips, device):
    """Clips [(gemma or None, landmarks or None)] from read_clip -> probabilities (N, C), one batch at a time."""
    import torch
    from hybrid_asl.batches import clips_batch
    from hybrid_asl.engine import amp_context, inference_logits
    probs = []
    for start in range(0, len(clips), args.batch_size):
        batch = clips_batch(clips[start:start + args.batch_size], args.num_frames, device)
        with torch.no_grad(), amp_context(device):
            probs.append(torch.softmax(inference_logits(model, prepare, batch, args.tta_flip), dim=1).cpu())
    return torch.cat(probs).numpy()


def hands_seen(landmarks):
    """Frames of a raw (T, 162) landmark array in which MediaPipe found at least one hand."""
    return int((np.abs(landmarks[:, :126]) > 0).any(axis=1).sum())


# ----------------------------------------------------------------------------------------------------------------
# The inputs

def dir_inputs(cli, model):
    """[(name, kind, gemma path or None, landmarks path or None)] for --input_dir: videos, or .npy files by id."""
    folder = Path(cli.input_dir)
    if not folder.is_dir():
        raise DataError(f"--input_dir {folder} is not a folder")
    names = sorted(os.listdir(folder))
    videos = [folder / n for n in names if n.lower().endswith(VIDEO_EXTENSIONS)]
    suffix = "_gemma.npy" if model.modality == "gemma" else "_landmarks.npy"
    ids = [n[:-len(suffix)] for n in names if n.endswith(suffix)]
    if ids:
        gemma_dir = Path(cli.gemma_dir or folder)
        if model.modality == "hybrid" and not any(gemma_dir.glob("*_gemma.npy")):
            raise DataError(f"{cli.checkpoint} (modality hybrid) also needs Gemma features: no *_gemma.npy in "
                            f"{gemma_dir}; pass --gemma_dir (extract_gemma_features.py writes them)")
        return [(i, "npy", gemma_dir / f"{i}_gemma.npy" if model.modality != "landmarks" else None,
                 folder / f"{i}_landmarks.npy" if model.modality != "gemma" else None) for i in ids]
    if videos:
        return [(v.name, "video", v, None) for v in videos]
    raise DataError(f"--input_dir {folder} holds no video ({', '.join(VIDEO_EXTENSIONS)}) and no *{suffix} file")


def single_input(cli, model):
    """The one input of --video or --landmarks/--gemma, checked against what the checkpoint needs."""
    if cli.video:
        if cli.landmarks or cli.gemma:
            raise DataError("give --video or --landmarks/--gemma, not both")
        if not_a_regular_file(cli.video):
            raise DataError(f"--video {cli.video} {not_a_regular_file(cli.video)}")
        return cli.video, "video", cli.video, None
    needs_gemma, needs_landmarks = model.modality != "landmarks", model.modality != "gemma"
    if needs_landmarks and not cli.landmarks:
        raise DataError(f"{cli.checkpoint} (modality {model.modality}) needs landmarks: pass --landmarks "
                        "x_landmarks.npy (extract_landmarks.py), or --video")
    if needs_gemma and not cli.gemma:
        raise DataError(f"{cli.checkpoint} (modality {model.modality}) also needs Gemma features: pass --gemma "
                        "x_gemma.npy (extract_gemma_features.py), or --video to extract both")
    for flag, path, used in (("--landmarks", cli.landmarks, needs_landmarks), ("--gemma", cli.gemma, needs_gemma)):
        if path and not used:
            print(f"note: {flag} ignored: the checkpoint uses modality {model.modality}")
        elif path and not_a_regular_file(path):
            raise DataError(f"{flag} {path} {not_a_regular_file(path)}")
    gemma, landmarks = (cli.gemma if needs_gemma else None), (cli.landmarks if needs_landmarks else None)
    return landmarks or gemma, "npy", gemma, landmarks


def explain(error, model, batch_mode):
    """A bad input file -> one line; a width mismatch also says what the checkpoint was trained on (or, when the
    widths are each other's, that the two files look swapped)."""
    text = str(error)
    if getattr(error, "swapped", False):
        return text + ("; is it the other stream's file (landmarks and Gemma features mixed up)?" if batch_mode
                       else "; are --landmarks and --gemma swapped?")
    if error.reason == "bad_shape" and "features per frame" in text:
        streams = ([f"{LANDMARK_DIM}-wide landmarks"] if model.modality != "gemma" else []) + \
                  ([f"{model.gemma_dim}-wide Gemma features"] if model.modality != "landmarks" else [])
        text += f" (the feature dimension does not match {model.path}: trained on {' and '.join(streams)})"
    return text


def prepare_input(kind, gemma_source, landmark_source, read_video, window, model, name):
    """One input -> the sampled clip training would have read: extract from a video first, if it is one."""
    if kind == "video":
        gemma_source, landmark_source = read_video(gemma_source, *window)
        if landmark_source is not None and hands_seen(landmark_source) == 0:
            print(f"warning: {name}: no hand detected in any of its {len(landmark_source)} frames; "
                  "the prediction is a guess")
    return read_clip(gemma_source, landmark_source, model.num_frames, model.gemma_dim, video=name)


def main(argv=None):
    parser, cli = get_args(argv)
    given = [flag for flag, value in (("--video", cli.video), ("--landmarks/--gemma", cli.landmarks or cli.gemma),
                                      ("--input_dir", cli.input_dir), ("--stream", cli.stream)) if value]
    if len(given) != 1:
        parser.error("give one input: --video, --landmarks (and --gemma), --input_dir or --stream")
    if cli.stream is not None:
        return stream(parser, cli)
    if cli.video and cli.start_frame < 1:
        raise DataError(f"--start_frame {cli.start_frame}: frames are 1-indexed (the first frame is 1)")
    if cli.video and cli.end_frame != -1 and cli.end_frame < cli.start_frame:
        raise DataError(f"--end_frame {cli.end_frame} is before --start_frame {cli.start_frame}; give an "
                        "--end_frame at or after it, or -1 for the end of the video")
    # the output never replaces one of this command's inputs (checked again below against a folder's files)
    given_inputs = [("--checkpoint", cli.checkpoint), ("--video", cli.video), ("--landmarks", cli.landmarks),
                    ("--gemma", cli.gemma)]
    check_output_path(cli.output_csv, "--output_csv", given_inputs)
    model = load_model(parser, cli)
    label_mapping = model.label_mapping
    inputs = dir_inputs(cli, model) if cli.input_dir else [single_input(cli, model)]
    batch_mode = cli.input_dir is not None
    check_output_path(cli.output_csv, "--output_csv",
                      [("--input_dir", path) for _, _, g, l in inputs for path in (g, l) if path is not None])
    read_video = make_video_reader(model, cli) if any(k == "video" for _, k, _, _ in inputs) else None

    # ---- every input -> the sampled clip that training would have read ---------------------------------------
    results = []  # per input, in input order: (the clip, "") or (None, why it failed)
    window = (1, -1) if batch_mode else (cli.start_frame, cli.end_frame)
    for name, kind, gemma_source, landmark_source in inputs:
        try:
            results.append((prepare_input(kind, gemma_source, landmark_source, read_video, window, model, name), ""))
            continue
        except ClipError as e:
            reason = explain(e, model, batch_mode)
        except (VideoError, ValueError) as e:
            reason = str(e)
        except DataError:
            raise  # a missing package or a settings problem: the same for every input
        except Exception as e:  # a decoder or MediaPipe crash on one video must not stop a folder
            if not batch_mode:
                raise
            reason = f"{type(e).__name__}: {str(e)[:160]}"
        if not batch_mode:
            raise DataError(reason)
        results.append((None, reason))
    kept = [clip for clip, _ in results if clip is not None]
    probs = iter(model.predict(kept) if kept else [])

    # ---- report: one row per input, in input order -----------------------------------------------------------
    k = min(cli.top_k, len(label_mapping))
    rows = []
    for (name, *_), (clip, reason) in zip(inputs, results):
        if clip is None:
            print(f"warning: {name} skipped: {reason}", file=sys.stderr)
            rows.append({"input": name, "frames": 0, "error": reason})
            continue
        p = next(probs)
        if not np.isfinite(p).all():  # never print or write nan: say what happened instead
            reason = "the model gave non-finite scores for this input (NaN/inf); is the checkpoint sound?"
            if not batch_mode:
                raise DataError(f"{name}: {reason}")
            print(f"warning: {name} skipped: {reason}", file=sys.stderr)
            rows.append({"input": name, "frames": 0, "error": reason})
            continue
        best = top_k(p, label_mapping, k)
        frames = len(clip[1] if clip[1] is not None else clip[0])
        rows.append({"input": name, "frames": frames, **{f"{key}_{r}": value for r, (gloss, wlasl_id, prob)
                     in enumerate(best, 1) for key, value in (("gloss", gloss), ("wlasl_id", wlasl_id),
                                                              ("prob", round(prob, 5)))}, "error": ""})
        if batch_mode:
            print(f"{name}: " + "  ".join(f"{gloss} {prob:.3f}" for gloss, _, prob in best))
        else:
            print(f"{name}: top-{k} of {len(label_mapping)} glosses ({frames} frames)")
            for r, (gloss, wlasl_id, prob) in enumerate(best, 1):
                print(f"  {r}. {gloss:<20} {prob:6.3f}   (class {wlasl_id})")
    predicted = sum(1 for row in rows if not row["error"])
    failed = len(inputs) - predicted
    if batch_mode:
        print(f"predicted {predicted} of {len(inputs)} inputs" + (f"; {failed} skipped" if failed else ""))
    if cli.output_csv:
        fields = ["input", "frames"] + [f"{key}_{r}" for r in range(1, k + 1) for key in ("gloss", "wlasl_id", "prob")]
        atomic_write_text(cli.output_csv, csv_text(rows, fields + ["error"]))
        print(f"wrote {cli.output_csv}")
    return 0 if predicted else 1


def stream(parser, cli):
    """--stream: live recognition with a landmark-only model (hybrid_asl.live)."""
    if cli.output_csv is not None:
        raise DataError("--output_csv is for clip predictions; with --stream, --segments x.csv (or x.jsonl) writes "
                        "the segments")
    check_output_path(cli.segments, "--segments", [("--checkpoint", cli.checkpoint), ("--stream", cli.stream)])
    return live.stream_main(load_model(parser, cli, threads=cli.threads), cli)


def run(argv=None):
    try:
        return run_cli(main, argv)
    except BrokenPipeError:  # stdout's reader went away (`--stream 0 | head`): stop quietly, as shell tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's flush at exit would fail again
        return 141  # 128 + SIGPIPE


if __name__ == "__main__":
    sys.exit(run())
