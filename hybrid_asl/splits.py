"""WLASL split files and class names: which clip is in which split, with which label, from which files.

    split file  nslt_*.json   {video_id: {"subset": "train"|"val"|"test", "action": [class_id, start_frame, end_frame]}}
    class list  wlasl_class_list.txt  "<class id>\t<gloss>" per line (or WLASL_v0.3.json)

The `subset` field decides train/val/test, never a random split. Class ids are global WLASL ids, mapped to contiguous
indices by build_label_mapping. A video id names files in the data folders, so it must be a plain name.
"""
import json
import os
from collections import namedtuple
from pathlib import Path

from hybrid_asl.errors import DataError
from hybrid_asl.files import quote, read_text

SUBSETS = ("train", "val", "test")
MODALITIES = ("hybrid", "landmarks", "gemma")
LAYOUT_HELP = "see README section 'WLASL data layout'"

Clip = namedtuple("Clip", "video_id subset class_id start_frame end_frame")


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
        raise DataError(f"split file {quote(path)} not found ({LAYOUT_HELP}{hint})")
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


def data_paths(args, base="."):
    """(data_dir, split file, gemma dir, landmarks dir, cache dir or None) from the data flags, relative paths taken
    from `base` (evaluate.py passes the folder training ran in)."""
    base = Path(base)
    data_dir = base / args.data_dir
    split_path = base / args.subset if (base / args.subset).is_file() else data_dir / args.subset
    gemma_dir = base / args.gemma_features_dir if args.gemma_features_dir else data_dir / "gemma_features"
    landmarks_dir = base / args.landmarks_dir if args.landmarks_dir else data_dir / "landmarks"
    cache_dir = None if args.no_cache else base / args.cache_dir if args.cache_dir else data_dir / ".cache"
    return data_dir, split_path, gemma_dir, landmarks_dir, cache_dir
