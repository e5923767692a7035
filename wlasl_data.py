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
import sys
from collections import Counter, namedtuple
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

SUBSETS = ("train", "val", "test")
MODALITIES = ("hybrid", "landmarks", "gemma")
LANDMARK_DIM = 162  # left hand 21x3 | right hand 21x3 | pose landmarks 11..22 x3
CACHE_VERSION = 2  # 2: features beyond the float16 range are skipped, not packed as inf
LAYOUT_HELP = "see README section 'WLASL data layout'"

Clip = namedtuple("Clip", "video_id subset class_id start_frame end_frame")


class DataError(Exception):
    """A problem with the user's data that one line can explain; the CLIs print it and exit with code 2."""


def atomic_write(path, write, mode):
    """write(file) into a temporary name, then rename it over path. On any failure (disk full, Ctrl-C) the
    previous file stays as it was and the temporary one is removed."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def run_cli(main, argv=None):
    """Runs a command-line main(argv): a DataError becomes one `error:` line on stderr and exit code 2."""
    try:
        return main(argv)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


class ClipError(Exception):
    """One clip's file is unusable; the clip is skipped and counted under `reason`."""

    def __init__(self, reason, detail):
        super().__init__(detail)
        self.reason = reason


# ----------------------------------------------------------------------------------------------------------------
# Split files and glosses

# What the tools that read a split file but have no --demo add to its not-found message
SPLIT_HINT = ", or pass --data_dir (the folder with the split files) or --subset (a path to the json)"


def load_split(path, hint=""):
    """Reads and validates a WLASL split file -> {video_id: Clip}. Raises DataError naming the bad entry;
    hint ends the not-found message (the trainer adds ", or try --demo")."""
    path = Path(path)
    if not path.exists():  # a folder or unreadable file in its place is reported by the read below
        raise DataError(f"split file {path} not found ({LAYOUT_HELP}{hint})")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}); re-download or regenerate it")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read split file {path} ({e}); check the file and its permissions")
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
        clips[str(video_id)] = Clip(str(video_id), subset, *values)
    return clips


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


def feature_path(directory, video_id):
    return Path(directory) / f"{video_id}_gemma.npy"


def landmark_path(directory, video_id):
    return Path(directory) / f"{video_id}_landmarks.npy"


def read_array(path, width=None):
    """Loads a (T, width) float array or raises ClipError with the reason it is unusable."""
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ClipError("missing", f"{path} not found")
    except Exception as e:  # truncated, not .npy, pickled object arrays, permissions: all one outcome for the user
        raise ClipError("unreadable", f"{path}: {type(e).__name__}: {str(e)[:100]}")
    if array.ndim != 2:
        raise ClipError("bad_shape", f"{path} has shape {array.shape}; expected (frames, features)")
    if array.shape[0] == 0:
        raise ClipError("empty", f"{path} has no frames")
    if width is not None and array.shape[1] != width:
        raise ClipError("bad_shape", f"{path} has {array.shape[1]} features per frame; expected {width}")
    if not np.issubdtype(array.dtype, np.number):
        raise ClipError("unreadable", f"{path} holds {array.dtype}, not numbers")
    return array


def load_clip(video_id, gemma_dir, landmarks_dir, modality, num_frames, feature_dim=None):
    """Reads one clip's files and samples both streams onto the same time grid.

    Returns (gemma (L, D) float16 or None, landmarks (L, 162) float32 or None, number of non-finite landmark
    values that were zeroed). L = min(num_frames, longest stream): each stream covers the same clip window, so
    both are resampled uniformly to L frames and stay aligned even when their frame counts differ.
    """
    gemma = landmarks = None
    if modality in ("hybrid", "gemma"):
        gemma = read_array(feature_path(gemma_dir, video_id), feature_dim)
        # Features are stored as float16: a finite value beyond its range would become inf in the cache and turn
        # every step and score that touches the clip into NaN. (NaN fails the comparison too.)
        if not (np.abs(gemma) <= np.finfo(np.float16).max).all():
            raise ClipError("nonfinite", f"{feature_path(gemma_dir, video_id)} contains NaN, inf or values "
                                         "beyond the float16 range (|x| > 65504)")
    if modality in ("hybrid", "landmarks"):
        landmarks = read_array(landmark_path(landmarks_dir, video_id), LANDMARK_DIM)
    length = min(num_frames, max(len(a) for a in (gemma, landmarks) if a is not None))
    nonfinite = 0
    if gemma is not None:
        gemma = gemma[resample_indices(len(gemma), length)].astype(np.float16)
    if landmarks is not None:
        landmarks = landmarks[resample_indices(len(landmarks), length)].astype(np.float32)
        bad = ~np.isfinite(landmarks)
        nonfinite = int(bad.sum())
        landmarks[bad] = 0.0  # a NaN coordinate means "not detected", which the layout writes as zero
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


def _file_signature(path):
    try:
        st = os.stat(path)
        return [st.st_size, st.st_mtime_ns]
    except OSError:
        return None


def cache_key(split_name, clips, label_of, gemma_dir, landmarks_dir, modality, num_frames, feature_dim):
    """Hash of everything a packed split depends on: entries, settings, and each file's size and mtime,
    so that a changed, added or deleted file rebuilds the cache."""
    h = hashlib.sha1()
    h.update(json.dumps([CACHE_VERSION, split_name, modality, num_frames, feature_dim]).encode())
    for clip in clips:
        files = []
        if modality in ("hybrid", "gemma"):
            files.append(_file_signature(feature_path(gemma_dir, clip.video_id)))
        if modality in ("hybrid", "landmarks"):
            files.append(_file_signature(landmark_path(landmarks_dir, clip.video_id)))
        h.update(json.dumps([clip.video_id, label_of[clip.class_id], files]).encode())
    return h.hexdigest()[:16]


def pack_split(split_name, clips, label_of, gemma_dir, landmarks_dir, modality, num_frames, feature_dim=None,
               show_progress=True):
    """Reads every clip of a split (in parallel threads: file reads dominate) into one PackedSplit."""
    def read(clip):
        try:
            return load_clip(clip.video_id, gemma_dir, landmarks_dir, modality, num_frames, feature_dim)
        except ClipError as e:
            return e

    gemma_rows, landmark_rows, kept = [], [], []
    skipped, skipped_ids, details, sanitized = Counter(), {}, [], []
    nonfinite_values = 0
    with ThreadPoolExecutor(max_workers=8) as pool:
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
    for split_name in splits:
        clips = [c for c in clips_by_id.values() if c.subset == split_name]
        key = cache_key(split_name, clips, label_of, gemma_dir, landmarks_dir, modality, num_frames, feature_dim)
        folder = Path(cache_dir) / f"{Path(subset_name).stem}-{split_name}-{modality}-{key}" if cache_dir else None
        split = load_packed(folder) if folder else None
        if split is None:
            split = pack_split(split_name, clips, label_of, gemma_dir, landmarks_dir, modality, num_frames,
                               feature_dim, show_progress)
            if folder is not None:
                try:
                    save_packed(split, folder)
                except OSError as e:
                    print(f"warning: cannot write the feature cache under {cache_dir} ({e}); "
                          "continuing without it (set --cache_dir to a writable folder)")
        packed[split_name] = split
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
