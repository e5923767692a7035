"""
video_io.py - the one place that reads videos (landmark extraction, Gemma feature extraction, prediction).

    from video_io import read_clip_frames
    frames, fps = read_clip_frames("videos/00335.mp4")                      # whole clip, every frame
    frames, fps = read_clip_frames("videos/00335.mp4", 5, 40, num_frames=16)  # WLASL window, 16 frames

`frames` is uint8 RGB of shape (T, H, W, 3). WLASL split files give start_frame / end_frame 1-indexed at
25 fps; they are converted to the video's own frame rate here, an end beyond the video is clamped, and
end_frame -1 or None means "to the end". Decoding uses OpenCV (opencv-python-headless).
"""
import json
import os

import numpy as np

# FFmpeg's own line for a broken file ("moov atom not found") would print beside the VideoError that names it;
# set OPENCV_FFMPEG_LOGLEVEL yourself (e.g. 24) to see FFmpeg's messages again.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
try:
    import cv2
except ImportError:  # the training CLI never imports this module; extraction tools need the extras
    cv2 = None

from safe_io import atomic_write, not_a_regular_file, read_text, write_json
from wlasl_data import uniform_indices, video_id_problem  # the same temporal sampling as training (segment centres)

VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm")
SPLIT_FPS = 25.0  # WLASL start/end frames are counted at 25 fps


class VideoError(Exception):
    """A video that cannot be opened, decoded, or holds no frame in the requested window (one-line message)."""


def cv2_missing():
    return cv2 is None


def require_cv2():
    if cv2 is None:
        raise VideoError("OpenCV is not installed: pip install -r requirements-extract.txt")


def list_videos(videos_dir):
    """Sorted video paths in a directory (not recursive); the video id is the file stem."""
    names = sorted(n for n in os.listdir(videos_dir) if n.lower().endswith(VIDEO_EXTENSIONS))
    return [os.path.join(videos_dir, n) for n in names]


def open_video(path):
    """cv2.VideoCapture that is known to be open; VideoError otherwise. Only regular files are opened: a FIFO or a
    device would make the decoder wait for ever."""
    require_cv2()
    why = not_a_regular_file(path)
    if why == "not found":
        raise VideoError(f"video not found: {path}")
    if why is not None:
        raise VideoError(f"video {path} {why}")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise VideoError(f"cannot open video (unreadable or unsupported format): {path}")
    return cap


def video_info(path):
    """(fps, frame_count) from the container header; frame_count may be off by a frame or two (or 0 if unknown)."""
    cap = open_video(path)
    try:
        fps, count = cap.get(cv2.CAP_PROP_FPS), int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        cap.release()
    return (fps if fps and fps > 0 else SPLIT_FPS), max(count, 0)


def clip_window(fps, start_frame=1, end_frame=None):
    """0-indexed [start, end) frame range in the video's own frame numbering (end None = to the end).

    start_frame / end_frame are 1-indexed at 25 fps (WLASL); at 25 fps this is exactly [start-1, end).
    """
    start_frame = 1 if start_frame is None or start_frame < 1 else int(start_frame)
    scale = fps / SPLIT_FPS
    start = int(np.floor((start_frame - 1) * scale + 1e-6))
    if end_frame is None or end_frame < 0:
        return start, None
    end = int(np.ceil(int(end_frame) * scale - 1e-6))
    return start, max(end, start + 1)


def _decode(path, start, end, wanted):
    """Decode frames start..end-1 (end None = EOF); keep the window-relative indices in `wanted` (None = all).

    Returns (kept RGB frames, how many frames the window really held). It reads to the end of the window even
    after the last wanted frame, because that count is how a lying header is caught.
    """
    cap = open_video(path)
    frames, i = [], 0
    want = None if wanted is None else set(int(w) for w in wanted)
    try:
        while end is None or i < end:
            rel = i - start
            if rel >= 0 and (want is None or rel in want):
                ok, frame = cap.read()
                if not ok or frame is None:
                    break
                frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            elif not cap.grab():  # grab() skips the colour conversion of frames we do not keep
                break
            i += 1
    finally:
        cap.release()
    return frames, max(i - start, 0)


def read_clip_frames(path, start_frame=1, end_frame=None, num_frames=None, notes=None):
    """RGB frames of one clip: (uint8 array (T, H, W, 3), fps of the video).

    start_frame / end_frame: 1-indexed at 25 fps (WLASL); end_frame None or -1 = to the end; beyond the video
    = clamped. num_frames: sample that many frames uniformly from the window (never more than it holds);
    None = every frame. Raises VideoError for a missing, unreadable or empty video / window, or a window that
    starts after the video ends. notes (a list): what was done about a window end beyond the video or a video of
    which only a part decodes is appended there, one line each.
    """
    fps, header_count = video_info(path)
    start, end = clip_window(fps, start_frame, end_frame)
    if header_count and start >= header_count + 2:  # headers over-count by a frame or two now and then
        raise VideoError(f"the window of {path} starts at frame {start_frame} (25 fps) but the video has only "
                         f"{header_count} frames at {fps:g} fps")
    # Plan the sample with the header's frame count. Headers over-count by a frame or two now and then
    # (00338.mp4: 72 in the header, 71 decodable); then decode again, planned with the true count.
    stop = min(end, header_count) if end is not None and header_count else (end or header_count)
    planned = max(stop - start, 0)
    if num_frames is None:
        frames, available = _decode(path, start, end, None)
    else:
        frames, available = _decode(path, start, end, uniform_indices(planned, num_frames))
        if available != planned:
            frames, _ = _decode(path, start, end, uniform_indices(available, num_frames))
    if not frames:
        raise VideoError(f"no decodable frame in {path} (window start_frame={start_frame} end_frame={end_frame} at 25 fps)")
    if notes is not None:
        # a quarter of a second of slack: 25 fps windows on 30 fps videos round past the end by a few frames
        if end is not None and header_count and end > header_count + max(2, 0.25 * fps):
            notes.append(f"window end frame {end_frame} at 25 fps (frame {end} at the video's {fps:g} fps) is beyond "
                         f"its {header_count} frames; used the frames up to its end")
        if planned and available < planned - 2:
            notes.append(f"only {available} of the {planned} frames of its window decode (the file is damaged "
                         "or cut short); used those")
    return np.stack(frames), fps


# ----------------------------------------------------------------------------------------------------------------
# What the extraction tools share: which clips to process, which shard is ours, atomic outputs, metadata

def parse_shard(text):
    """'i/n' -> (i, n) with 0 <= i < n; ValueError with a one-line message otherwise."""
    try:
        i, n = (int(x) for x in str(text).split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/n (e.g. 0/4), got {text!r}")
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"--shard {text}: need 0 <= i < n")
    return i, n


def take_shard(jobs, index, count):
    """Round-robin over jobs sorted by video id: shards are disjoint, complete and within one clip of each other."""
    return sorted(jobs, key=lambda j: j["video_id"])[index::count]


def find_file(directory, video_id, extensions):
    """Path of {directory}/{video_id}{ext} for the first extension that exists, or None. Anything that exists
    counts (a FIFO or folder in the way is refused by name when opened, not taken for a missing video)."""
    if not directory:
        return None
    for ext in extensions:
        for candidate in (ext, ext.upper()):
            path = os.path.join(directory, video_id + candidate)
            if os.path.lexists(path):
                return path
    return None


def job_problem(video_id, clip):
    """Why a split entry cannot be extracted at all (reason, message), or None: an id that is a path (it would
    read and write outside the folders), or a frame window that ends before it starts."""
    problem = video_id_problem(video_id)
    if problem:
        return "bad_id", f"video id {video_id!r} {problem}"
    if clip is not None and clip.end_frame != -1 and clip.end_frame < clip.start_frame:
        return "bad_window", f"frame window {clip.start_frame}..{clip.end_frame} ends before it starts"
    return None


def list_jobs(input_dirs, extensions, split=None):
    """Clips to process: [{"video_id", "path" (None when no file has this id), "start_frame", "end_frame",
    "problem" ((reason, message) when the entry cannot be extracted, else None)}].

    split: {video_id: Clip} from wlasl_data.load_split (its window is honoured), or None = every file with one
    of `extensions` in input_dirs, whole clip. The first directory holding an id wins.
    """
    input_dirs = [d for d in input_dirs if d]
    if split is None:
        paths = {}
        for directory in reversed(input_dirs):  # earlier directories override later ones
            for name in os.listdir(directory):
                stem, ext = os.path.splitext(name)
                if ext.lower() in extensions and not os.path.isdir(os.path.join(directory, name)):
                    paths[stem] = os.path.join(directory, name)
        return [dict(video_id=v, path=p, start_frame=1, end_frame=None, problem=job_problem(v, None))
                for v, p in sorted(paths.items())]
    jobs = []
    for video_id, clip in sorted(split.items()):
        problem = job_problem(video_id, clip)
        path = None if problem else next((p for p in (find_file(d, video_id, extensions) for d in input_dirs) if p),
                                         None)
        jobs.append(dict(video_id=video_id, path=path, start_frame=clip.start_frame, end_frame=clip.end_frame,
                         problem=problem))
    return jobs


def missing_note(missing_ids, what, metadata_path):
    """The summary line's part for clips whose file is absent: normal (users hold a fraction of WLASL), so one
    count with a few example ids instead of a warning per clip; the full list is in the metadata."""
    if not missing_ids:
        return "missing 0"
    ids = sorted(missing_ids)
    examples = ", ".join(ids[:3]) + (", ..." if len(ids) > 3 else "")
    return f"missing {len(ids)} (no {what} with that id, e.g. {examples}; all listed in {metadata_path})"


def atomic_save_npy(path, array):
    atomic_write(path, lambda f: np.save(f, array, allow_pickle=False), "wb")  # a file object: no .npy added


atomic_write_json = write_json  # strict JSON: NaN/inf never reach a metadata file


METADATA_NAME = "extraction_metadata.json"


def shard_metadata_name(index, count):
    return f"extraction_metadata.shard-{index}-of-{count}.json"


def write_metadata(output_dir, meta, index, count):
    """Writes this run's metadata; a sharded run writes its shard file, then merges when every shard is there.

    Every shard writes its own file before it tries the merge, so whichever shard finishes last (a torchrun
    rank or a machine given --shard) sees all of them and writes the merged extraction_metadata.json.
    Returns the path of the merged file, or None while shards are still missing.
    """
    if count == 1:
        path = os.path.join(output_dir, METADATA_NAME)
        atomic_write_json(path, meta)
        return path
    atomic_write_json(os.path.join(output_dir, shard_metadata_name(index, count)), meta)
    return merge_metadata(output_dir, count)


def merge_metadata(output_dir, count):
    """Merges the `count` shard files into extraction_metadata.json (counts summed, missing ids and failures
    joined) if all exist."""
    parts = []
    for k in range(count):
        path = os.path.join(output_dir, shard_metadata_name(k, count))
        if not os.path.isfile(path):
            return None
        try:
            parts.append(json.loads(read_text(path, "shard metadata")))
        except ValueError:
            return None  # being written by the shard that owns it: that shard merges when it is done
    merged = dict(parts[0])
    merged["shard"] = f"merged from {count} shards"
    merged["counts"] = {k: sum(p["counts"].get(k, 0) for p in parts) for k in parts[0]["counts"]}
    merged["missing"] = sorted(v for p in parts for v in p.get("missing", []))
    merged["failed"] = [f for p in parts for f in p["failed"]]
    merged["seconds"] = max(p.get("seconds", 0) for p in parts)
    path = os.path.join(output_dir, METADATA_NAME)
    atomic_write_json(path, merged)
    return path
