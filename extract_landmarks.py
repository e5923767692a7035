"""
extract_landmarks.py - MediaPipe Holistic landmarks for every clip of a WLASL split, offline and resumable.

    pip install -r requirements-extract.txt          # mediapipe==0.10.21 ships its models: no download at run time
    python extract_landmarks.py --videos_dir data/wlasl/videos --subset nslt_100.json
    python extract_landmarks.py --videos_dir data/wlasl/videos --subset nslt_2000.json --workers 2 --num_frames 32
    python extract_landmarks.py --videos_dir my_videos                 # no split: every video, whole clip
    python extract_landmarks.py --poses_dir my_poses --subset nslt_100.json   # existing .pose files (pose-format)

Writes <output_dir>/{video_id}_landmarks.npy, float32 (T, 162) per clip:
[left hand 21 x (x,y,z) | right hand 21 x (x,y,z) | pose landmarks 11..22 x (x,y,z)], MediaPipe's normalized image
coordinates, zeros where a part was not detected; and extraction_metadata.json (versions, settings, counts,
ids of split clips with no video or .pose file, failed clips with the reason). Split clips whose file is absent
are normal: counted and listed, not warned one by one. Existing outputs are skipped unless --overwrite, so an
interrupted run resumes.
Split files give start_frame / end_frame 1-indexed at 25 fps; they are converted to each video's own fps.
Split a corpus across machines with --shard i/n (the last shard to finish merges the metadata).
"""
import argparse
import os
import sys
import time
from datetime import datetime, timezone

from tqdm import tqdm

from hybrid_asl.cli import HelpFormatter, int_range
from hybrid_asl.clips import LANDMARK_DIM
from hybrid_asl.errors import INSTALL_HINT, DataError
from hybrid_asl.extraction import (atomic_save_npy, check_same_settings, close_run, list_jobs, missing_note,
                                   missing_videos_hint, outcome, parse_shard, run_extractor, take_shard)
from hybrid_asl.files import make_folder, remove_stale_temporaries
from hybrid_asl.mediapipe_landmarks import MODEL_COMPLEXITY, extract_file, import_mediapipe, quiet_worker, tool_versions
from hybrid_asl.splits import SPLIT_HINT, load_split
from hybrid_asl.video import VIDEO_EXTENSIONS, VideoError, cv2_missing

def output_path(output_dir, video_id):
    return os.path.join(output_dir, f"{video_id}_landmarks.npy")


def process_job(job):
    """Worker: extract and save one clip -> (video_id, frames, failure reason or None, notes). Never raises, except
    DataError (a missing package, a full disk: the same for every clip)."""
    notes = []
    try:
        landmarks = extract_file(job["path"], job["start_frame"], job["end_frame"], job["num_frames"], notes)
        atomic_save_npy(output_path(job["output_dir"], job["video_id"]), landmarks)
        return job["video_id"], len(landmarks), None, notes
    except (VideoError, ValueError) as e:
        return job["video_id"], 0, str(e), notes
    except DataError:  # the same for every clip, so stop with its one-line message
        raise
    except Exception as e:  # a crash inside one clip (decoder, mediapipe) must not stop the corpus
        return job["video_id"], 0, f"{type(e).__name__}: {str(e)[:200]}", notes


def pool_worker():
    """A worker process leaves Ctrl-C to the parent, which stops the pool (terminate) instead of waiting for it."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    quiet_worker()


# ----------------------------------------------------------------------------------------------------------------
# The corpus

def get_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip(),
                                     formatter_class=HelpFormatter)
    g = parser.add_argument_group("input")
    g.add_argument("--videos_dir", default=None,
                   help="folder of videos named {video_id}.mp4/.mov/.avi/.mkv/.webm (.pose files here are read too)")
    g.add_argument("--poses_dir", default=None, help="folder of {video_id}.pose files (pose-format, MediaPipe Holistic layout)")
    g.add_argument("--subset", default=None,
                   help="split json (e.g. nslt_100.json; a bare name is looked up in --data_dir); omit to take every file, whole clip")
    g.add_argument("--data_dir", default="data/wlasl", help="WLASL folder: split files, default output folder")
    g = parser.add_argument_group("output")
    g.add_argument("--output_dir", default=None, help="where {video_id}_landmarks.npy go (default <data_dir>/landmarks)")
    g.add_argument("--num_frames", type=int_range(1, 100000), default=None,
                   help="sample this many frames uniformly from each clip (default: every frame of the clip)")
    g.add_argument("--overwrite", action="store_true", help="re-extract clips whose output already exists")
    g = parser.add_argument_group("parallelism")
    g.add_argument("--workers", type=int_range(1, 256), default=1,
                   help="worker processes (each runs MediaPipe on one core)")
    g.add_argument("--shard", default="0/1", help="i/n: process only every n-th clip starting at i (split a corpus across machines)")
    g.add_argument("--no_progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def resolve_split(subset, data_dir):
    if subset is None:
        return None
    path = subset if os.path.exists(subset) or os.sep in subset else os.path.join(data_dir, subset)
    return load_split(path, hint=SPLIT_HINT)


def main(argv=None):
    args = get_args(argv)
    started = time.time()
    if not args.videos_dir and not args.poses_dir:
        raise DataError("give --videos_dir (videos) and/or --poses_dir (.pose files)")
    for flag, d in (("--videos_dir", args.videos_dir), ("--poses_dir", args.poses_dir)):
        if d and not os.path.isdir(d):
            raise DataError(f"{flag} {d} is not a folder")
    try:
        shard = parse_shard(args.shard)
    except ValueError as e:
        raise DataError(str(e))
    if args.output_dir is not None and not args.output_dir.strip():
        raise DataError("--output_dir is empty; give a folder (default <data_dir>/landmarks)")
    split = resolve_split(args.subset, args.data_dir)
    output_dir = args.output_dir or os.path.join(args.data_dir, "landmarks")
    make_folder(output_dir, "--output_dir")
    if shard[1] == 1:  # a shard on another machine may be writing here: only a lone run cleans up
        remove_stale_temporaries(output_dir)
    # prediction extracts new videos as the folder's clips were extracted: one sampling per folder
    check_same_settings(output_dir, "extract_landmarks.py", {"num_frames": args.num_frames}, args.overwrite)
    if args.videos_dir:
        import_mediapipe()  # fail in one line now, not once per clip
        if cv2_missing():
            raise DataError(f"OpenCV is not installed: {INSTALL_HINT}")

    # .pose files win over videos with the same id: the landmarks are already there
    jobs = list_jobs([args.poses_dir, args.videos_dir], VIDEO_EXTENSIONS + (".pose",), split)
    jobs = take_shard(jobs, *shard)
    todo, skipped, missing, refused = [], 0, [], []
    for job in jobs:
        if job["problem"] is not None:  # an id that is a path, a reversed window: refused by name, counted
            refused.append(job)
        elif not args.overwrite and os.path.isfile(output_path(output_dir, job["video_id"])):
            skipped += 1
        elif job["path"] is None:  # normal: users hold a fraction of WLASL; counted, listed, not a failure
            missing.append(job["video_id"])
        else:
            todo.append(dict(job, num_frames=args.num_frames, output_dir=output_dir))
    print(f"{len(jobs)} clips in shard {args.shard}: {skipped} already extracted, {len(missing)} with no video "
          f"or .pose file, {len(todo)} to do with {args.workers} worker(s) -> {output_dir}")
    hint = missing_videos_hint(jobs, missing, args.videos_dir or args.poses_dir, VIDEO_EXTENSIONS)
    if hint:
        print(hint)

    for job in refused:
        print(f"warning: {job['video_id']!r} skipped: {job['problem'][1]}", file=sys.stderr)

    failed, frames, done, noted = [], 0, 0, []
    pool = None
    if args.workers > 1 and len(todo) > 1:
        import multiprocessing
        # spawn, not fork: mediapipe's threads and a forked parent do not mix
        pool = multiprocessing.get_context("spawn").Pool(args.workers, initializer=pool_worker)
        results = pool.imap_unordered(process_job, todo, chunksize=1)
    else:
        quiet_worker()
        results = map(process_job, todo)
    finished = False
    try:
        for video_id, n, reason, notes in tqdm(results, total=len(todo), unit="clip",
                                               disable=args.no_progress or None, dynamic_ncols=True):
            if reason is None:
                done, frames = done + 1, frames + n
            else:
                failed.append((video_id, reason))
            noted += [(video_id, note) for note in notes]
        finished = True
    finally:
        if pool is not None:
            if finished:
                pool.close()
            else:  # Ctrl-C, SIGTERM or an error: stop the workers now; finished clips are saved and skipped later
                pool.terminate()
            pool.join()

    by_id = {j["video_id"]: j["path"] for j in jobs}
    meta = {
        "tool": "extract_landmarks.py",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": tool_versions(),
        "settings": {"videos_dir": args.videos_dir, "poses_dir": args.poses_dir, "subset": args.subset,
                     "num_frames": args.num_frames, "model_complexity": MODEL_COMPLEXITY,
                     "static_image_mode": False, "overwrite": args.overwrite, "workers": args.workers},
        "shard": args.shard,
        "layout": "left hand 21x3 | right hand 21x3 | pose landmarks 11..22 x3; normalized image coords; zeros = not detected",
        "feature_dim": LANDMARK_DIM,
        "counts": {"clips": len(jobs), "extracted": done, "skipped_existing": skipped, "missing": len(missing),
                   "refused": len(refused), "failed": len(failed), "with_notes": len({v for v, _ in noted}),
                   "frames_extracted": frames,
                   "outputs_present": sum(os.path.isfile(output_path(output_dir, j["video_id"])) for j in jobs)},
        "missing": sorted(missing),  # split ids with no video or .pose file in the input folders
        "refused": [{"video_id": j["video_id"], "reason": j["problem"][1]} for j in refused],
        "failed": [{"video_id": v, "path": by_id.get(v), "reason": r} for v, r in sorted(failed)],
        "notes": [{"video_id": v, "note": note} for v, note in sorted(noted)],
        "seconds": round(time.time() - started, 1),
    }
    merged, written = close_run(output_dir, meta, *shard, failed, noted, "_landmarks.npy")
    print(f"extracted {done} clips ({frames} frames), skipped {skipped} existing, "
          f"{outcome(missing_note(missing, 'video or .pose file', written), refused, failed, noted)}; {meta['seconds']} s; "
          f"metadata: {merged or 'shard file written, merged once every shard has finished'}")
    return meta


def run(argv=None):
    return run_extractor(main, argv)


if __name__ == "__main__":
    sys.exit(run())
