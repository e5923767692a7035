"""What the two extraction tools share: which clips to process, which shard is ours, atomic outputs, metadata.

Each tool writes <output_dir>/{video_id}_<stream>.npy per clip and extraction_metadata.json (versions, settings,
counts, ids of clips with no video, refused entries, failed clips with the reason, per-clip notes).
"""
import json
import os
import sys

import numpy as np

from hybrid_asl.cli import run_cli
from hybrid_asl.errors import DataError
from hybrid_asl.files import atomic_write, few_found_hint, read_text, write_json
from hybrid_asl.splits import video_id_problem

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

    split: {video_id: Clip} from splits.load_split (its window is honoured), or None = every file with one
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




METADATA_NAME = "extraction_metadata.json"


def shard_metadata_name(index, count):
    return f"extraction_metadata.shard-{index}-of-{count}.json"


def read_metadata(output_dir):
    """The folder's extraction_metadata.json as a dict ({} when absent or unreadable)."""
    try:
        return json.loads(read_text(os.path.join(output_dir, METADATA_NAME), "metadata"))
    except (DataError, ValueError):
        return {}


def check_same_settings(output_dir, tool, settings, overwrite, flags=None):
    """A folder holds the outputs of one setting: a run with other settings (model, layer, frames per clip) would
    mix incompatible files. settings: {metadata key: value}, compared with the folder's metadata["settings"];
    flags: {metadata key: the flag's name} where they differ."""
    old = read_metadata(output_dir)
    if overwrite or old.get("tool") != tool:
        return
    recorded = {**old, **old.get("settings", {})}  # metadata of before 2026-12-03 kept the Gemma settings on top
    differ = [f"{(flags or {}).get(key, '--' + key)} {recorded.get(key)}" for key, value in settings.items()
              if recorded.get(key) != value]
    if differ:
        raise DataError(f"{output_dir} holds outputs made with {', '.join(differ)}; run with the same settings to "
                        "add clips, or use another --output_dir (--overwrite re-extracts everything)")


def write_metadata(output_dir, meta, index, count, suffix):
    """Writes this run's metadata; a sharded run writes its shard file, then merges when every shard is there.

    Every shard writes its own file before it tries the merge, so whichever shard finishes last (a torchrun
    rank or a machine given --shard) sees all of them and writes the merged extraction_metadata.json. An earlier
    run's metadata in the folder is added to, not replaced (add_to_earlier). Returns the path of the merged
    file, or None while shards are still missing.
    """
    if count == 1:
        path = os.path.join(output_dir, METADATA_NAME)
        write_json(path, add_to_earlier(read_metadata(output_dir), meta, output_dir, suffix))
        return path
    write_json(os.path.join(output_dir, shard_metadata_name(index, count)), meta)
    return merge_metadata(output_dir, count, suffix)


ID_LISTS = ("missing", "refused", "failed", "notes")  # per-clip lists, by video id (missing: plain ids)


def add_to_earlier(earlier, meta, output_dir, suffix):
    """This run's metadata with what earlier runs into the same folder recorded: a "runs" history (when, split,
    counts), the per-clip lists joined (this run's entry wins for an id it touched), entries of clips whose output
    exists now dropped, and outputs_present counted over the whole folder."""
    if earlier.get("tool") != meta.get("tool"):
        earlier = {}
    merged = dict(meta)
    merged["runs"] = earlier.get("runs", [] if not earlier else [run_record(earlier)]) + [run_record(meta)]
    done = {name[:-len(suffix)] for name in os.listdir(output_dir) if name.endswith(suffix)}

    def key(entry):
        return entry if isinstance(entry, str) else entry.get("video_id")
    for name in ID_LISTS:
        touched = {key(e) for e in meta.get(name, [])}
        kept = [e for e in earlier.get(name, []) if key(e) not in touched]
        entries = kept + list(meta.get(name, []))
        if name != "notes":  # a clip extracted since is no longer missing, refused or failed
            entries = [e for e in entries if key(e) not in done]
        merged[name] = sorted(entries, key=key)
    merged["counts"] = dict(meta["counts"], outputs_present=len(done))
    return merged


def run_record(meta):
    record = {k: meta.get(k) for k in ("created", "subset", "shard", "counts", "seconds")}
    if record["subset"] is None:  # extract_landmarks.py keeps it among its settings
        record["subset"] = meta.get("settings", {}).get("subset")
    return record


def merge_metadata(output_dir, count, suffix):
    """Merges the `count` shard files into extraction_metadata.json (counts summed, per-clip lists joined) if all
    exist, added to an earlier run's metadata."""
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
    for name in ID_LISTS:
        merged[name] = [e for p in parts for e in p.get(name, [])]
    merged["seconds"] = max(p.get("seconds", 0) for p in parts)
    path = os.path.join(output_dir, METADATA_NAME)
    write_json(path, add_to_earlier(read_metadata(output_dir), merged, output_dir, suffix))
    return path


def close_run(output_dir, meta, index, count, failed, noted, suffix):
    """The end of an extraction run: writes its metadata (write_metadata), then one named warning per failed clip and per note (what was
    done about a partial video or a window). Returns (merged metadata path or None, the file this run wrote)."""
    merged = write_metadata(output_dir, meta, index, count, suffix)
    for video_id, reason in sorted(failed):
        print(f"warning: {video_id} skipped: {reason}", file=sys.stderr)
    for video_id, note in sorted(noted):
        print(f"warning: {video_id}: {note}", file=sys.stderr)
    return merged, merged or os.path.join(output_dir, shard_metadata_name(index, count))


def outcome(missing_part, refused, failed, noted):
    """The summary line's counts after the missing ones."""
    return (f"{missing_part}, refused {len(refused)}, failed {len(failed)}"
            + (f", {len(noted)} warnings" if noted else ""))


def run_extractor(main, argv=None):
    """An extractor's entry point: one line and exit 2 for a user error, 130/143 for Ctrl-C/SIGTERM (every clip
    extracted so far is kept, and a second run skips it)."""
    def cli(args):
        main(args)
        return 0
    return run_cli(cli, argv, interrupted="interrupted; every clip finished so far is saved: run the same command "
                                          "again to continue")


def missing_videos_hint(jobs, missing, videos_dir, extensions):
    """few_found_hint for the videos of a split: how the first missing id's file would be named."""
    if not missing or not videos_dir:
        return None
    return few_found_hint(len(jobs) - len(missing), len(jobs), videos_dir, f"{missing[0]}{extensions[0]}")
