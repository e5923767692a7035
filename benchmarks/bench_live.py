"""
bench_live.py - live recognition speed on this machine (a benchmark, not a test): end-to-end frames per second
(decode + MediaPipe Holistic + the model) and the model's share of the time.

    python benchmarks/bench_live.py                            # real clips of ../shared/data/videos
    python benchmarks/bench_live.py --torch --hop 1 2          # the checkpoint (torch) backend too

Landmark-only models of three sizes, as train_simple.py builds them for --modality landmarks by default (an ensemble
of 3 on the 641 channels with hand shapes and hand frames, left-handed clips mirrored; --ensemble 1 --no_hand_shape
--no_hand_frame --no_mirror_left_handed: one model on 453 channels, as before 2026-12-04), with random
weights (speed does not depend on them), are written as checkpoints, exported with hybrid_asl.onnx_export, and run
through hybrid_asl.live.run_stream as fast as possible (predict.py --stream --fast), with the model on 1 thread (the
live default: MediaPipe needs the other cores).
The model's share is the time spent deciding (sampling the window, padding, the model) over the wall time.
"""
import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as `python benchmarks/bench_live.py` from anywhere
from hybrid_asl import live  # noqa: E402
from hybrid_asl.checkpoint import CHECKPOINT_FORMAT, save_checkpoint  # noqa: E402
from hybrid_asl.landmarks import LandmarkPreprocessor, landmark_feature_dim  # noqa: E402
from hybrid_asl.onnx_export import export_checkpoint  # noqa: E402
from hybrid_asl.onnx_model import OnnxModel  # noqa: E402
from hybrid_asl.recipe import build_model  # noqa: E402

VIDEOS = ROOT.parent / "shared" / "data" / "videos"
DEFAULT_VIDEOS = [VIDEOS / "wlasl_raw" / "00335.mp4", VIDEOS / "msl150" / "doctor_001.mp4",
                  VIDEOS / "pose_format_test" / "test_video.mp4"]
SIZES = {"demo size (hidden 128, 4 heads, 10 classes)": (128, 4, 10),
         "default size (hidden 512, 8 heads, 100 classes)": (512, 8, 100),
         "nslt_2000 size (hidden 512, 8 heads, 2000 classes)": (512, 8, 2000)}


def make_models(folder, num_frames, members, options):
    """{size: (checkpoint, .onnx)}: landmark-only models as train_simple.py writes them (standardized channels);
    options: the preprocessor's PREPARE_FLAGS."""
    out = {}
    channels = landmark_feature_dim(True, options["hand_shape"], options["hand_frame"])
    for k, (name, (hidden, heads, classes)) in enumerate(SIZES.items()):
        config = dict(model="simple", num_classes=classes, gemma_feature_dim=None, hidden_dim=hidden, dropout=0.5,
                      landmark_dim=channels, num_layers=2, num_heads=heads, encoder_dropout=0.1,
                      use_sinusoidal_pos=True, drop_path=0.1, max_len=512, fusion_type="concat", modality="landmarks",
                      members=members)
        torch.manual_seed(k)
        prepare = LandmarkPreprocessor(True, torch.zeros(channels), torch.ones(channels), **options)
        args = dict(modality="landmarks", num_frames=num_frames, model="simple")
        path = Path(folder) / f"m{k}.pt"
        save_checkpoint({"format": CHECKPOINT_FORMAT, "model_config": config,
                         "landmark_normalization": prepare.state(), "model": build_model(config).state_dict(),
                         "ema": None, "epoch": 1, "best_epoch": 1, "best_val_top1": 0.0, "args": args,
                         "label_mapping": [{"index": i, "wlasl_id": i, "gloss": f"g{i}"} for i in range(classes)],
                         "num_classes": classes, "gemma_dim": None}, path)
        export_checkpoint(path, path.with_suffix(".onnx"), check=False)
        out[name] = (path, path.with_suffix(".onnx"))
    return out


def load(backend, path, threads):
    if backend == "onnxruntime":
        return OnnxModel(path, threads)
    import predict  # the checkpoint backend of predict.py --stream
    return predict.CheckpointModel(path, torch.device("cpu"), threads)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", nargs="+", default=[str(v) for v in DEFAULT_VIDEOS])
    p.add_argument("--hop", type=int, nargs="+", default=[1, 2], help="decide every N frames (live default 2)")
    p.add_argument("--threads", type=int, default=1, help="model threads")
    p.add_argument("--torch", action="store_true", help="also time the checkpoints on torch")
    p.add_argument("--num_frames", type=int, default=64,
                   help="frames per decision (train_simple.py's default for landmarks alone: 64; 16 before)")
    p.add_argument("--ensemble", type=int, default=3, help="members (train_simple.py's default for landmarks alone)")
    p.add_argument("--no_hand_shape", action="store_true", help="without the 50 hand-shape channels (before 2026-12-04)")
    p.add_argument("--no_hand_frame", action="store_true", help="without the 138 hand-frame channels (before 2026-12-05)")
    p.add_argument("--no_mirror_left_handed", action="store_true", help="no mirroring of left-handed clips (before "
                   "2026-12-05)")
    cli = p.parse_args()
    missing = [v for v in cli.videos if not os.path.isfile(v)]
    if missing:
        sys.exit(f"error: {missing[0]} not found (the default clips are in ../shared/data/videos)")
    options = dict(hand_shape=not cli.no_hand_shape, hand_frame=not cli.no_hand_frame,
                   mirror_left_handed=not cli.no_mirror_left_handed)  # the preprocessor's PREPARE_FLAGS
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} at the start; torch {torch.__version__}; "
          f"{time.strftime('%Y-%m-%d')}; videos: {', '.join(Path(v).name for v in cli.videos)}; "
          f"{cli.num_frames} frames per decision; ensemble of {cli.ensemble}, "
          f"{landmark_feature_dim(True, options['hand_shape'], options['hand_frame'])} channels"
          f"{', left-handed clips mirrored' if options['mirror_left_handed'] else ''}")
    with tempfile.TemporaryDirectory() as folder:
        models = make_models(folder, cli.num_frames, cli.ensemble, options)
        print("| model | backend | hop | end-to-end frames/s | MediaPipe ms/frame | model ms/decision | model share |")
        print("|---|---|---:|---:|---:|---:|---:|")
        for name, (checkpoint, onnx_path) in models.items():
            backends = [("onnxruntime", onnx_path)] + ([("torch", checkpoint)] if cli.torch else [])
            for backend, path in backends:
                model = load(backend, path, cli.threads)
                for hop in cli.hop:
                    frames = wall = extract = decide = calls = 0
                    for video in cli.videos:
                        s = live.run_stream(model, video, live.LiveConfig(hop=hop), realtime=False)
                        timed = s["frames"] - 1  # the first frame loads MediaPipe's graphs: not timed
                        frames, wall = frames + timed, wall + s["wall_seconds"]
                        extract += s["extract_ms_per_frame"] * timed
                        decide += s["model_ms_per_decision"] * s["model_calls"]
                        calls += s["model_calls"]
                    print(f"| {name} | {backend} | {hop} | {frames / wall:.1f} | {extract / frames:.1f} | "
                          f"{decide / max(calls, 1):.2f} | {decide / 10 / wall:.1f}% |", flush=True)
    print(f"load average {', '.join(f'{x:.1f}' for x in os.getloadavg())} at the end")


if __name__ == "__main__":
    main()
