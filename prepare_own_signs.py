"""
prepare_own_signs.py - your own sign videos -> a dataset train_simple.py trains on: split file, class list, landmarks.

    pip install -r requirements-extract.txt           # MediaPipe and OpenCV (nothing is downloaded at run time)
    python prepare_own_signs.py my_signs              # my_signs/<gloss>/*.mp4: one folder per gloss
    python prepare_own_signs.py my_signs.csv          # CSV rows path,gloss[,signer] (paths relative to the CSV)
    python train_simple.py --data_dir data/my_signs --subset split.json --modality landmarks --output_dir runs/my_signs
    python predict.py --checkpoint runs/my_signs/best.pt --video new_clip.mp4

Writes to --output_dir (default data/my_signs):
  split.json             {video_id: {"subset": "train"|"val"|"test", "action": [class_id, 1, -1]}} (whole clips)
  wlasl_class_list.txt   "<class id>\\t<gloss>": ids 0..N-1 in gloss order (a gloss added later gets the next id)
  manifest.json          which video became which id, its gloss, signer and subset; the settings; skipped files
  landmarks/             {video_id}_landmarks.npy, extracted by extract_landmarks.py's code (MediaPipe Holistic)
  videos/                links to your videos, named by id (what the extractors read)
  gemma_features/        with --gemma only: {video_id}_gemma.npy (needs a Gemma 3 model on disk, see README)

The split is stratified per gloss with a fixed --seed. With a signer column naming 3 or more signers, whole signers
are held out: every clip of a signer is in one subset, so val and test measure signers the model never saw. A gloss with fewer than 3 clips
goes to train only (it cannot be measured). Running it again on the same input adds new videos and keeps every
clip already in the split where it was; videos that are gone leave the split. Files that are not videos, missing
or unreadable are skipped, named and counted.
"""
import argparse
import csv
import json
import os
import random
import re
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path

from hybrid_asl.cli import HelpFormatter, float_range, int_range, run_cli
from hybrid_asl.errors import DataError
from hybrid_asl.files import atomic_write_text, make_folder, quote, read_text, write_json
from hybrid_asl.splits import SUBSETS, video_id_problem
from hybrid_asl.video import VIDEO_EXTENSIONS

SPLIT_NAME, CLASS_LIST, MANIFEST = "split.json", "wlasl_class_list.txt", "manifest.json"
LINKS, LANDMARKS, GEMMA = "videos", "landmarks", "gemma_features"
TOOL = "prepare_own_signs.py"
MIN_CLIPS = 3  # a gloss needs one clip in each of train, val and test to be measured
MIN_SIGNERS = 3  # and holding signers out needs one for each of them


def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("input", help="a folder with one subfolder of videos per gloss, or a CSV of path,gloss[,signer]")
    p.add_argument("--output_dir", default="data/my_signs", help="the dataset folder to make (or add to)")
    g = p.add_argument_group("split")
    g.add_argument("--val_ratio", type=float_range(0.0, 0.5), default=0.15, help="share of each gloss's clips in val")
    g.add_argument("--test_ratio", type=float_range(0.0, 0.5), default=0.15, help="share of each gloss's clips in test")
    g.add_argument("--seed", type=int_range(0, 2**32 - 1), default=0, help="seed of the split (same seed, same split)")
    g = p.add_argument_group("extraction")
    g.add_argument("--workers", type=int_range(1, 256), default=1, help="MediaPipe worker processes (one core each)")
    g.add_argument("--gemma", action="store_true",
                   help="also extract Gemma 3 features (extract_gemma_features.py; needs the model on disk)")
    g.add_argument("--gemma_model", default=None,
                   help="with --gemma: a Gemma 3 model name or local folder (none: google/gemma-3-4b-it from the "
                        "Hugging Face cache)")
    g.add_argument("--overwrite", action="store_true",
                   help="start the dataset again: a new split and every clip re-extracted, also over a folder that "
                        "holds another dataset")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------------------------------------------
# The input: (source path, how the user named it, gloss, signer) per video; skipped files with the reason

def clean_gloss(text, where):
    gloss = text.strip()
    if not gloss or any(ord(c) < 32 or ord(c) == 127 for c in gloss):  # the class list is one gloss per line
        raise DataError(f"{where}: gloss {text!r} is empty or holds control characters; give it a name")
    return gloss


def scan_folders(root):
    """root/<gloss>/**/<video>: every video file under a gloss folder, in name order."""
    videos, skipped = [], []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.name.startswith("."):  # .DS_Store, .git: never data
            continue
        if not entry.is_dir():
            skipped.append((entry.name, "not in a gloss folder (put videos in <input>/<gloss>/)"))
            continue
        gloss, found = clean_gloss(entry.name, f"{root}/{entry.name}"), 0
        for folder, dirs, files in os.walk(entry.path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(f for f in files if not f.startswith(".")):
                rel = os.path.relpath(os.path.join(folder, name), root)
                if not name.lower().endswith(VIDEO_EXTENSIONS):
                    skipped.append((rel, f"not a video ({', '.join(VIDEO_EXTENSIONS)})"))
                    continue
                videos.append((os.path.join(folder, name), rel, gloss, None))
                found += 1
        if not found:
            skipped.append((entry.name + "/", "holds no video"))
    return videos, skipped


def scan_csv(path):
    """Rows path,gloss[,signer] (an optional header names the columns); paths relative to the CSV's folder."""
    base = os.path.dirname(os.path.abspath(path))
    rows = [(n, row) for n, row in enumerate(csv.reader(read_text(path, "CSV").lstrip("\ufeff").splitlines()), 1)
            if row and any(c.strip() for c in row) and not row[0].lstrip().startswith("#")]
    if not rows:
        raise DataError(f"{path} holds no row; write one path,gloss[,signer] line per video")
    columns = {"path": 0, "gloss": 1, "signer": 2}
    header = [c.strip().lower() for c in rows[0][1]]
    if "gloss" in header:
        if "path" not in header:
            raise DataError(f"{path} line {rows[0][0]}: the header names {header}; it needs path and gloss "
                            "(and optionally signer)")
        columns = {k: header.index(k) for k in ("path", "gloss", "signer") if k in header}
        rows = rows[1:]
    with_signer = "signer" in columns and any(len(row) > columns["signer"] and row[columns["signer"]].strip()
                                              for _, row in rows)
    videos, skipped, seen = [], [], {}
    for n, row in rows:
        where = f"{path} line {n}"
        if len(row) < 2 or len(row) > 3 and "gloss" not in header:
            raise DataError(f"{where} has {len(row)} fields; expected path,gloss[,signer] "
                            "(quote a path or gloss that holds a comma)")
        cells = [row[i].strip() if i < len(row) else "" for i in range(max(columns.values()) + 1)]
        signer = cells[columns["signer"]] if with_signer else None
        if with_signer and not signer:
            raise DataError(f"{where} has no signer while other rows do; give every row a signer, or none")
        shown = cells[columns["path"]]
        source = os.path.join(base, os.path.expanduser(shown))
        why = ("no path" if not shown else "not found" if not os.path.exists(source) else
               "is a folder, not a video" if os.path.isdir(source) else
               f"not a video ({', '.join(VIDEO_EXTENSIONS)})" if not shown.lower().endswith(VIDEO_EXTENSIONS) else
               f"listed again (first on line {seen[os.path.realpath(source)]})" if os.path.realpath(source) in seen
               else None)
        if why:
            skipped.append((f"{shown or '(empty)'} ({where})", why))
            continue
        seen[os.path.realpath(source)] = n
        videos.append((source, shown, clean_gloss(cells[columns["gloss"]], where), signer))
    return videos, skipped


# ----------------------------------------------------------------------------------------------------------------
# Ids, classes and the split

def plain_id(text):
    """A video id from a name: letters (any script), digits, '_' and '-' only, so it is always a plain file name."""
    return re.sub(r"[^\w-]+", "_", text).strip("_-")[:60] or "clip"


def new_id(gloss, source, taken):
    """{gloss}_{file name}, sanitized and unique (case-insensitively: macOS and Windows folders ignore case)."""
    stem, prefix = plain_id(Path(source).stem), plain_id(gloss)
    base = stem if stem.lower().startswith(prefix.lower()) else f"{prefix}_{stem}"
    video_id, k = base, 2
    while video_id.lower() in taken:
        video_id, k = f"{base}_{k}", k + 1
    assert video_id_problem(video_id) is None, video_id
    taken.add(video_id.lower())
    return video_id


def targets(n, ratios):
    """How many of n clips (or clips of held-out signers) each subset should hold: val and test get their share
    (at least one each when n >= MIN_CLIPS), train keeps at least one; under MIN_CLIPS all train."""
    if n < MIN_CLIPS:
        return {"train": n, "val": 0, "test": 0}
    out = {s: max(int(n * ratios[s] + 0.5), 1 if ratios[s] > 0 else 0) for s in ("val", "test")}
    while out["val"] + out["test"] > n - 1:
        out["val" if out["val"] >= out["test"] else "test"] -= 1
    return dict(out, train=n - out["val"] - out["test"])


def fill(groups, counts, target, rng):
    """Assigns new groups (name -> clip count) to subsets: test, then val, while each is below its target; the rest
    train. counts: clips each subset already holds (they stay). A group larger than what is left of a target is
    taken only into an empty subset, and only when it is the smallest left (one signer of 50 clips would otherwise
    swallow a 10-clip test set). Enough groups are kept back for val and train to get one each."""
    order = sorted(groups)
    rng.shuffle(order)
    assigned = {}
    for subset, later in (("test", ("val", "train")), ("val", ("train",))):
        for name in list(order):
            kept_back = sum(counts[s] == 0 and (s == "train" or target[s] > 0) for s in later)
            if counts[subset] >= target[subset] or len(order) <= kept_back:
                break
            w = groups[name]
            if counts[subset] + w <= target[subset] or (counts[subset] == 0 and w == min(groups[g] for g in order)):
                assigned[name], counts[subset] = subset, counts[subset] + w
                order.remove(name)
    for name in order:
        assigned[name], counts["train"] = "train", counts["train"] + groups[name]
    return assigned


def split_by_gloss(clips, kept, ratios, seed):
    """video_id -> subset: per gloss, kept clips stay; new clips fill each subset up to the gloss's targets."""
    subsets, by_gloss = dict(kept), {}
    for c in clips:
        by_gloss.setdefault(c["gloss"], []).append(c)
    for gloss, members in by_gloss.items():
        counts = {s: sum(kept.get(c["video_id"]) == s for c in members) for s in SUBSETS}
        new = {c["video_id"]: 1 for c in members if c["video_id"] not in kept}
        subsets.update(fill(new, counts, targets(len(members), ratios), random.Random(f"{seed}/{gloss}")))
    return subsets


def split_by_signer(clips, kept, ratios, seed):
    """video_id -> subset with whole signers held out; a signer already in the split stays in its subset."""
    size, known = {}, {}
    for c in clips:
        size[c["signer"]] = size.get(c["signer"], 0) + 1
        if c["video_id"] in kept:
            known.setdefault(c["signer"], kept[c["video_id"]])
    counts = {s: sum(n for signer, n in size.items() if known.get(signer) == s) for s in SUBSETS}
    new = {signer: n for signer, n in size.items() if signer not in known}
    target = targets(len(clips), ratios)
    place = dict(known, **fill(new, counts, target, random.Random(f"{seed}/signers")))
    return {c["video_id"]: kept.get(c["video_id"], place[c["signer"]]) for c in clips}


# ----------------------------------------------------------------------------------------------------------------
# The output folder: whose it is, what it held before, no input inside it

def inside(path, folder):
    """path is folder or lies in it (both already resolved with os.path.realpath)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_no_overlap(out, input_path, videos):
    """Nothing this command writes may be, hold or sit inside one of its inputs."""
    if os.path.isdir(input_path) and inside(os.path.realpath(out), os.path.realpath(input_path)):
        raise DataError(f"--output_dir {out} is inside the input folder {input_path}: a later run would read it "
                        "as a gloss; choose a folder outside it")
    inputs = {os.path.realpath(i): i for i in [input_path] + [v[0] for v in videos]}
    for o in [out / name for name in (SPLIT_NAME, CLASS_LIST, MANIFEST, LINKS, LANDMARKS, GEMMA, ".cache")]:
        real = os.path.realpath(o)
        for i, shown in inputs.items():
            if inside(real, i) or inside(i, real):
                raise DataError(f"--output_dir {out}: {o} would overlap the input {shown}; choose an --output_dir "
                                "outside the input folder")


def previous_dataset(out, input_path, split_by, overwrite):
    """The manifest of the dataset this folder already holds, when it is this input's; {} for a new folder or with
    --overwrite. A folder that holds anything else is refused unless --overwrite."""
    if not out.is_dir() or not any(out.iterdir()):
        return {}
    old = read_manifest(out / MANIFEST)
    if overwrite:  # its clips are replaced: their links and extracted files are removed
        return old if old.get("tool") == TOOL else {}
    if old.get("tool") != TOOL:
        raise DataError(f"--output_dir {out} already holds other files (not a dataset made by {TOOL}); choose "
                        "another --output_dir, or pass --overwrite to write this dataset into it")
    if old.get("input") != os.path.abspath(input_path):
        raise DataError(f"--output_dir {out} holds the dataset made from {old.get('input')}; choose another "
                        f"--output_dir, or pass --overwrite to replace it with one made from {input_path}")
    if old.get("split_by", split_by) != split_by:  # kept clips could not keep their subsets under the other rule
        raise DataError(f"--output_dir {out} was split by {old['split_by']} and this input would be split by "
                        f"{split_by} (a signer column with {MIN_SIGNERS} or more signers); pass --overwrite to split every clip again")
    return old


def read_manifest(path):
    try:
        return json.loads(read_text(path, "manifest"))
    except (DataError, ValueError):
        return {}


def link_video(source, link):
    """links/<id>.<ext> -> the user's video, so the extractors find it by id. Symlink; a hard link or a copy where
    the file system has no symlinks."""
    for make in (lambda: os.symlink(os.path.abspath(source), link), lambda: os.link(source, link),
                 lambda: shutil.copyfile(source, link)):
        try:
            return make()
        except OSError:
            continue
    raise DataError(f"cannot write {link}; check that --output_dir is writable")


def remove_quietly(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise DataError(f"cannot remove {path} ({e.strerror}); check the folder's permissions")


def assign_ids(videos, before):
    """The clips with their ids: a video already in the dataset (same source, same gloss) keeps its id; one whose
    size or time changed since is listed in `changed`. -> (clips, changed ids)"""
    taken = {c["video_id"].lower() for c in before.values()}
    clips, changed = [], []
    for path, shown, gloss, signer in videos:
        stat, prior = os.stat(path), before.get(shown)
        if prior is not None and prior["gloss"] == gloss:
            video_id = prior["video_id"]
            if (prior.get("size"), prior.get("mtime_ns")) != (stat.st_size, stat.st_mtime_ns):
                changed.append(video_id)  # replaced in place: extracted again
        else:
            video_id = new_id(gloss, path, taken)
        clips.append({"video_id": video_id, "source": shown, "gloss": gloss, "signer": signer, "path": path,
                      "link": video_id + Path(path).suffix.lower(), "size": stat.st_size,
                      "mtime_ns": stat.st_mtime_ns})
    return clips, changed


# ----------------------------------------------------------------------------------------------------------------
# The command

def main(argv=None):
    args = get_args(argv)
    ratios = {"val": args.val_ratio, "test": args.test_ratio}
    if args.val_ratio + args.test_ratio > 0.9:
        raise DataError(f"--val_ratio {args.val_ratio} + --test_ratio {args.test_ratio} leave under 10% for "
                        "training; lower them")
    source = args.input
    if not os.path.exists(source):
        raise DataError(f"input {source} not found; give a folder of <gloss>/ subfolders or a CSV of path,gloss[,signer]")
    is_folder = os.path.isdir(source)
    if not is_folder and source.lower().endswith(VIDEO_EXTENSIONS):
        raise DataError(f"input {source} is a video; give the folder of <gloss>/ subfolders that holds it, or a CSV")
    if not args.output_dir.strip():
        raise DataError("--output_dir is empty; give a folder (default data/my_signs)")
    videos, skipped = scan_folders(source) if is_folder else scan_csv(source)
    if not videos:
        examples = "; ".join(f"{name}: {why}" for name, why in skipped[:2]) + ("; ..." if len(skipped) > 2 else "")
        raise DataError(f"no video found in {source} ({len(skipped)} skipped{': ' + examples if skipped else ''}); "
                        + ("put videos in <input>/<gloss>/" if is_folder else "check the paths in the CSV"))
    if args.gemma:  # fail in one line now, not after the landmarks of every clip
        from hybrid_asl.gemma_vision import DEFAULT_MODEL, resolve_model_dir
        try:
            resolve_model_dir(args.gemma_model or DEFAULT_MODEL)
        except DataError as e:
            raise DataError(str(e).replace("--model_name", "--gemma_model")) from None
    with_signers = videos[0][3] is not None
    split_by = "signer" if len({v[3] for v in videos}) >= MIN_SIGNERS else "gloss"
    out = Path(args.output_dir)
    check_no_overlap(out, source, videos)
    old = previous_dataset(out, source, split_by, args.overwrite)
    make_folder(out, "--output_dir")
    links = out / LINKS
    if links.is_dir():  # the extractors read every video there: only our own links may be in it
        foreign = sorted(set(os.listdir(links)) - set(old.get("links", [])))
        if foreign:
            raise DataError(f"{links} holds files this command did not make (e.g. {foreign[0]}); choose another "
                            "--output_dir")
    make_folder(links, "--output_dir")

    # ---- ids: a clip already in the dataset keeps its id, class and subset ----------------------------------------
    before = {} if args.overwrite else {c["source"]: c for c in old.get("clips", [])}
    clips, changed = assign_ids(videos, before)
    current = {c["video_id"] for c in clips}
    gone = [c for c in old.get("clips", []) if c["video_id"] not in current or args.overwrite]
    for video_id in [c["video_id"] for c in gone] + changed:  # our own outputs for a video that changed or left
        for folder, suffix in ((LANDMARKS, "_landmarks.npy"), (GEMMA, "_gemma.npy")):
            remove_quietly(out / folder / f"{video_id}{suffix}")
    for name in old.get("links", []):
        remove_quietly(links / name)
    for c in clips:
        link_video(c["path"], links / c["link"])
    # written now, so that a run stopped during extraction is continued by the same command, not refused
    write_json(out / MANIFEST, dict({} if args.overwrite else old, tool=TOOL, input=os.path.abspath(source),
                                    split_by=split_by, links=sorted(c["link"] for c in clips),
                                    clips=[c for c in before.values() if c["video_id"] in current]))

    # ---- landmarks, with extract_landmarks.py's own code (resumable: clips already extracted are skipped) ---------
    import extract_landmarks
    meta = extract_landmarks.main(["--videos_dir", str(links), "--output_dir", str(out / LANDMARKS),
                                   "--workers", str(args.workers)] + (["--overwrite"] if args.overwrite else []))
    failed = {f["video_id"]: f["reason"] for f in meta.get("failed", [])}
    unreadable = [c for c in clips if not (out / LANDMARKS / f"{c['video_id']}_landmarks.npy").is_file()]
    skipped += [(c["source"], "unreadable video: " + failed.get(c["video_id"], "no landmarks").replace(
        str(links / c["link"]), c["path"])) for c in unreadable]
    clips = [c for c in clips if c["video_id"] not in {u["video_id"] for u in unreadable}]
    if not clips:
        raise DataError(f"none of the {len(videos)} videos in {source} could be read; check that they play")

    # ---- classes (ids kept, new glosses appended in gloss order) and the split -----------------------------------
    glosses = sorted({c["gloss"] for c in clips})
    classes = {g: i for g, i in ({} if args.overwrite else old.get("classes", {})).items() if g in glosses}
    for gloss in glosses:
        if gloss not in classes:
            classes[gloss] = max(classes.values(), default=-1) + 1
    usable = {c["video_id"] for c in clips}
    kept = {c["video_id"]: c["subset"] for c in before.values() if c["video_id"] in usable}
    subsets = (split_by_signer if split_by == "signer" else split_by_gloss)(clips, kept, ratios, args.seed)
    for c in clips:
        c["class_id"], c["subset"] = classes[c["gloss"]], subsets[c["video_id"]]
    split = {c["video_id"]: {"subset": c["subset"], "action": [c["class_id"], 1, -1]}
             for c in sorted(clips, key=lambda c: c["video_id"])}
    write_json(out / SPLIT_NAME, split)
    atomic_write_text(out / CLASS_LIST, "".join(f"{i}\t{g}\n" for g, i in sorted(classes.items(), key=lambda x: x[1])))
    write_json(out / MANIFEST, {
        "tool": TOOL, "input": os.path.abspath(source), "layout": "folder per gloss" if is_folder else "csv",
        "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seed": args.seed, "val_ratio": args.val_ratio, "test_ratio": args.test_ratio,
        "split_by": split_by, "split_file": SPLIT_NAME, "classes": classes,
        "clips": [{k: c[k] for k in ("video_id", "source", "gloss", "class_id", "signer", "subset", "size",
                                     "mtime_ns")} for c in sorted(clips, key=lambda c: c["video_id"])],
        "links": sorted(c["link"] for c in clips + unreadable),
        "skipped": [{"file": name, "reason": why} for name, why in skipped],
    })

    # ---- optional Gemma features, with extract_gemma_features.py's own code ---------------------------------------
    if args.gemma:
        import extract_gemma_features
        extract_gemma_features.main(["--videos_dir", str(links), "--subset", str(out / SPLIT_NAME),
                                     "--output_dir", str(out / GEMMA)]
                                    + (["--model_name", args.gemma_model] if args.gemma_model else [])
                                    + (["--overwrite"] if args.overwrite else []))
    report(args, out, source, clips, classes, skipped, old, kept, gone, changed, with_signers, split_by == "signer")
    return 0


def report(args, out, source, clips, classes, skipped, old, kept, gone, changed, with_signers, signers_used):
    """What was made: clips per gloss and subset, held-out signers, skipped files, files written, what to run next."""
    print(f"\n{out}: {len(clips)} clips of {len(classes)} glosses from {source}"
          + (f" ({len(kept)} kept where they were, {len(clips) - len(kept)} new)" if old.get("clips") and not args.overwrite
             else ""))
    counts = {g: {s: 0 for s in SUBSETS} for g in classes}
    for c in clips:
        counts[c["gloss"]][c["subset"]] += 1
    print(f"  {'gloss':<20} {'class':>5} {'train':>6} {'val':>5} {'test':>5}")
    for gloss, i in sorted(classes.items(), key=lambda x: x[1])[:50]:
        print(f"  {gloss:<20} {i:>5} " + " ".join(f"{counts[gloss][s]:>{w}}" for s, w in zip(SUBSETS, (6, 5, 5))))
    if len(classes) > 50:
        print(f"  ... {len(classes) - 50} more glosses (all in {out / MANIFEST})")
    totals = {s: sum(1 for c in clips if c["subset"] == s) for s in SUBSETS}
    print(f"  {'all':<20} {'':>5} {totals['train']:>6} {totals['val']:>5} {totals['test']:>5}")
    if signers_used:
        by = {s: sorted({str(c["signer"]) for c in clips if c["subset"] == s}) for s in SUBSETS}
        print("held-out signers (every clip of a signer is in one subset): "
              + "; ".join(f"{s}: {', '.join(by[s]) or 'none'}" for s in SUBSETS))
        no_train = sorted(g for g in classes if counts[g]["train"] == 0)
        if no_train:
            print(f"warning: {len(no_train)} glosses have no training clip (all their clips are by held-out signers): "
                  f"{', '.join(no_train[:10])}; record them with a training signer too")
    elif with_signers:
        print(f"note: the signer column names fewer than {MIN_SIGNERS} signers, so signers cannot be held out of both "
              "val and test; the clips were split per gloss instead")
    few = sorted(g for g in classes if sum(counts[g].values()) < MIN_CLIPS)
    if few and not signers_used:
        print(f"note: {len(few)} glosses have fewer than {MIN_CLIPS} clips "
              f"({', '.join(f'{g} {sum(counts[g].values())}' for g in few[:8])}{', ...' if len(few) > 8 else ''}): "
              f"all their clips are in train, so val and test do not measure them; record {MIN_CLIPS} or more")
    if not totals["val"] or not totals["test"]:
        print(f"warning: no clip in {'val' if not totals['val'] else 'test'}: train_simple.py needs val and test "
              f"clips; record at least {MIN_CLIPS} clips of some gloss (or raise --val_ratio/--test_ratio)")
    if "seed" in old and not args.overwrite and (old.get("seed"), old.get("val_ratio"), old.get("test_ratio")) != \
            (args.seed, args.val_ratio, args.test_ratio):
        print(f"note: clips already in the split kept their subsets (made with --seed {old.get('seed')} "
              f"--val_ratio {old.get('val_ratio')} --test_ratio {old.get('test_ratio')}); --overwrite splits all again")
    if gone and not args.overwrite:
        print(f"note: {len(gone)} clips whose video is gone left the split (e.g. {gone[0]['source']})")
    if changed:
        print(f"note: {len(changed)} videos changed since the last run and were extracted again")
    if skipped:
        print(f"skipped {len(skipped)} file{'s' if len(skipped) > 1 else ''}:", file=sys.stderr)
        for name, why in skipped[:20]:
            print(f"  {name}: {why}", file=sys.stderr)
        if len(skipped) > 20:
            print(f"  ... {len(skipped) - 20} more, all in {out / MANIFEST}", file=sys.stderr)
    has_gemma = args.gemma and (out / GEMMA).is_dir()
    print(f"wrote {out}/: {SPLIT_NAME}, {CLASS_LIST}, {MANIFEST} (which video is which id), {LANDMARKS}/, "
          f"{LINKS}/ (links to the videos, by id)" + (f", {GEMMA}/" if has_gemma else ""))
    run_dir = Path("runs") / out.name
    example = next((c for c in clips if c["subset"] == "test"), clips[0])
    print("next:")
    print(f"  python train_simple.py --data_dir {quote(out)} --subset {SPLIT_NAME}"
          + ("" if has_gemma else " --modality landmarks") + f" --output_dir {quote(run_dir)}")
    print(f"  python predict.py --checkpoint {quote(run_dir / 'best.pt')} --video "
          f"{quote(example['path'])}")
    if not has_gemma:
        print("(Gemma 3 features as a second stream: get the model (README 'Preparing WLASL', step 3), run this "
              "again with --gemma, then train without --modality landmarks)")


def run(argv=None):
    return run_cli(main, argv, interrupted="interrupted; every clip extracted so far is kept: run the same command "
                                           "again to continue")


if __name__ == "__main__":
    sys.exit(run())
