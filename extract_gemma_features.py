"""
extract_gemma_features.py - frozen Gemma 3 vision features for every clip of a WLASL split: one vector per frame.

    pip install -r requirements-extract.txt
    hf download google/gemma-3-4b-it --include "*.json" --include "*.safetensors"  # once; accept the licence on the hub first
    python extract_gemma_features.py --videos_dir data/wlasl/videos --subset nslt_100.json
    python extract_gemma_features.py --videos_dir data/wlasl/videos --subset nslt_2000.json --layer vision
    torchrun --nproc_per_node 4 extract_gemma_features.py --videos_dir data/wlasl/videos --subset nslt_2000.json

Each clip: --num_frames frames (default 16) sampled uniformly from the split's window (start/end frames are
1-indexed at 25 fps, converted to the video's fps), resized to the vision tower's image size (896) and scaled to
[-1, 1] as Gemma 3's image processor does, run through the SigLIP vision tower and, with --layer projector (the
default), the multimodal projector; the image tokens are mean-pooled into one vector per frame:
--layer projector -> 2560-d (gemma-3-4b), --layer vision -> 1152-d. Output: <output_dir>/{video_id}_gemma.npy
(T, D) float16 (--dtype float32 to keep full precision) and extraction_metadata.json, whose `feature_dim`
train_simple.py reads.

Only the vision tower and projector weights are read from the safetensors shards; the 4B language model is
never built or loaded, so a 4 GB GPU is enough (auto batch size: about 16 there). Frames are decoded in
background threads while the GPU works. Existing outputs are skipped unless --overwrite (resumable).
Several GPUs: under torchrun each rank takes shard rank/world on cuda:LOCAL_RANK; --shard i/n splits across
machines. The last shard to finish merges the per-shard metadata into extraction_metadata.json.
Nothing is downloaded at run time: a model that is not on disk gives a one-line error saying how to get it.
"""
import argparse
import os
import platform
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import numpy as np
import torch
from tqdm import tqdm

from hybrid_asl.cli import HelpFormatter, int_range
from hybrid_asl.errors import INSTALL_HINT, DataError
from hybrid_asl.extraction import (atomic_save_npy, check_same_settings, close_run, list_jobs, missing_note,
                                   missing_videos_hint, outcome, parse_shard, run_extractor, take_shard)
from hybrid_asl.files import make_folder, remove_stale_temporaries
from hybrid_asl.gemma_vision import (DEFAULT_MODEL, GIB, attention_backends, auto_batch_size, frame_features,
                                     load_vision_model, preprocess, preprocessing, use_padded_attention)
from hybrid_asl.splits import SPLIT_HINT, load_split
from hybrid_asl.video import VIDEO_EXTENSIONS, VideoError, cv2_missing, read_clip_frames

# ----------------------------------------------------------------------------------------------------------------
# The corpus: background decoding, fixed-size GPU batches spanning clips, per-clip outputs

def read_job(job, num_frames, pin):
    """Decode one clip in a reader thread -> (job, uint8 tensor or None, failure reason or None, notes)."""
    notes = []
    try:
        frames, _ = read_clip_frames(job["path"], job["start_frame"], job["end_frame"], num_frames, notes)
        frames = torch.from_numpy(frames)
        return job, (frames.pin_memory() if pin else frames), None, notes
    except VideoError as e:
        return job, None, str(e), notes
    except Exception as e:  # a decoder crash on one file must not stop the corpus
        return job, None, f"{type(e).__name__}: {str(e)[:200]}", notes


def decoded_clips(jobs, num_frames, readers, pin):
    """Yields read_job results in order while up to 2*readers clips decode ahead in background threads."""
    pool = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="reader")
    try:
        ahead = deque()
        for job in jobs:
            ahead.append(pool.submit(read_job, job, num_frames, pin))
            if len(ahead) >= 2 * readers:
                yield ahead.popleft().result()
        while ahead:
            yield ahead.popleft().result()
    finally:  # Ctrl-C: the clips decoding ahead are dropped, not waited for
        pool.shutdown(wait=False, cancel_futures=True)


def extract_corpus(todo, tower, projector, spec, args, device, dtype, out_dtype, on_clip_done, on_failure,
                   on_note=lambda video_id, note: None):
    """Runs every clip in todo through the model in fixed-size batches; clips may straddle two batches."""
    pending = deque()  # (video_id, preprocessed frames (n, 3, S, S)) waiting for a batch
    buffered = 0
    clips = {}  # video_id -> [features (T, D) float32 numpy, frames still to come]
    inflight = None  # the previous batch: its outputs are copied back while the next batch runs

    def finish(batch):
        features_host, event, owners = batch
        if event is not None:
            event.synchronize()
        row = 0
        for video_id, start, n in owners:
            state = clips[video_id]
            if state[0] is None:
                state[0] = np.empty((state[2], features_host.shape[1]), dtype=np.float32)
            state[0][start:start + n] = features_host[row:row + n].float().numpy()
            row += n
            state[1] -= n
            if state[1] == 0:
                on_clip_done(video_id, clips.pop(video_id)[0].astype(out_dtype))

    def launch(count):
        nonlocal buffered
        pieces, owners = [], []
        while count > 0:
            video_id, start, x = pending[0]
            take = min(count, len(x))
            pieces.append(x[:take])
            owners.append((video_id, start, take))
            if take == len(x):
                pending.popleft()
            else:
                pending[0] = (video_id, start + take, x[take:])
            count -= take
            buffered -= take
        with attention_backends(args.attention):
            features = frame_features(tower, projector, torch.cat(pieces))
        if device.type == "cuda":  # copy back asynchronously; finish() waits on the event one batch later
            host = torch.empty(features.shape, dtype=features.dtype, pin_memory=True)
            host.copy_(features, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            return host, event, owners
        return features, None, owners

    for job, frames, reason, notes in decoded_clips(todo, args.num_frames, args.readers, device.type == "cuda"):
        for note in notes:
            on_note(job["video_id"], note)
        if reason is not None:
            on_failure(job["video_id"], reason)
            continue
        x = preprocess(frames.to(device, non_blocking=True), spec, dtype)
        clips[job["video_id"]] = [None, len(x), len(x)]
        pending.append((job["video_id"], 0, x))
        buffered += len(x)
        while buffered >= args.batch_size:
            batch = launch(args.batch_size)
            if inflight is not None:
                finish(inflight)
            inflight = batch
    if buffered:
        batch = launch(buffered)
        if inflight is not None:
            finish(inflight)
        inflight = batch
    if inflight is not None:
        finish(inflight)


def distributed_rank():
    """(rank, world, local_rank) from torchrun's environment; (0, 1, 0) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    return int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", os.environ["RANK"]))


def get_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip(),
                                     formatter_class=HelpFormatter)
    g = parser.add_argument_group("input")
    g.add_argument("--videos_dir", required=True, help="folder of videos named {video_id}.mp4/.mov/.avi/.mkv/.webm")
    g.add_argument("--subset", default=None,
                   help="split json (e.g. nslt_100.json; a bare name is looked up in --data_dir); omit to take every video, whole clip")
    g.add_argument("--data_dir", default="data/wlasl", help="WLASL folder: split files, default output folder")
    g.add_argument("--num_frames", type=int_range(1, 100000), default=16, help="frames sampled uniformly from each clip")
    g = parser.add_argument_group("model")
    g.add_argument("--model_name", default=DEFAULT_MODEL,
                   help="hub id (must already be downloaded: nothing is fetched at run time) or a local checkpoint folder")
    g.add_argument("--layer", choices=("projector", "vision"), default="projector",
                   help="projector: multimodal projector output, 2560-d for gemma-3-4b (default); vision: SigLIP tower output, 1152-d")
    g.add_argument("--precision", choices=("auto", "bf16", "fp16", "fp32"), default="auto",
                   help="model precision; auto = bf16 on CUDA (fp16 where bf16 is unsupported), fp32 on CPU")
    g.add_argument("--attention", choices=("auto", "cudnn", "flash", "efficient", "math"), default="auto",
                   help="preferred SDPA kernel (others remain as fallbacks); auto = PyTorch's own choice")
    g.add_argument("--pad_head_dim", type=int_range(0, 1024), default=0,
                   help="zero-pad attention heads to a multiple of this (e.g. 128) to reach faster kernels; 0 = off")
    g.add_argument("--compile", action="store_true", help="torch.compile the vision tower (CUDA; slower start, faster on long runs)")
    g = parser.add_argument_group("output")
    g.add_argument("--output_dir", default=None, help="where {video_id}_gemma.npy go (default <data_dir>/gemma_features)")
    g.add_argument("--dtype", choices=("float16", "float32"), default="float16", help="dtype of the saved features")
    g.add_argument("--overwrite", action="store_true", help="re-extract clips whose output already exists")
    g = parser.add_argument_group("hardware")
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto = cuda when available")
    g.add_argument("--batch_size", type=int_range(1, 4096), default=None,
                   help="frames per forward pass; default: chosen from free GPU memory (about 16 on a 4 GB card, 8 on CPU)")
    g.add_argument("--readers", type=int_range(1, 64), default=4, help="background threads decoding videos ahead of the GPU")
    g.add_argument("--shard", default="0/1", help="i/n: process only every n-th clip starting at i (under torchrun: split again per rank)")
    g.add_argument("--no_progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv=None):
    args = get_args(argv)
    started = time.time()
    rank, world, local_rank = distributed_rank()
    if not os.path.isdir(args.videos_dir):
        raise DataError(f"--videos_dir {args.videos_dir} is not a folder")
    if cv2_missing():
        raise DataError(f"OpenCV is not installed: {INSTALL_HINT}")
    try:
        shard_index, shard_count = parse_shard(args.shard)
    except ValueError as e:
        raise DataError(str(e))
    shard_index, shard_count = shard_index * world + rank, shard_count * world  # each rank splits our shard again

    if args.device == "cuda" and not torch.cuda.is_available():
        raise DataError("--device cuda but no CUDA GPU is visible; use --device cpu")
    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device(f"cuda:{local_rank % torch.cuda.device_count()}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    precision = args.precision
    if precision == "auto":
        precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if use_cuda else "fp32"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]

    if args.output_dir is not None and not args.output_dir.strip():
        raise DataError("--output_dir is empty; give a folder (default <data_dir>/gemma_features)")
    output_dir = args.output_dir or os.path.join(args.data_dir, "gemma_features")
    make_folder(output_dir, "--output_dir")
    if shard_count == 1:  # a shard on another machine may be writing here: only a lone run cleans up
        remove_stale_temporaries(output_dir)
    # a folder of projector features is never topped up with vision-tower ones (their widths differ)
    check_same_settings(output_dir, "extract_gemma_features.py",
                        {"model": args.model_name, "layer": args.layer, "num_frames": args.num_frames}, args.overwrite,
                        flags={"model": "--model_name"})
    split = None
    if args.subset is not None:
        split = load_split(args.subset if os.path.exists(args.subset) or os.sep in args.subset
                           else os.path.join(args.data_dir, args.subset), hint=SPLIT_HINT)
    jobs = take_shard(list_jobs([args.videos_dir], VIDEO_EXTENSIONS, split), shard_index, shard_count)

    def out_path(video_id):
        return os.path.join(output_dir, f"{video_id}_gemma.npy")

    refused = [j for j in jobs if j["problem"] is not None]  # ids that are paths, reversed windows: named, counted
    for job in refused:
        print(f"warning: {job['video_id']!r} skipped: {job['problem'][1]}", file=sys.stderr)
    jobs = [j for j in jobs if j["problem"] is None]
    not_extracted = [j for j in jobs if args.overwrite or not os.path.isfile(out_path(j["video_id"]))]
    # an absent video is normal (users hold a fraction of WLASL): counted and listed, not a failure
    missing = [j["video_id"] for j in not_extracted if j["path"] is None]
    todo = [j for j in not_extracted if j["path"] is not None]
    tower, projector, config, model_dir = load_vision_model(args.model_name, args.layer, device, dtype)
    use_padded_attention(tower, args.pad_head_dim)
    if args.compile and use_cuda:
        tower = torch.compile(tower, dynamic=False)  # one graph per batch shape (two at most)
    spec = preprocessing(model_dir, config)
    feature_dim = config.text_config.hidden_size if args.layer == "projector" else config.vision_config.hidden_size
    batch_size = args.batch_size or auto_batch_size(device, config, dtype)
    args.batch_size = batch_size
    print(f"[shard {shard_index}/{shard_count}] {len(jobs)} clips: {len(jobs) - len(not_extracted)} already extracted, "
          f"{len(missing)} with no video, {len(todo)} to do on {device} ({precision}, batch {batch_size}) -> {output_dir}")
    hint = missing_videos_hint(jobs, missing, args.videos_dir, VIDEO_EXTENSIONS)
    if hint:
        print(hint)

    failed, frames_done, bar = [], [0], tqdm(total=len(todo), unit="clip", dynamic_ncols=True,
                                               disable=args.no_progress or None, position=rank)

    def on_clip_done(video_id, features):
        atomic_save_npy(out_path(video_id), features)
        frames_done[0] += len(features)
        bar.update(1)

    def on_failure(video_id, reason):
        failed.append((video_id, reason))
        bar.update(1)

    noted = []

    if use_cuda:
        torch.cuda.reset_peak_memory_stats(device)
    extract_corpus(todo, tower, projector, spec, args, device, dtype, np.dtype(args.dtype), on_clip_done, on_failure,
                   lambda video_id, note: noted.append((video_id, note)))
    bar.close()

    import transformers
    done = len(todo) - len(failed)
    paths = {j["video_id"]: j["path"] for j in jobs}
    meta = {
        "tool": "extract_gemma_features.py",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": args.model_name,
        "layer": args.layer,
        "settings": {"model": args.model_name, "layer": args.layer, "num_frames": args.num_frames},
        "feature_dim": int(feature_dim),
        "pooling": f"mean over {'projector' if projector is not None else 'vision tower'} image tokens, one vector per frame",
        "num_frames": args.num_frames,
        "frame_sampling": "uniform (segment centres) over the split window; start/end frames converted from 25 fps",
        "dtype": args.dtype,
        "precision": precision,
        "preprocessing": {**spec, "resize": "bilinear, antialiased, no pan-and-scan"},
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "numpy": np.__version__},
        "device": torch.cuda.get_device_name(device) if use_cuda else "cpu",
        "batch_size": batch_size,
        "shard": f"{shard_index}/{shard_count}",
        "subset": args.subset,
        "counts": {"clips": len(jobs) + len(refused), "extracted": done,
                   "skipped_existing": len(jobs) - len(not_extracted), "missing": len(missing),
                   "refused": len(refused), "failed": len(failed), "with_notes": len({v for v, _ in noted}),
                   "frames_extracted": frames_done[0],
                   "outputs_present": sum(os.path.isfile(out_path(j["video_id"])) for j in jobs)},
        "missing": sorted(missing),  # split ids with no video in --videos_dir
        "refused": [{"video_id": j["video_id"], "reason": j["problem"][1]} for j in refused],
        "failed": [{"video_id": v, "path": paths.get(v), "reason": r} for v, r in sorted(failed)],
        "notes": [{"video_id": v, "note": note} for v, note in sorted(noted)],
        "seconds": round(time.time() - started, 1),
    }
    if use_cuda:
        meta["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / GIB, 2)
    merged, written = close_run(output_dir, meta, shard_index, shard_count, failed, noted, "_gemma.npy")
    elapsed = time.time() - started
    print(f"[shard {shard_index}/{shard_count}] extracted {done} clips ({frames_done[0]} frames, "
          f"{frames_done[0] / max(elapsed, 1e-9):.1f} frames/s overall), skipped {len(jobs) - len(not_extracted)} existing, "
          f"{outcome(missing_note(missing, 'video', written), refused, failed, noted)}; feature_dim {feature_dim}; metadata: {merged or 'shard file written, merged when every shard has finished'}")
    return meta


def run(argv=None):
    return run_extractor(main, argv)


if __name__ == "__main__":
    sys.exit(run())
