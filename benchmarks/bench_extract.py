"""
bench_extract.py - throughput of the two extraction steps on the real shared clips (a benchmark, not a test).

    python bench_extract.py --gemma --out bench_gemma.json          # CUDA: full-size Gemma 3 4B vision tower
    python bench_extract.py --gemma --variants auto:0,cudnn:128,flash:128 --attention best --out bench_gemma.json
    python bench_extract.py --landmarks --out bench_landmarks.json  # CPU: MediaPipe Holistic, --workers 1 and 2

Gemma: the full-size Gemma 3 4B vision tower (SigLIP: hidden 1152, 27 layers, 16 heads, MLP 4304, 896 px, patch 14,
4096 tokens) and projector (256 tokens of width 2560) with random weights in bf16, SDPA attention, run end to end
from the video files exactly as extract_gemma_features.py runs (background decoding, GPU preprocessing, fixed-size
batches), for each batch size: frames/s and peak GPU memory (weights included). The shared clips are repeated to
get enough frames. --variants first times the tower alone on ready-made pixels of real frames for each SDPA kernel
and head padding (extract_gemma_features.py --attention / --pad_head_dim); --attention best then runs end to end
with the fastest. --compile runs the tower under torch.compile.
Landmarks: extract_landmarks.py's per-clip function over every frame of the shared clips with 1 and 2 processes.
"""
import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as `python benchmarks/bench_extract.py` from anywhere
from hybrid_asl import gemma_vision as gv  # noqa: E402
from hybrid_asl.video import read_clip_frames  # noqa: E402

VIDEOS = ROOT.parent / "shared" / "data" / "videos"
GIB = 1024 ** 3

FULL_VISION = dict(model_type="siglip_vision_model", hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                   num_attention_heads=16, image_size=896, patch_size=14, layer_norm_eps=1e-6, vision_use_head=False)
FULL_MM_TOKENS = 256  # the projector pools 64x64 patches to 16x16 tokens
FULL_TEXT = dict(hidden_size=2560, intermediate_size=256, num_hidden_layers=1, num_attention_heads=8,
                 num_key_value_heads=4, head_dim=256, vocab_size=1024)  # only its width matters: never built


def shared_clips(videos=VIDEOS):
    clips = sorted(Path(videos).glob("*/*.mp4"))
    if not clips:
        sys.exit(f"error: no clips under {videos}; the benchmark needs ../shared beside the checkout (or --videos)")
    return [str(p) for p in clips]


def bench_gemma(args):
    import extract_gemma_features as eg
    from transformers import Gemma3Config
    device = torch.device("cuda")
    dtype = torch.bfloat16
    config = Gemma3Config(vision_config=FULL_VISION, text_config=FULL_TEXT, mm_tokens_per_image=FULL_MM_TOKENS)
    tower, projector = gv.build_vision_model(config, "projector", device, dtype)
    params = sum(p.numel() for p in tower.parameters()) + sum(p.numel() for p in projector.parameters())
    spec = {"image_size": config.vision_config.image_size, "rescale_factor": 1 / 255, "image_mean": [0.5] * 3,
            "image_std": [0.5] * 3}
    clips = shared_clips(args.videos)
    result = {"device": torch.cuda.get_device_name(device), "torch": torch.__version__,
              "transformers": __import__("transformers").__version__, "parameters": params,
              "weights_gb": round(torch.cuda.memory_allocated(device) / GIB, 2), "num_frames": args.num_frames,
              "readers": args.readers, "attention": args.attention, "end_to_end": [], "model_only": []}
    print(f"{result['device']}: tower + projector {params / 1e6:.0f} M parameters, {result['weights_gb']} GB bf16")

    def run(batch_size, num_clips, attention, model):
        jobs = [dict(video_id=f"c{i}", path=clips[i % len(clips)], start_frame=1, end_frame=None)
                for i in range(num_clips)]
        ns = argparse.Namespace(num_frames=args.num_frames, readers=args.readers, batch_size=batch_size,
                                attention=attention)
        frames = [0]
        torch.cuda.synchronize()
        start = time.perf_counter()
        eg.extract_corpus(jobs, model, projector, spec, ns, device, dtype, np.float16,
                          lambda v, f: frames.__setitem__(0, frames[0] + len(f)), lambda v, r: sys.exit(r))
        torch.cuda.synchronize()
        return frames[0], time.perf_counter() - start

    # pixels of real frames: random pixels ran markedly slower in a first H100 run (more power drawn, lower clocks?)
    real, _ = read_clip_frames(clips[0], num_frames=args.num_frames)
    real = gv.preprocess(torch.from_numpy(real).to(device), spec, dtype)

    def model_only(batch_size, attention, model, seconds, random=False):
        x = real.repeat((batch_size + len(real) - 1) // len(real), 1, 1, 1)[:batch_size]
        x = torch.randn_like(x) if random else x
        with gv.attention_backends(attention):
            for _ in range(3):
                gv.frame_features(model, projector, x)
            torch.cuda.synchronize()
            n, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                gv.frame_features(model, projector, x)
                n += 1
            torch.cuda.synchronize()
        return n * batch_size / (time.perf_counter() - start)

    best = (args.attention, args.pad_head_dim)
    if args.variants:
        scores = {}
        for variant in args.variants.split(","):
            attention, pad = variant.split(":")
            gv.use_padded_attention(tower, int(pad))
            fps = model_only(16, attention, tower, 3.0)
            scores[(attention, int(pad))] = fps
            result["model_only"].append({"attention": attention, "pad_head_dim": int(pad), "batch_size": 16,
                                         "frames_per_s": round(fps, 1)})
            print(f"model only  attention={attention:9s} pad_head_dim={pad:>3s} batch 16: {fps:6.1f} frames/s "
                  f"({fps * 5.4:.0f} TFLOP/s at ~5.4 TFLOP/frame)")
        if args.attention == "best":
            best = max(scores, key=scores.get)
        gv.use_padded_attention(tower, 0)  # the variants above leave the last one's padding on
        fps = model_only(16, "auto", tower, 3.0, random=True)
        result["model_only"].append({"attention": "auto", "pad_head_dim": 0, "batch_size": 16, "random_pixels": True,
                                     "frames_per_s": round(fps, 1)})
        print(f"model only  attention=auto      pad_head_dim=  0 batch 16: {fps:6.1f} frames/s on random pixels")
    result["attention"], result["pad_head_dim"] = best
    gv.use_padded_attention(tower, best[1])
    print(f"end to end with --attention {best[0]} --pad_head_dim {best[1]}")

    model = torch.compile(tower, dynamic=False) if args.compile else tower
    run(min(args.batch_sizes), 2, best[0], model)  # warm-up: cuDNN/compile, decoder threads
    for bs in args.batch_sizes:
        if args.compile:
            run(bs, max(2, bs // args.num_frames + 1), best[0], model)  # compile this shape outside the timing
        torch.cuda.reset_peak_memory_stats(device)
        num_clips = max(args.min_clips, (args.frames_per_point + args.num_frames - 1) // args.num_frames)
        per_batch = max(1, bs // args.num_frames)  # whole batches only: no odd last batch to recompile for
        num_clips = (num_clips + per_batch - 1) // per_batch * per_batch
        frames, seconds = run(bs, num_clips, best[0], model)
        peak = torch.cuda.max_memory_allocated(device) / GIB
        row = {"batch_size": bs, "frames": frames, "seconds": round(seconds, 2),
               "frames_per_s": round(frames / seconds, 1), "peak_gpu_memory_gb": round(peak, 2),
               "peak_reserved_gb": round(torch.cuda.max_memory_reserved(device) / GIB, 2),
               "compiled": bool(args.compile), "attention": best[0], "pad_head_dim": best[1]}
        result["end_to_end"].append(row)
        print(f"end to end  batch {bs:2d}: {row['frames_per_s']:6.1f} frames/s  peak {peak:.2f} GB "
              f"({frames} frames in {seconds:.1f} s{', compiled' if args.compile else ''})")
    result["auto_batch_size_4gb_card"] = auto_batch_for(config, dtype, 4 * GIB)
    return result


def auto_batch_for(config, dtype, card_bytes):
    """The batch extract_gemma_features.py would pick on a card of this size (CUDA context ~0.3 GB, weights ~0.83 GB)."""
    room = card_bytes - 0.3 * GIB - 0.84 * GIB - 0.35 * GIB
    batch = 1
    while batch < 32 and batch * 2 * gv.per_frame_bytes(config, dtype) <= room:
        batch *= 2
    return batch


def landmark_clip(path):
    from hybrid_asl.mediapipe_landmarks import extract_video_landmarks
    return len(extract_video_landmarks(path))


def bench_landmarks(args):
    import multiprocessing
    from hybrid_asl.mediapipe_landmarks import import_mediapipe
    import_mediapipe()  # fails early without the extras
    clips = shared_clips(args.videos)
    result = {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
              "load_average_before": os.getloadavg(), "clips": len(clips), "runs": []}
    for workers in (1, 2):
        start = time.perf_counter()
        if workers == 1:
            frames = sum(map(landmark_clip, clips))
        else:
            with multiprocessing.get_context("spawn").Pool(workers) as pool:
                frames = sum(pool.imap_unordered(landmark_clip, clips))
        seconds = time.perf_counter() - start
        result["runs"].append({"workers": workers, "frames": frames, "seconds": round(seconds, 1),
                               "frames_per_s": round(frames / seconds, 1)})
        print(f"landmarks  --workers {workers}: {frames / seconds:5.1f} frames/s ({frames} frames in {seconds:.1f} s, "
              "start-up included)")
    result["load_average_after"] = os.getloadavg()
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--gemma", action="store_true", help="benchmark Gemma feature extraction (needs CUDA)")
    parser.add_argument("--landmarks", action="store_true", help="benchmark MediaPipe landmark extraction (CPU)")
    parser.add_argument("--videos", default=str(VIDEOS), help="folder whose subfolders hold the .mp4 clips")
    parser.add_argument("--batch_sizes", default="1,2,4,8,16,32", help="comma-separated batch sizes")
    parser.add_argument("--num_frames", type=int, default=16, help="frames per clip, as extract_gemma_features.py")
    parser.add_argument("--frames_per_point", type=int, default=640, help="frames timed per batch size")
    parser.add_argument("--min_clips", type=int, default=8, help="at least this many clips per batch size")
    parser.add_argument("--readers", type=int, default=4, help="decoding threads")
    parser.add_argument("--attention", default="auto",
                        help="SDPA kernel for the end-to-end runs (auto|cudnn|flash|efficient; best = fastest of --variants)")
    parser.add_argument("--pad_head_dim", type=int, default=0, help="as extract_gemma_features.py --pad_head_dim")
    parser.add_argument("--variants", default="",
                        help="time the tower alone on real frames, batch 16, for each attention:pad_head_dim, e.g. "
                             "auto:0,cudnn:128,flash:128 (--attention best then runs end to end with the fastest)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the tower for the end-to-end runs")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    if not (args.gemma or args.landmarks):
        parser.error("choose --gemma and/or --landmarks")
    results = {"command": " ".join(sys.argv), "created": time.strftime("%Y-%m-%d %H:%M:%S")}
    if args.gemma:
        if not torch.cuda.is_available():
            sys.exit("error: --gemma needs a CUDA GPU")
        results["gemma"] = bench_gemma(args)
    if args.landmarks:
        results["landmarks"] = bench_landmarks(args)
    if args.out:
        with open(args.out + ".tmp", "w") as f:
            json.dump(results, f, indent=2)
        os.replace(args.out + ".tmp", args.out)
    print(json.dumps(results, indent=1)[:2000] if not args.out else f"wrote {args.out}")


if __name__ == "__main__":
    main()
