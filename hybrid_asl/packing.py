"""Packed splits: every clip of a split read once into contiguous arrays, cached on disk, memory-mapped later.

The first run packs each split (Gemma features float16, landmarks float32, lengths and labels) into a cache folder
keyed by a digest of every file's content and the settings; later runs memory-map it, so the training loop never
opens a file.
"""
import hashlib
import json
import os
import shutil
import stat
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from tqdm import tqdm

from hybrid_asl.cli import available_memory_bytes
from hybrid_asl.clips import LANDMARK_DIM, gemma_file, landmarks_file, load_clip, pad_rows
from hybrid_asl.errors import ClipError, DataError
from hybrid_asl.files import few_found_hint, quote, read_text, remove_stale_temporaries, write_json
from hybrid_asl.recipe import read_extraction_dim, verify_feature_dimensions
from hybrid_asl.splits import SUBSETS, build_label_mapping, data_paths, load_glosses, load_split

CACHE_VERSION = 3  # 3: keyed by file content; out-of-range values and bad ids are skipped
DIGESTS_NAME = "file_digests.json"


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
        return ([gemma_file(gemma_dir, clip.video_id)] if modality in ("hybrid", "gemma") else []) + \
               ([landmarks_file(landmarks_dir, clip.video_id)] if modality in ("hybrid", "landmarks") else [])
    except ClipError:
        return []


def cache_key(split_name, clips, label_of, gemma_dir, landmarks_dir, modality, num_frames, gemma_dim,
              digests=None):
    """Hash of everything a packed split depends on: entries, settings, and the content of each clip's files,
    so that a changed, added or deleted file rebuilds the cache. digests: a FileDigests (files hashed in threads)."""
    digests = digests or FileDigests()
    files = [clip_files(clip, gemma_dir, landmarks_dir, modality) for clip in clips]
    flat = digests.digests([f for group in files for f in group])
    h = hashlib.sha1()
    h.update(json.dumps([CACHE_VERSION, split_name, modality, num_frames, gemma_dim]).encode())
    position = 0
    for clip, group in zip(clips, files):
        h.update(json.dumps([clip.video_id, label_of[clip.class_id], flat[position:position + len(group)]]).encode())
        position += len(group)
    return h.hexdigest()[:16]


def check_packing_memory(split_name, n_clips, modality, num_frames, gemma_dim):
    """Packing holds a split in memory before it is cached: say what fits before allocating it."""
    per_frame = (2 * (gemma_dim or 0) if modality in ("hybrid", "gemma") else 0) + \
        (4 * LANDMARK_DIM if modality in ("hybrid", "landmarks") else 0)
    need, available = n_clips * num_frames * per_frame, available_memory_bytes()
    if available and need > 0.8 * available:
        fits = int(0.8 * available // max(1, n_clips * per_frame))
        raise DataError(f"--num_frames {num_frames}: the {split_name} split ({n_clips} clips) needs "
                        f"{need / 1e9:.1f} GB of memory when packed, more than the {available / 1e9:.1f} GB "
                        f"available; --num_frames {fits} or fewer fits" if fits >= 1 else
                        f"the {split_name} split ({n_clips} clips) does not fit in the {available / 1e9:.1f} GB of "
                        "memory available even at one frame per clip")


def pack_split(split_name, clips, label_of, gemma_dir, landmarks_dir, modality, num_frames, gemma_dim=None,
               show_progress=True):
    """Reads every clip of a split (in parallel threads: file reads dominate) into one PackedSplit."""
    def read(clip):
        try:
            return load_clip(clip.video_id, gemma_dir, landmarks_dir, modality, num_frames, gemma_dim)
        except ClipError as e:
            return e

    check_packing_memory(split_name, len(clips), modality, num_frames, gemma_dim)
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

    lengths = np.array([len(g if g is not None else l) for g, l in zip(gemma_rows, landmark_rows)], dtype=np.int64)

    return PackedSplit(
        name=split_name, video_ids=[c.video_id for c in kept],
        labels=np.array([label_of[c.class_id] for c in kept], dtype=np.int64), lengths=lengths,
        gemma=pad_rows(gemma_rows, num_frames, np.float16), landmarks=pad_rows(landmark_rows, num_frames, np.float32),
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


def load_splits(clips_by_id, label_of, gemma_dir, landmarks_dir, modality, num_frames, gemma_dim,
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
                            gemma_dim, digests)
            folder = Path(cache_dir) / f"{Path(subset_name).stem}-{split_name}-{modality}-{key}"
            split = load_packed(folder)
        if split is None:
            if show_progress:  # the progress bar only shows on a terminal; logs get one line
                print(f"packing {split_name}: reading {len(clips)} clips" +
                      (f" into the cache under {cache_dir}" if cache_dir else ""), flush=True)
            split = pack_split(split_name, clips, label_of, gemma_dir, landmarks_dir, modality, num_frames,
                               gemma_dim, show_progress)
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




def load_run_data(args, gemma_dim_given, hint=""):
    """Everything a training run reads before it trains: the data folders from the flags, the split file, the
    Gemma feature width (extraction metadata, then the files; --gemma_feature_dim wins when given), the label
    mapping and the three packed splits. Prints what each split uses; raises DataError for what stops a run."""
    data_dir, split_path, gemma_dir, landmarks_dir, cache_dir = data_paths(args)
    clips = load_split(split_path, hint=hint)
    for stream, folder, flag, other in (("gemma", gemma_dir, "--gemma_features_dir", "landmarks"),
                                        ("landmarks", landmarks_dir, "--landmarks_dir", "gemma")):
        if args.modality in (stream, "hybrid") and not folder.is_dir():
            raise DataError(f"{quote(folder)} not found: set {flag} (README 'WLASL data layout') "
                            f"or train on the other stream only with --modality {other}")
    gemma_dim = None
    if args.modality != "landmarks":
        recorded = read_extraction_dim(gemma_dir)
        expected = args.gemma_feature_dim if gemma_dim_given or recorded is None else recorded
        gemma_dim = args.gemma_feature_dim = verify_feature_dimensions(gemma_dir, expected)
    glosses = load_glosses(data_dir)
    if not glosses:
        print(f"note: no wlasl_class_list.txt or WLASL_v0.3.json in {quote(data_dir)}: glosses are shown as class ids; "
              f"write '<class id><TAB><gloss>' lines to {quote(data_dir / 'wlasl_class_list.txt')} to see names")
    label_mapping = build_label_mapping(clips, glosses)
    label_of = {entry["wlasl_id"]: entry["index"] for entry in label_mapping}
    splits = load_splits(clips, label_of, gemma_dir, landmarks_dir, args.modality, args.num_frames, gemma_dim,
                         cache_dir=cache_dir, subset_name=split_path.name)
    print(f"{split_path}: {len(label_mapping)} classes, modality {args.modality}")
    for split in splits.values():
        print("  " + split.report())
    print_missing_hints(splits, clips, gemma_dir, landmarks_dir, args.modality)
    for split in splits.values():
        if len(split) == 0:
            folders = [str(d) for d, stream in ((gemma_dir, "gemma"), (landmarks_dir, "landmarks"))
                       if args.modality in (stream, "hybrid")]
            reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(split.skipped.items()))
            raise DataError(f"no usable {split.name} clip in {split_path} (of {split.listed} listed; skipped: "
                            f"{reasons or 'none'}): check {' and '.join(folders)} (README 'WLASL data layout')")
    train_counts = np.bincount(splits["train"].labels, minlength=len(label_mapping))
    if (train_counts == 0).any():
        empty = [str(label_mapping[i]["gloss"]) for i in np.flatnonzero(train_counts == 0)]
        print(f"warning: {len(empty)} classes have no training clip: {', '.join(empty[:10])}"
              + (" ..." if len(empty) > 10 else ""))
    return SimpleNamespace(data_dir=data_dir, split_path=split_path, gemma_dim=gemma_dim, label_mapping=label_mapping,
                           label_of=label_of, num_classes=len(label_mapping), splits=splits)


def print_missing_hints(splits, clips, gemma_dir, landmarks_dir, modality):
    """When most clips of a split file have no file, one hint per stream folder: where it looked, the name it
    expected, the closest name it saw (the usual cause is a wrong folder or a renamed file)."""
    listed = sum(split.listed for split in splits.values())
    missing = [v for split in splits.values() for v in split.skipped_ids.get("missing", [])]
    if not missing:
        return
    example = clips[missing[0]]
    for stream, folder, name in (("gemma", gemma_dir, gemma_file), ("landmarks", landmarks_dir, landmarks_file)):
        if modality not in (stream, "hybrid"):
            continue
        found = sum(1 for clip in clips.values() if any(f.is_file() for f in
                                                          clip_files(clip, gemma_dir, landmarks_dir, stream)))
        hint = few_found_hint(found, listed, folder, name(folder, example.video_id).name)
        if hint:
            print(hint)
