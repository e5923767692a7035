"""WLASL data: split files, per-clip .npy files, and the packed cache that training reads from.

This is the one place where a clip is read, checked, sampled and masked, so that training, evaluation and
prediction treat every clip the same way.

    split file  nslt_*.json   {video_id: {"subset": "train"|"val"|"test", "action": [class_id, start, end]}}
    visual      <gemma_features_dir>/{video_id}_gemma.npy       (T, D)  frozen Gemma 3 vision features
    landmarks   <landmarks_dir>/{video_id}_landmarks.npy        (T, 162) MediaPipe [left hand | right hand | pose]

The first run packs each split into contiguous arrays under the cache directory (visual features float16,
landmarks float32, lengths and labels); later runs memory-map them, so the training loop never opens a file.
"""
import hashlib
import json
import os
import shutil
import stat
from collections import Counter, namedtuple
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from safe_io import (DataError, atomic_write, available_memory_bytes, not_a_regular_file,  # noqa: F401
                     read_text, remove_stale_temporaries, run_cli, write_json)

SUBSETS = ("train", "val", "test")
MODALITIES = ("hybrid", "landmarks", "gemma")
LANDMARK_DIM = 162  # left hand 21x3 | right hand 21x3 | pose landmarks 11..22 x3
# MediaPipe's normalized image coordinates stay within a few units of [0, 1]; a finite value beyond this is a broken
# file or another layout (pixels), and would overflow float32 once normalized.
LANDMARK_LIMIT = 1e3
FLOAT16_MAX = float(np.finfo(np.float16).max)
CACHE_VERSION = 3  # 3: keyed by file content; out-of-range values and bad ids are skipped
DIGESTS_NAME = "file_digests.json"
LAYOUT_HELP = "see README section 'WLASL data layout'"

Clip = namedtuple("Clip", "video_id subset class_id start_frame end_frame")


class ClipError(Exception):
    """One clip's file is unusable; the clip is skipped and counted under `reason`."""

    def __init__(self, reason, detail):
        super().__init__(detail)
        self.reason = reason


# ----------------------------------------------------------------------------------------------------------------
# Split files and glosses

# What the tools that read a split file but have no --demo add to its not-found message
SPLIT_HINT = ", or pass --data_dir (the folder with the split files) or --subset (a path to the json)"


class _Entries(dict):
    """A JSON object that remembers the keys it saw more than once (json keeps the last silently)."""
    duplicates = ()


def _first_entries(pairs):
    entries, duplicates = _Entries(), []
    for key, value in pairs:
        if key in entries:
            duplicates.append((key, entries[key], value))
            continue  # the first entry of a key is the one used
        entries[key] = value
    entries.duplicates = duplicates
    return entries


def video_id_problem(video_id):
    """None for a video id that is a plain name; else why it is refused. An id names files inside the feature,
    landmark and video folders, so it can never be a path: no separators, no '..', no NUL or control characters."""
    if not video_id or video_id.strip() != video_id:
        return "is empty or has surrounding spaces"
    if any(c in video_id for c in "/\\") or ".." in video_id or os.path.isabs(video_id):
        return "is a path, not a name"
    if any(ord(c) < 32 or ord(c) == 127 for c in video_id):
        return "holds control characters"
    return None


def _examples(items, n=3):
    return ", ".join(items[:n]) + (", ..." if len(items) > n else "")


def load_split(path, hint=""):
    """Reads and validates a WLASL split file -> {video_id: Clip}. Raises DataError naming the bad entry;
    hint ends the not-found message (the trainer adds ", or try --demo").

    Entries the file gets wrong but that do not stop a run are named and counted in warnings: video ids that are
    paths (kept, and skipped as `bad_id` by every reader), ids listed twice (the first entry is used), frame windows
    that end before they start or start before frame 1."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"split file {path} not found ({LAYOUT_HELP}{hint})")
    text = read_text(path, "split file")
    try:
        raw = json.loads(text, object_pairs_hook=_first_entries)
    except json.JSONDecodeError as e:
        raise DataError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}); re-download or regenerate it")
    except RecursionError:
        raise DataError(f"{path} is nested too deeply to be a split file ({LAYOUT_HELP})")
    if not isinstance(raw, dict) or not raw:
        raise DataError(f"{path} must be a non-empty JSON object {{video_id: {{\"subset\": ..., \"action\": "
                        f"[class_id, start_frame, end_frame]}}}} ({LAYOUT_HELP})")
    clips = {}
    for video_id, entry in raw.items():
        where = f"{path}: entry {video_id!r}"
        if not isinstance(entry, dict) or "subset" not in entry or "action" not in entry:
            raise DataError(f"{where} needs \"subset\" and \"action\" keys, got {str(entry)[:80]} ({LAYOUT_HELP})")
        subset, action = entry["subset"], entry["action"]
        if subset not in SUBSETS:
            raise DataError(f"{where} has subset {subset!r}; use one of train, val, test")
        if not isinstance(action, list) or not action:
            raise DataError(f"{where} has action {action!r}; expected [class_id, start_frame, end_frame]")
        values = [action[0], action[1] if len(action) > 1 else 1, action[2] if len(action) > 2 else -1]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise DataError(f"{where} has action {action!r}; class id and frames must be integers")
        if values[0] < 0:
            raise DataError(f"{where} has a negative class id {values[0]}; class ids are WLASL ids >= 0")
        if not all(-2**31 <= v < 2**31 for v in values):
            raise DataError(f"{where} has action {action!r}; class id and frames must fit in 32 bits")
        clips[str(video_id)] = Clip(str(video_id), subset, *values)
    report_split_problems(path, clips, raw.duplicates)
    return clips


def report_split_problems(path, clips, duplicates):
    """One warning per kind of problem, with the count, examples and what is done about it."""
    bad_ids = [repr(v) for v in clips if video_id_problem(v)]
    if bad_ids:
        print(f"warning: {path}: {len(bad_ids)} video ids are paths or not plain names ({_examples(bad_ids)}); "
              "they are skipped (an id is a file name, never a path)")
    if duplicates:
        listed = [f"{k!r} ({a.get('subset') if isinstance(a, dict) else '?'} then "
                  f"{b.get('subset') if isinstance(b, dict) else '?'})" for k, a, b in duplicates]
        print(f"warning: {path}: {len(duplicates)} video ids are listed more than once ({_examples(listed)}); "
              "the first entry of each is used")
    reversed_ids = [repr(c.video_id) for c in clips.values() if c.end_frame != -1 and c.end_frame < c.start_frame]
    if reversed_ids:
        print(f"warning: {path}: {len(reversed_ids)} clips have a frame window that ends before it starts "
              f"({_examples(reversed_ids)}); the extractors skip them, training uses their files as they are")
    early = [repr(c.video_id) for c in clips.values() if c.start_frame < 1]
    if early:
        print(f"warning: {path}: {len(early)} clips start before frame 1 ({_examples(early)}); frames are "
              "1-indexed, so they start at frame 1")


def load_glosses(data_dir):
    """{WLASL class id: gloss} from wlasl_class_list.txt or WLASL_v0.3.json in data_dir; {} when neither exists."""
    data_dir = Path(data_dir)
    class_list, metadata = data_dir / "wlasl_class_list.txt", data_dir / "WLASL_v0.3.json"
    try:
        if class_list.is_file():
            glosses = {}
            for line in class_list.read_text().splitlines():
                parts = line.strip().split(maxsplit=1)
                if len(parts) == 2 and parts[0].isdigit():
                    glosses[int(parts[0])] = parts[1]
            return glosses
        if metadata.is_file():
            return {i: entry["gloss"] for i, entry in enumerate(json.loads(metadata.read_text()))}
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"warning: cannot read glosses from {data_dir} ({e}); glosses will be shown as class ids")
    return {}


def build_label_mapping(clips, glosses):
    """Global WLASL ids -> contiguous indices. Returns the list of {index, wlasl_id, gloss}, sorted by WLASL id."""
    wlasl_ids = sorted({clip.class_id for clip in clips.values()})
    return [{"index": i, "wlasl_id": c, "gloss": glosses.get(c, str(c))} for i, c in enumerate(wlasl_ids)]


# ----------------------------------------------------------------------------------------------------------------
# One clip

def resample_indices(num_available, length):
    """`length` frame indices spread uniformly over `num_available` frames (segment centres; repeats if upsampling)."""
    return ((np.arange(length) + 0.5) * num_available / length).astype(np.int64)


def uniform_indices(num_available, num_frames):
    """Uniform temporal sampling down to num_frames; a shorter clip keeps all its frames (it is padded later)."""
    return resample_indices(num_available, min(num_available, num_frames))


def clip_file(directory, video_id, suffix):
    """<directory>/<video_id><suffix>; ClipError('bad_id') when the id is not a plain name (it would reach outside
    the folder)."""
    problem = video_id_problem(video_id)
    if problem:
        raise ClipError("bad_id", f"video id {video_id!r} {problem}")
    return Path(directory) / f"{video_id}{suffix}"


def feature_path(directory, video_id):
    return clip_file(directory, video_id, "_gemma.npy")


def landmark_path(directory, video_id):
    return clip_file(directory, video_id, "_landmarks.npy")


def read_array(path, width=None):
    """Loads a (T, width) array of real numbers or raises ClipError with the reason it is unusable.

    Never unpickles (allow_pickle=False: an object array is refused) and never opens what is not a regular file
    (a FIFO would block the read for ever)."""
    why = not_a_regular_file(path)
    if why == "not found":
        raise ClipError("missing", f"{path} not found")
    if why is not None:
        raise ClipError("not_a_file", f"{path} {why}")
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as e:
        if "allow_pickle" in str(e):  # an object array: unpickling it could run any code stored in the file
            raise ClipError("unreadable", f"{path} holds pickled Python objects, not a plain array (never loaded: "
                                          "unpickling could run code)")
        raise ClipError("unreadable", f"{path}: ValueError: {str(e)[:100]}")
    except Exception as e:  # truncated, not .npy, permissions: all one outcome for the user
        raise ClipError("unreadable", f"{path}: {type(e).__name__}: {str(e)[:100]}")
    if not isinstance(array, np.ndarray):  # an .npz archive
        raise ClipError("unreadable", f"{path} is an .npz archive, not one .npy array")
    if array.dtype.kind not in "iuf":  # bool, complex, strings, structured records: not a real number per value
        raise ClipError("bad_dtype", f"{path} holds {array.dtype} values; expected real numbers (float or int)")
    if array.ndim != 2:
        raise ClipError("bad_shape", f"{path} has shape {array.shape}; expected (frames, features)")
    if array.shape[0] == 0:
        raise ClipError("empty", f"{path} has no frames")
    if width is not None and array.shape[1] != width:
        raise ClipError("bad_shape", f"{path} has {array.shape[1]} features per frame; expected {width}")
    return array


def load_clip(video_id, gemma_dir, landmarks_dir, modality, num_frames, feature_dim=None):
    """Reads one clip's files and samples both streams onto the same time grid.

    Returns (gemma (L, D) float16 or None, landmarks (L, 162) float32 or None, number of non-finite landmark
    values that were zeroed). L = min(num_frames, longest stream): each stream covers the same clip window, so
    both are resampled uniformly to L frames and stay aligned even when their frame counts differ.
    """
    gemma = landmarks = None
    if modality in ("hybrid", "gemma"):
        path = feature_path(gemma_dir, video_id)
        gemma = read_array(path, feature_dim).astype(np.float64)  # float64: |int64| and float16 checks are exact
        # Features are stored as float16: a finite value beyond its range would become inf in the cache and turn
        # every step and score that touches the clip into NaN.
        if not np.isfinite(gemma).all():
            raise ClipError("nonfinite", f"{path} contains NaN or inf")
        if np.abs(gemma).max() > FLOAT16_MAX:
            raise ClipError("out_of_range", f"{path} holds values beyond the float16 range (|x| > 65504)")
    if modality in ("hybrid", "landmarks"):
        path = landmark_path(landmarks_dir, video_id)
        landmarks = read_array(path, LANDMARK_DIM)
    length = min(num_frames, max(len(a) for a in (gemma, landmarks) if a is not None))
    nonfinite = 0
    if gemma is not None:
        gemma = gemma[resample_indices(len(gemma), length)].astype(np.float16)
    if landmarks is not None:
        landmarks = landmarks[resample_indices(len(landmarks), length)].astype(np.float64)
        bad = ~np.isfinite(landmarks)
        nonfinite = int(bad.sum())
        landmarks[bad] = 0.0  # a NaN coordinate means "not detected", which the layout writes as zero
        if np.abs(landmarks).max() > LANDMARK_LIMIT:
            raise ClipError("out_of_range", f"{path} holds values beyond +-{LANDMARK_LIMIT:g}; landmarks are "
                                            "MediaPipe's normalized image coordinates (about 0..1)")
        landmarks = landmarks.astype(np.float32)
    return gemma, landmarks, nonfinite


# ----------------------------------------------------------------------------------------------------------------
# Packed splits and their cache

@dataclass
class PackedSplit:
    """One split, packed: row i is clip video_ids[i]; frames past lengths[i] are zero padding."""
    name: str
    video_ids: list
    labels: np.ndarray            # (N,) int64 contiguous class indices
    lengths: np.ndarray           # (N,) int64 real frames per clip
    gemma: np.ndarray = None      # (N, T, D) float16, or None without the visual stream
    landmarks: np.ndarray = None  # (N, T, 162) float32, or None without landmarks
    listed: int = 0               # clips the split file lists for this split
    skipped: dict = field(default_factory=dict)        # reason -> count
    skipped_ids: dict = field(default_factory=dict)    # reason -> first few video ids
    nonfinite_landmark_clips: int = 0
    nonfinite_landmark_values: int = 0

    def __len__(self):
        return len(self.labels)

    def report(self):
        """One log line: how many clips this split uses and why the others were dropped."""
        line = f"{self.name}: using {len(self)} of {self.listed} clips"
        if self.skipped:
            reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items()))
            examples = ", ".join(i for ids in self.skipped_ids.values() for i in ids[:3])[:120]
            line += f" (skipped: {reasons}; e.g. {examples})"
        if self.nonfinite_landmark_clips:
            line += (f"; {self.nonfinite_landmark_values} NaN/inf landmark values in "
                     f"{self.nonfinite_landmark_clips} clips set to 0 (not detected)")
        return line


class FileDigests:
    """Content digests of clip files, for cache keys. A digest is remembered in <cache_dir>/file_digests.json
    beside the file's stat signature (size, mtime, ctime, inode); a file whose signature is unchanged is not read
    again. Any write to a file changes its ctime, which no tool can set back, so an edited file is re-read and
    re-hashed even when its size and mtime were restored; a copied file is re-hashed and found unchanged."""

    def __init__(self, cache_dir=None):
        self.path = None if cache_dir is None else Path(cache_dir) / DIGESTS_NAME  # None: nothing remembered
        try:
            self.entries = json.loads(read_text(self.path, "digest file")) if self.path and self.path.is_file() else {}
        except (DataError, ValueError):
            self.entries = {}  # a damaged memo costs a re-read, nothing else
        if not isinstance(self.entries, dict):
            self.entries = {}
        self.changed = False

    def known(self, path):
        """(digest or None, signature): the remembered digest when the file's signature is unchanged. The digest
        is None when the file must be read; a marker string for an absent file or one that is not a regular file."""
        try:
            st = os.stat(path)
        except (OSError, ValueError):
            return "absent", None
        if not stat.S_ISREG(st.st_mode):
            return "not-a-file", None
        signature = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        remembered = self.entries.get(os.path.abspath(path))
        if isinstance(remembered, list) and len(remembered) == 2 and remembered[0] == signature:
            return remembered[1], signature
        return None, signature

    def digest(self, path):
        """Hex digest of the file's bytes (read only when its signature changed)."""
        digest, signature = self.known(path)
        if digest is not None:
            return digest
        h = hashlib.sha1(usedforsecurity=False)  # change detection, not a signature: the fastest here
        try:
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        except OSError:
            return "absent"
        self.entries[os.path.abspath(path)] = [signature, h.hexdigest()]
        self.changed = True
        return h.hexdigest()

    def digests(self, paths):
        """digest() of every path; only the files to read go to reader threads (hashlib releases the GIL)."""
        found = [self.known(p)[0] for p in paths]
        todo = [i for i, d in enumerate(found) if d is None]
        if todo:
            pool = ThreadPoolExecutor(max_workers=8)
            try:
                for i, d in zip(todo, pool.map(self.digest, [paths[i] for i in todo])):
                    found[i] = d
            finally:  # Ctrl-C: do not wait for the rest of the corpus
                pool.shutdown(wait=False, cancel_futures=True)
        return found

    def save(self):
        if self.changed and self.path is not None:
            try:
                write_json(self.path, self.entries)
            except DataError:
                pass  # only a memo: the next run hashes again
            self.changed = False


def clip_files(clip, gemma_dir, landmarks_dir, modality):
    """The files a clip is read from, for this modality; [] for an id that is not a plain name."""
    try:
        return ([feature_path(gemma_dir, clip.video_id)] if modality in ("hybrid", "gemma") else []) + \
               ([landmark_path(landmarks_dir, clip.video_id)] if modality in ("hybrid", "landmarks") else [])
    except ClipError:
        return []


def cache_key(split_name, clips, label_of, gemma_dir, landmarks_dir, modality, num_frames, feature_dim,
              digests=None):
    """Hash of everything a packed split depends on: entries, settings, and the content of each clip's files,
    so that a changed, added or deleted file rebuilds the cache. digests: a FileDigests (files hashed in threads)."""
    digests = digests or FileDigests()
    files = [clip_files(clip, gemma_dir, landmarks_dir, modality) for clip in clips]
    flat = digests.digests([f for group in files for f in group])
    h = hashlib.sha1()
    h.update(json.dumps([CACHE_VERSION, split_name, modality, num_frames, feature_dim]).encode())
    position = 0
    for clip, group in zip(clips, files):
        h.update(json.dumps([clip.video_id, label_of[clip.class_id], flat[position:position + len(group)]]).encode())
        position += len(group)
    return h.hexdigest()[:16]


def check_packing_memory(split_name, n_clips, modality, num_frames, feature_dim):
    """Packing holds a split in memory before it is cached: say what fits before allocating it."""
    per_frame = (2 * (feature_dim or 0) if modality in ("hybrid", "gemma") else 0) + \
        (4 * LANDMARK_DIM if modality in ("hybrid", "landmarks") else 0)
    need, available = n_clips * num_frames * per_frame, available_memory_bytes()
    if available and need > 0.8 * available:
        fits = int(0.8 * available // max(1, n_clips * per_frame))
        raise DataError(f"--num_frames {num_frames}: the {split_name} split ({n_clips} clips) needs "
                        f"{need / 1e9:.1f} GB of memory when packed, more than the {available / 1e9:.1f} GB "
                        f"available; --num_frames {fits} or fewer fits" if fits >= 1 else
                        f"the {split_name} split ({n_clips} clips) does not fit in the {available / 1e9:.1f} GB of "
                        "memory available even at one frame per clip")


def pack_split(split_name, clips, label_of, gemma_dir, landmarks_dir, modality, num_frames, feature_dim=None,
               show_progress=True):
    """Reads every clip of a split (in parallel threads: file reads dominate) into one PackedSplit."""
    def read(clip):
        try:
            return load_clip(clip.video_id, gemma_dir, landmarks_dir, modality, num_frames, feature_dim)
        except ClipError as e:
            return e

    check_packing_memory(split_name, len(clips), modality, num_frames, feature_dim)
    gemma_rows, landmark_rows, kept = [], [], []
    skipped, skipped_ids, details, sanitized = Counter(), {}, [], []
    nonfinite_values = 0
    pool = ThreadPoolExecutor(max_workers=8)
    try:
        results = pool.map(read, clips)
        for clip, result in tqdm(zip(clips, results), total=len(clips), desc=f"packing {split_name}",
                                 disable=None if show_progress else True, leave=False):
            if isinstance(result, ClipError):
                skipped[result.reason] += 1
                skipped_ids.setdefault(result.reason, []).append(clip.video_id)
                if result.reason != "missing":
                    details.append(str(result))
                continue
            gemma, landmarks, nonfinite = result
            kept.append(clip)
            gemma_rows.append(gemma)
            landmark_rows.append(landmarks)
            nonfinite_values += nonfinite
            if nonfinite:
                sanitized.append(f"{clip.video_id} ({nonfinite})")
    finally:  # Ctrl-C: drop the reads not started yet instead of waiting for thousands of them
        pool.shutdown(wait=False, cancel_futures=True)
    for line in details[:10]:
        print(f"warning: skipped {line}")
    if len(details) > 10:
        print(f"warning: ... and {len(details) - 10} more unusable files in {split_name}")
    if sanitized:  # kept, but named: a tracker that writes NaN for "not found" should be fixed at the source
        print(f"warning: {split_name}: NaN/inf landmark values set to 0 (not detected) in {len(sanitized)} clips: "
              + ", ".join(sanitized[:10]) + (" ..." if len(sanitized) > 10 else ""))

    n = len(kept)
    lengths = np.array([len(g if g is not None else l) for g, l in zip(gemma_rows, landmark_rows)], dtype=np.int64)

    def stack(rows, dtype):
        if n == 0 or rows[0] is None:
            return None
        out = np.zeros((n, num_frames, rows[0].shape[1]), dtype=dtype)
        for i, row in enumerate(rows):
            out[i, : len(row)] = row
        return out

    return PackedSplit(
        name=split_name, video_ids=[c.video_id for c in kept],
        labels=np.array([label_of[c.class_id] for c in kept], dtype=np.int64), lengths=lengths,
        gemma=stack(gemma_rows, np.float16), landmarks=stack(landmark_rows, np.float32),
        listed=len(clips), skipped=dict(skipped), skipped_ids={k: v[:20] for k, v in skipped_ids.items()},
        nonfinite_landmark_clips=len(sanitized), nonfinite_landmark_values=nonfinite_values)


ARRAYS = ("labels", "lengths", "gemma", "landmarks")
META = ("name", "video_ids", "listed", "skipped", "skipped_ids", "nonfinite_landmark_clips",
        "nonfinite_landmark_values")


def save_packed(split, directory):
    """Writes the split into a temporary folder, then renames it: a crash never leaves a half-written cache."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for name in ARRAYS:
            if getattr(split, name) is not None:
                np.save(tmp / f"{name}.npy", getattr(split, name))
        (tmp / "meta.json").write_text(json.dumps({k: getattr(split, k) for k in META}))
    except BaseException:  # disk full, Ctrl-C: leave no half-written folder behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(tmp, directory)


def load_packed(directory):
    """Memory-maps a packed split; returns None if the folder is absent or incomplete."""
    directory = Path(directory)
    try:
        meta = json.loads((directory / "meta.json").read_text())
        arrays = {name: np.load(directory / f"{name}.npy", mmap_mode="r") if (directory / f"{name}.npy").exists()
                  else None for name in ARRAYS}
    except (OSError, ValueError):
        return None
    return PackedSplit(**meta, **arrays)


def load_splits(clips_by_id, label_of, gemma_dir, landmarks_dir, modality, num_frames, feature_dim,
                cache_dir=None, subset_name="split", splits=SUBSETS, show_progress=True):
    """Packs (or memory-maps from the cache) each requested split. cache_dir=None packs in memory only."""
    packed = {}
    digests = None
    if cache_dir is not None:
        if Path(cache_dir).exists() and not Path(cache_dir).is_dir():
            raise DataError(f"--cache_dir {cache_dir} is a file, not a folder; choose another path (or --no_cache)")
        remove_stale_temporaries(cache_dir)  # a packing run that was killed left its temporary folder
        digests = FileDigests(cache_dir)
    for split_name in splits:
        clips = [c for c in clips_by_id.values() if c.subset == split_name]
        folder = split = None
        if cache_dir:
            key = cache_key(split_name, clips, label_of, gemma_dir, landmarks_dir, modality, num_frames,
                            feature_dim, digests)
            folder = Path(cache_dir) / f"{Path(subset_name).stem}-{split_name}-{modality}-{key}"
            split = load_packed(folder)
        if split is None:
            if show_progress:  # the progress bar only shows on a terminal; logs get one line
                print(f"packing {split_name}: reading {len(clips)} clips" +
                      (f" into the cache under {cache_dir}" if cache_dir else ""), flush=True)
            split = pack_split(split_name, clips, label_of, gemma_dir, landmarks_dir, modality, num_frames,
                               feature_dim, show_progress)
            if folder is not None:
                try:
                    save_packed(split, folder)
                except OSError as e:
                    print(f"warning: cannot write the feature cache under {cache_dir} ({e.strerror or e}); "
                          "continuing without it (set --cache_dir to a writable folder)")
        packed[split_name] = split
    if digests is not None:
        digests.save()
    return packed


# ----------------------------------------------------------------------------------------------------------------
# Batches

class BatchLoader:
    """Serves batches from a packed split: gathered on the GPU when the split lives there (on_device=True), else
    gathered from the memory-mapped arrays and copied (pinned, non-blocking) to the device.

    A batch is (gemma float16 or None, landmarks float32 or None, mask, labels, weight). With fixed_size=True the
    last batch is padded to batch_size with weight-0 rows, so every step has the same shapes (what CUDA graphs
    need); padded rows sit at the end of the batch.
    """

    def __init__(self, split, batch_size, device, on_device=False, fixed_size=False):
        self.split, self.batch_size, self.device = split, batch_size, torch.device(device)
        self.fixed_size, self.on_device = fixed_size, on_device
        assert fixed_size or not on_device, "batches gathered on the device are fixed-size (one shape to replay)"
        self.num_frames = next(a.shape[1] for a in (split.gemma, split.landmarks) if a is not None)
        if on_device:
            self.tensors = {name: None if getattr(split, name) is None else
                            torch.from_numpy(np.array(getattr(split, name))).to(self.device)  # copy: maps are read-only
                            for name in ARRAYS}

    def __len__(self):
        return (len(self.split) + self.batch_size - 1) // self.batch_size

    def batch_indices(self, shuffle=False, seed=0):
        """Row indices of every batch, in order, and how many rows of each are real."""
        n = len(self.split)
        order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
        batches = []
        for start in range(0, n, self.batch_size):
            # Sorted rows read sequentially from the memory map; the order inside a batch does not matter.
            index = np.sort(order[start:start + self.batch_size])
            real = len(index)
            if self.fixed_size and real < self.batch_size:
                # Repeat real rows so the padding is valid input; its weight of 0 removes it from loss and metrics.
                index = np.concatenate([index, order[np.arange(self.batch_size - real) % n]])
            batches.append((index, real))
        return batches

    def gather(self, index, real):
        if self.on_device:
            rows = {name: None if t is None else t.index_select(0, index) for name, t in self.tensors.items()}
        else:
            pin = self.device.type == "cuda"

            def take(name):
                a = getattr(self.split, name)
                if a is None:
                    return None
                t = torch.from_numpy(np.ascontiguousarray(a[index]))
                return t.pin_memory().to(self.device, non_blocking=True) if pin else t
            rows = {name: take(name) for name in ARRAYS}
        lengths = rows["lengths"]
        mask = torch.arange(self.num_frames, device=lengths.device)[None, :] < lengths[:, None]
        weight = (torch.arange(len(lengths), device=lengths.device) < real).float()
        return rows["gemma"], rows["landmarks"], mask, rows["labels"], weight

    def plan(self, shuffle=False, seed=0):
        """What each step of an epoch consumes. A GPU-resident split yields (row index, real rows) as device
        tensors, gathered by `materialize` inside the step (so a CUDA graph can include the gather); a host split
        yields ready batches."""
        plan = self.batch_indices(shuffle, seed)
        if not self.on_device:
            for index, real in plan:
                yield self.gather(index, real)
            return
        if not plan:
            return
        # One host-to-device copy of the epoch's indices instead of one per batch (on-device batches are
        # fixed-size, so the indices stack).
        all_index = torch.from_numpy(np.stack([index for index, _ in plan])).to(self.device)
        all_real = torch.tensor([real for _, real in plan], device=self.device)
        for i in range(len(plan)):
            yield all_index[i], all_real[i]

    def materialize(self, step_input):
        return self.gather(*step_input) if self.on_device else step_input

    def batches(self, shuffle=False, seed=0):
        for step_input in self.plan(shuffle, seed):
            yield self.materialize(step_input)
