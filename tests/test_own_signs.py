"""Own data in three commands (README 'Train on your own signs'), run as a user runs them, on real sign videos.

    python -m pytest tests/test_own_signs.py -q

The end-to-end tests need the extras (pip install -r requirements-extract.txt) and ../shared/data/videos beside the
checkout, and skip without them; the split and error tests need neither. The real clips are few: 'abdomen' has 4
WLASL clips by 3 signers, the Mexican Sign Language glosses one clip each by one signer. So the single-clip glosses
are train-only classes (the command says so), and val and test hold abdomen clips only. No clip is faked or copied
to pad a class: the prediction is checked to name one of the glosses, not to be right.
"""
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import one_error_line, succeeded

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
VIDEOS = ROOT.parent / "shared" / "data" / "videos"

import prepare_own_signs as prep  # noqa: E402
from hybrid_asl.splits import video_id_problem  # noqa: E402

real_clips = pytest.mark.skipif(not (VIDEOS / "wlasl_raw").is_dir() or importlib.util.find_spec("mediapipe") is None
                                or importlib.util.find_spec("cv2") is None,
                                reason="needs ../shared/data/videos and the extras (pip install -r requirements-extract.txt)")
# Signers of the 4 WLASL clips (WLASL_v0.3.json, see ../shared/data/videos/NOTES.md); MSL-150 has one signer
SIGNERS = {"00335": "signer2", "00336": "signer13", "00338": "signer10", "00339": "signer10"}
TINY = ["--hidden_dim", "32", "--num_heads", "4", "--num_layers", "1", "--epochs", "3", "--warmup_epochs", "0",
        "--batch_size", "8", "--device", "cpu"]


def command(cwd, *argv):
    """`python <script> ...` as a user types it in cwd; the script is this checkout's."""
    script, *rest = argv
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, rest)], cwd=cwd, text=True,
                          capture_output=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))


def next_commands(stdout):
    """The two commands prepare_own_signs.py prints after 'next:', as argv lists without the leading `python`."""
    lines = stdout.split("\nnext:\n", 1)[1].splitlines()[:2]
    commands = [shlex.split(line) for line in lines]
    assert [c[:2] for c in commands] == [["python", "train_simple.py"], ["python", "predict.py"]], lines
    return [c[1:] for c in commands]


def link(src, dst):
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(src, dst)


def split_counts(out):
    """{gloss: {subset: clips}} from the written split file and class list."""
    names = dict(line.split("\t") for line in (out / "wlasl_class_list.txt").read_text().splitlines())
    counts = {}
    for entry in json.loads((out / "split.json").read_text()).values():
        gloss = names[str(entry["action"][0])]
        counts.setdefault(gloss, {"train": 0, "val": 0, "test": 0})[entry["subset"]] += 1
    return counts


# ---------------------------------------------------------------------------------------------------------------
# The three commands, folder per gloss

@real_clips
def test_folder_per_gloss_to_a_model_and_a_prediction_then_more_videos(tmp_path):
    signs = tmp_path / "my_signs"
    for name in SIGNERS:
        link(VIDEOS / "wlasl_raw" / f"{name}.mp4", signs / "abdomen" / f"{name}.mp4")
    for gloss in ("ambulancia", "yo"):
        link(VIDEOS / "msl150" / f"{gloss}_001.mp4", signs / gloss / f"{gloss}_001.mp4")
    (signs / "abdomen" / "notes.txt").write_text("not a video")
    (signs / "abdomen" / "broken.mp4").write_bytes(np.random.default_rng(0).bytes(5000))

    # 1. videos -> split file, class list, landmarks
    r = command(tmp_path, "prepare_own_signs.py", "my_signs", "--workers", "2")
    out = succeeded(r)
    data = tmp_path / "data" / "my_signs"
    assert (data / "wlasl_class_list.txt").read_text() == "0\tabdomen\n1\tambulancia\n2\tyo\n"
    assert split_counts(data) == {"abdomen": {"train": 2, "val": 1, "test": 1},
                                  "ambulancia": {"train": 1, "val": 0, "test": 0},
                                  "yo": {"train": 1, "val": 0, "test": 0}}
    manifest = json.loads((data / "manifest.json").read_text())
    ids = {c["source"]: c["video_id"] for c in manifest["clips"]}
    assert ids == {"abdomen/00335.mp4": "abdomen_00335", "abdomen/00336.mp4": "abdomen_00336",
                   "abdomen/00338.mp4": "abdomen_00338", "abdomen/00339.mp4": "abdomen_00339",
                   "ambulancia/ambulancia_001.mp4": "ambulancia_001", "yo/yo_001.mp4": "yo_001"}
    for video_id in ids.values():
        landmarks = np.load(data / "landmarks" / f"{video_id}_landmarks.npy")
        assert landmarks.shape[1] == 162 and landmarks.shape[0] > 50 and (landmarks[:, 126:] != 0).any()
    # the non-video and the unreadable video: skipped, named, counted; not in the split
    assert {s["file"] for s in manifest["skipped"]} == {"abdomen/notes.txt", "abdomen/broken.mp4"}
    assert "skipped 2 files:" in r.stderr and "abdomen/notes.txt: not a video" in r.stderr
    assert re.search(r"abdomen/broken\.mp4: unreadable video", r.stderr)
    assert "2 glosses have fewer than 3 clips (ambulancia 1, yo 1): all their clips are in train" in out
    assert re.search(r"abdomen\s+0\s+2\s+1\s+1\n", out)

    # 2. train, with the command it printed (tiny settings added)
    train, predict = next_commands(out)
    assert train == ["train_simple.py", "--data_dir", "data/my_signs", "--subset", "split.json",
                     "--modality", "landmarks", "--output_dir", "runs/my_signs"]
    succeeded(command(tmp_path, *train, *TINY))
    run = tmp_path / "runs" / "my_signs"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["num_classes"] == 3 and metrics["test"]["n"] == 1
    assert [e["gloss"] for e in json.loads((run / "label_mapping.json").read_text())] == ["abdomen", "ambulancia", "yo"]

    # 3. predict a video, with the command it printed: the answer is a gloss by name
    assert predict[:3] == ["predict.py", "--checkpoint", "runs/my_signs/best.pt"] and predict[3] == "--video"
    shown = succeeded(command(tmp_path, *predict, "--device", "cpu"))
    ranked = re.findall(r"^\s+\d\. (\S+)\s+[01]\.\d{3}", shown, re.M)
    assert sorted(ranked) == ["abdomen", "ambulancia", "yo"], shown

    # more videos later: the clips already there keep their ids, subsets and class ids; only the new one is extracted
    before = json.loads((data / "split.json").read_text())
    link(VIDEOS / "msl150" / "hoy_001.mp4", signs / "hoy" / "hoy_001.mp4")
    (signs / "abdomen" / "notes.txt").unlink()
    out = succeeded(command(tmp_path, "prepare_own_signs.py", "my_signs", "--seed", "7"))
    after = json.loads((data / "split.json").read_text())
    assert {k: after[k] for k in before} == before and set(after) - set(before) == {"hoy_001"}
    assert after["hoy_001"] == {"subset": "train", "action": [3, 1, -1]}  # a new gloss gets the next class id
    assert (data / "wlasl_class_list.txt").read_text().endswith("2\tyo\n3\thoy\n")
    counts = json.loads((data / "landmarks" / "extraction_metadata.json").read_text())["counts"]
    assert counts["extracted"] == 1 and counts["skipped_existing"] == 6
    assert "(6 kept where they were, 1 new)" in out and "made with --seed 0" in out


# ---------------------------------------------------------------------------------------------------------------
# A CSV with a signer column: whole signers held out

@real_clips
def test_csv_with_signers_holds_whole_signers_out_and_trains(tmp_path):
    clips = tmp_path / "recordings"
    for name in SIGNERS:
        link(VIDEOS / "wlasl_raw" / f"{name}.mp4", clips / f"{name}.mp4")
    (clips / "notes.txt").write_text("not a video")
    rows = ["path,gloss,signer"] + [f"recordings/{n}.mp4,abdomen,{s}" for n, s in SIGNERS.items()]
    rows += [f"{VIDEOS / 'msl150' / 'dolor_001.mp4'},dolor,msl", f"{VIDEOS / 'msl150' / 'hoy_001.mp4'},hoy,msl",
             "recordings/gone.mp4,abdomen,signer2", "recordings/notes.txt,abdomen,signer2"]
    (tmp_path / "signs.csv").write_text("\n".join(rows) + "\n")

    r = command(tmp_path, "prepare_own_signs.py", "signs.csv", "--output_dir", "data/csv_signs")
    out = succeeded(r)
    data = tmp_path / "data" / "csv_signs"
    manifest = json.loads((data / "manifest.json").read_text())
    assert len(manifest["clips"]) == 6 and manifest["split_by"] == "signer"
    subset_of = {}
    for c in manifest["clips"]:
        assert subset_of.setdefault(c["signer"], c["subset"]) == c["subset"], c  # a signer never spans subsets
    held_out = {s for s, subset in subset_of.items() if subset != "train"}
    assert {subset_of[s] for s in held_out} == {"val", "test"}
    assert held_out <= {"signer2", "signer13"}  # the two one-clip signers; signer10 and msl stay in train
    assert f"val: {''.join(s for s in held_out if subset_of[s] == 'val')}" in out
    assert split_counts(data)["abdomen"]["train"] == 2  # signer10's two clips
    assert "signs.csv line 8" in r.stderr and "recordings/gone.mp4" in r.stderr and "not found" in r.stderr
    assert "signs.csv line 9" in r.stderr and "not a video" in r.stderr and "skipped 2 files:" in r.stderr

    train, _ = next_commands(out)
    succeeded(command(tmp_path, *train, *TINY))
    metrics = json.loads((tmp_path / "runs" / "csv_signs" / "metrics.json").read_text())
    assert metrics["num_classes"] == 3 and metrics["test"]["n"] == 1 and metrics["val"]["n"] == 1


# ---------------------------------------------------------------------------------------------------------------
# The split on its own (no video needed)

def test_split_per_gloss_is_stratified_seeded_and_keeps_existing_clips():
    clips = [{"video_id": f"{g}_{i}", "gloss": g} for g, n in (("a", 10), ("b", 4), ("c", 2), ("d", 1))
             for i in range(n)]
    ratios = {"val": 0.15, "test": 0.15}
    subsets = prep.split_by_gloss(clips, {}, ratios, seed=0)
    per = {g: [sum(subsets[c["video_id"]] == s for c in clips if c["gloss"] == g) for s in ("train", "val", "test")]
           for g in "abcd"}
    assert per == {"a": [6, 2, 2], "b": [2, 1, 1], "c": [2, 0, 0], "d": [1, 0, 0]}
    assert prep.split_by_gloss(clips, {}, ratios, seed=0) == subsets  # a fixed seed, a fixed split
    assert any(prep.split_by_gloss(clips, {}, ratios, seed=s) != subsets for s in range(1, 5))
    # three more clips of 'b': its four stay put, the new ones fill toward the targets of 7 clips
    more = clips + [{"video_id": f"b_{i}", "gloss": "b"} for i in range(4, 7)]
    again = prep.split_by_gloss(more, subsets, ratios, seed=3)
    assert {k: again[k] for k in subsets} == subsets
    assert [sum(again[f"b_{i}"] == s for i in range(7)) for s in ("train", "val", "test")] == [5, 1, 1]


def test_split_by_signer_never_splits_a_signer_and_keeps_one_for_training():
    rng = np.random.default_rng(0)
    clips = [{"video_id": f"s{s}_{i}", "gloss": f"g{i % 5}", "signer": f"s{s}"}
             for s, n in enumerate(rng.integers(3, 30, size=12)) for i in range(n)]
    subsets = prep.split_by_signer(clips, {}, {"val": 0.15, "test": 0.15}, seed=0)
    place = {}
    for c in clips:
        assert place.setdefault(c["signer"], subsets[c["video_id"]]) == subsets[c["video_id"]]
    share = {s: sum(v == s for v in subsets.values()) / len(clips) for s in ("train", "val", "test")}
    assert 0.05 < share["val"] <= 0.2 and 0.05 < share["test"] <= 0.2 and share["train"] > 0.6
    # one signer with most of the clips and two small ones: the big one trains
    few = [{"video_id": f"{s}_{i}", "gloss": "g", "signer": s} for s, n in (("big", 50), ("x", 2), ("y", 3))
           for i in range(n)]
    placed = prep.split_by_signer(few, {}, {"val": 0.15, "test": 0.15}, seed=1)
    assert {placed["big_0"], placed["x_0"], placed["y_0"]} == {"train", "val", "test"} and placed["big_0"] == "train"


def test_video_ids_are_plain_unique_names():
    taken = set()
    ids = [prep.new_id(g, p, taken) for g, p in (("hello", "a/IMG 0001.MP4"), ("hello", "b/IMG_0001.mp4"),
                                                 ("thank you", "../x/thank you (2).mov"), ("señor", "señor.mp4"),
                                                 ("hello", "b/img_0001.mp4"), ("x", "..mp4"))]
    assert ids == ["hello_IMG_0001", "hello_IMG_0001_2", "thank_you_2", "señor", "hello_img_0001_3", "x_clip"]
    assert all(video_id_problem(i) is None for i in ids)


# ---------------------------------------------------------------------------------------------------------------
# Bad input: one line naming the file or flag and what to do, exit 2, nothing extracted

@pytest.fixture
def fake_signs(tmp_path):
    """A folder per gloss whose files are never decoded: every case below stops before extraction."""
    for name in ("hello/1.mp4", "bye/1.mp4"):
        (tmp_path / "my_signs" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "my_signs" / name).write_bytes(b"\0" * 100)
    return tmp_path


@pytest.mark.parametrize("case", ["output_is_a_file", "output_inside_input", "other_dataset", "other_input",
                                  "csv_bad_row", "csv_all_missing", "input_is_a_video", "gemma_model_missing",
                                  "ratios"])
def test_bad_input_is_one_line(fake_signs, case):
    t = fake_signs
    argv, mention = ["my_signs"], []
    if case == "output_is_a_file":
        (t / "taken").write_text("x")
        argv, mention = ["my_signs", "--output_dir", "taken"], ["--output_dir taken is a file"]
    elif case == "output_inside_input":
        argv, mention = ["my_signs", "--output_dir", "my_signs/data"], ["inside the input folder"]
    elif case == "other_dataset":
        (t / "data" / "my_signs").mkdir(parents=True)
        (t / "data" / "my_signs" / "nslt_100.json").write_text("{}")
        mention = ["--output_dir data/my_signs already holds other files", "--overwrite"]
    elif case == "other_input":
        (t / "data" / "my_signs").mkdir(parents=True)
        (t / "data" / "my_signs" / "manifest.json").write_text(json.dumps({"tool": prep.TOOL, "input": "/elsewhere"}))
        mention = ["holds the dataset made from /elsewhere", "--overwrite"]
    elif case == "csv_bad_row":
        (t / "signs.csv").write_text("my_signs/hello/1.mp4,hello\nmy_signs/bye/1.mp4\n")
        argv, mention = ["signs.csv"], ["signs.csv line 2 has 1 fields; expected path,gloss[,signer]"]
    elif case == "csv_all_missing":
        (t / "signs.csv").write_text("path,gloss\nhello.mp4,hello\n")
        argv, mention = ["signs.csv"], ["no video found in signs.csv", "hello.mp4 (signs.csv line 2): not found"]
    elif case == "input_is_a_video":
        argv, mention = ["my_signs/hello/1.mp4"], ["is a video; give the folder"]
    elif case == "gemma_model_missing":
        argv, mention = ["my_signs", "--gemma", "--gemma_model", str(t / "no_model")], ["--gemma_model", "no_model"]
    elif case == "ratios":
        argv, mention = ["my_signs", "--val_ratio", "0.6"], ["argument --val_ratio: must be a finite number in [0, 0.5]"]
    r = command(t, "prepare_own_signs.py", *argv)
    one_error_line(r, 2, *mention)
    assert not (t / "data" / "my_signs" / "landmarks").exists() and not (t / "my_signs" / "data").exists()
