"""A newcomer's first hour (issue 16), through the real command lines on tiny generated data.

    python -m pytest tests/test_first_hour.py -q

Familiar flags (aliases, --balanced_sampling, the refused --val_split, the warmup warning), the run folder
(train.log, a finished run resumed, best.pt against last.pt, evaluate/predict from another working directory, the
confusion matrix), --help of every tool, and the hints a user meets first: no class list, files not found,
paths with spaces, the pre-flight check's next command, extraction metadata added to. The extraction tests need
mediapipe and OpenCV (pip install -r requirements-extract.txt) and the merge test the real clips in ../shared;
they skip without them.
"""
import csv
import fcntl
import json
import os
import pty
import re
import shlex
import shutil
import struct
import subprocess
import sys
import termios
import threading
from pathlib import Path

import numpy as np
import pytest

import evaluate
from helpers import one_error_line, succeeded, train_run
from hybrid_asl import plots
from hybrid_asl.batches import BatchLoader
from hybrid_asl.checkpoint import load_checkpoint
from hybrid_asl.files import quote
from hybrid_asl.metrics import CONFUSION_MATRIX_FIELDS
from test_nslt1000_fixes import make_wlasl_layout

ROOT = Path(__file__).resolve().parents[1]
WLASL_RAW = ROOT.parent / "shared" / "data" / "videos" / "wlasl_raw"
TINY = ["--hidden_dim", "16", "--num_heads", "2", "--batch_size", "8", "--device", "cpu"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def python(*argv, cwd=ROOT, timeout=300):
    """`python argv` in cwd (a script of the repo is named by its absolute path): the CompletedProcess (text)."""
    return subprocess.run([sys.executable, *map(str, argv)], cwd=cwd, env=ENV, text=True, capture_output=True,
                          timeout=timeout)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def needs_extraction():
    for module in ("mediapipe", "cv2"):
        pytest.importorskip(module, reason="extras not installed: pip install -r requirements-extract.txt")


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A user's folder: data/ (3 classes, 4/2/2 clips each) beside which runs are started with relative paths."""
    root = tmp_path_factory.mktemp("first_hour")
    make_wlasl_layout(root / "work" / "data", num_classes=3, clips_per_class=(4, 2, 2))
    (root / "elsewhere").mkdir()
    return root


@pytest.fixture(scope="module")
def first_run(work):
    """`python train_simple.py` from work/ with relative paths and the familiar flags, its stderr on a terminal (a
    pty) so that tqdm draws its progress bars: (stdout, what the terminal got on stderr, run folder)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 0 columns: tqdm draws nothing
    process = subprocess.Popen(
        [sys.executable, ROOT / "train_simple.py", "--data_dir", "data", "--subset", "nslt_test.json",
         "--checkpoint_dir", "run", "--no_augmentation", "-v", "--epochs", "2", "--warmup_epochs", "2", *TINY],
        cwd=work / "work", env=ENV, stdout=subprocess.PIPE, stderr=slave, text=True)
    os.close(slave)
    terminal = []

    def drain():
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                return
            if not chunk:
                return
            terminal.append(chunk)
    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    stdout, _ = process.communicate(timeout=300)
    reader.join(timeout=10)
    os.close(master)
    err = b"".join(terminal).decode(errors="replace")
    assert process.returncode == 0, (stdout[-2000:], err[-2000:])
    return stdout, err, work / "work" / "run"


# ---------------------------------------------------------------------------------------------------------------
# Familiar flags

def test_aliases_and_verbose_are_recorded(first_run):
    stdout, _, run = first_run
    args = json.loads((run / "args.json").read_text())
    assert args["output_dir"] == "run" and (run / "best.pt").is_file(), "--checkpoint_dir is --output_dir"
    assert args["augment"] == "none", "--no_augmentation is --augment none"
    assert args["verbose"] is True and "  settings: {" in stdout, "-v prints the settings"
    assert os.path.isabs(args["data_dir"]), "data paths are recorded resolved"


def test_log_dir_alias_and_balanced_sampling_reach_the_run(work, tmp_path, monkeypatch):
    calls = []
    original = BatchLoader.batch_indices

    def recording(self, shuffle=False, seed=0):
        calls.append((shuffle, self.balanced))
        return original(self, shuffle, seed)
    monkeypatch.setattr(BatchLoader, "batch_indices", recording)
    out = tmp_path / "logs"
    assert train_run(["--data_dir", work / "work" / "data", "--subset", "nslt_test.json", "--log_dir", out,
                      "--balanced_sampling", "--epochs", "1", "--warmup_epochs", "0", *TINY]) == 0
    args = json.loads((out / "args.json").read_text())
    assert args["output_dir"] == str(out) and args["balanced_sampling"] is True
    assert (True, True) in calls, "the training epoch is drawn class-balanced"
    assert all(balanced is False for shuffle, balanced in calls if not shuffle), "val/test are read in order"


class PackedLabels:
    """What BatchLoader's sampler reads of a packed split: its labels, its length, one frame width."""

    def __init__(self, labels):
        self.labels, self.gemma, self.landmarks = labels, None, np.zeros((len(labels), 2, 1), np.float32)

    def __len__(self):
        return len(self.labels)


def test_balanced_sampler_draws_every_class_equally_often():
    labels = np.repeat(np.arange(4), [500, 50, 5, 1])  # long-tailed: 90 % of the clips are class 0
    split = PackedLabels(labels)
    frequencies = {}
    for balanced in (False, True):
        loader = BatchLoader(split, 32, "cpu", balanced=balanced)
        drawn = np.concatenate([index[:real] for seed in range(20)
                                for index, real in loader.batch_indices(shuffle=True, seed=seed)])
        assert len(drawn) == 20 * len(labels), "an epoch is still one clip per training clip"
        frequencies[balanced] = np.bincount(labels[drawn], minlength=4) / len(drawn)
    assert frequencies[False][0] > 0.85, "without the flag: one pass over every clip"
    assert np.allclose(frequencies[True], 0.25, atol=0.03), frequencies[True]
    plain = BatchLoader(split, 32, "cpu", balanced=True).batch_indices(shuffle=False)
    assert np.array_equal(np.concatenate([i for i, _ in plain]), np.arange(len(labels))), "unshuffled: in order"


def test_val_split_is_refused_in_one_line():
    line = one_error_line(python(ROOT / "train_simple.py", "--val_split", "0.1"), 2, "--val_split")
    assert "split file's own" in line and "(train/val/test)" in line, line


def test_warmup_as_long_as_training_is_warned(first_run):
    stdout, _, run = first_run
    warning = next(line for line in stdout.splitlines() if line.startswith("warning: --warmup_epochs"))
    assert "--warmup_epochs 2 >= --epochs 2" in warning and "never decays" in warning
    assert warning in (run / "train.log").read_text()


# ---------------------------------------------------------------------------------------------------------------
# The run folder

def test_train_log_is_the_console_without_progress_bars(first_run):
    stdout, terminal, run = first_run
    assert "epoch 1:" in terminal and "%|" in terminal, "tqdm drew its bars on the terminal"
    log = (run / "train.log").read_text()
    assert "\r" not in log and "%|" not in log
    for line in stdout.splitlines():
        assert line in log, line
    epochs = [line for line in log.splitlines() if re.match(r"epoch +\d+/2 +train loss", line)]
    assert len(epochs) == 2 and "best epoch" in log


def test_a_finished_run_resumed_again_keeps_its_results(first_run, work):
    _, _, run = first_run
    before = {name: ((run / name).read_bytes(), (run / name).stat().st_mtime_ns)
              for name in ("metrics.json", "summary.csv", "last.pt", "best.pt", "train.log")}
    out = succeeded(python(ROOT / "train_simple.py", "--resume", "run/last.pt", cwd=work / "work"))
    assert "the run finished all 2 epochs" in out and "metrics.json" in out, out
    after = {name: ((run / name).read_bytes(), (run / name).stat().st_mtime_ns) for name in before}
    assert after == before


def test_best_pt_is_for_inference_and_smaller_than_last_pt(first_run):
    _, _, run = first_run
    best, last = load_checkpoint(run / "best.pt"), load_checkpoint(run / "last.pt")
    for key in ("optimizer", "scheduler", "scaler", "ema"):
        assert key not in best, key
        assert key in last, key
    for key in ("model", "model_config", "landmark_normalization", "label_mapping"):
        assert best[key] is not None, key
    assert [e["gloss"] for e in best["label_mapping"]] == ["gloss3", "gloss10", "gloss17"]
    assert (run / "best.pt").stat().st_size < (run / "last.pt").stat().st_size


def test_evaluate_and_predict_from_another_working_directory(first_run, work):
    _, _, run = first_run
    elsewhere = work / "elsewhere"
    out = succeeded(python(ROOT / "evaluate.py", "--checkpoint", "../work/run/best.pt", "--device", "cpu",
                           "--no_plots", cwd=elsewhere))
    assert "evaluated 6 of 6 listed clips" in out, out
    assert json.loads((run / "eval_test" / "metrics.json").read_text())["test"]["n"] == 6
    video_id = next(v for v, e in json.loads((work / "work" / "data" / "nslt_test.json").read_text()).items()
                    if e["subset"] == "test")
    out = succeeded(python(ROOT / "predict.py", "--checkpoint", "../work/run/best.pt", "--device", "cpu",
                           "--landmarks", f"../work/data/landmarks/{video_id}_landmarks.npy",
                           "--gemma", f"../work/data/gemma_features/{video_id}_gemma.npy", cwd=elsewhere))
    first = next(line for line in out.splitlines() if line.strip().startswith("1. "))
    assert first.split()[1] in ("gloss3", "gloss10", "gloss17"), out


def test_evaluate_writes_the_confusion_matrix(first_run, tmp_path, monkeypatch, capsys):
    _, _, run = first_run
    assert evaluate.run(["--checkpoint", str(run / "best.pt"), "--output_dir", str(tmp_path), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    folder = tmp_path / "eval_test"
    result = json.loads((folder / "metrics.json").read_text())["test"]
    with open(folder / "confusion_matrix.csv", newline="") as f:
        assert next(csv.reader(f)) == CONFUSION_MATRIX_FIELDS
    cells = read_csv(folder / "confusion_matrix.csv")
    assert sum(int(c["count"]) for c in cells) == result["n"] == 6, "every evaluated clip is in one cell"
    right = sum(int(c["count"]) for c in cells if c["true_index"] == c["predicted_index"])
    assert right == round(result["top1"] * result["n"])
    wrong = {(c["true_gloss"], c["predicted_gloss"]): int(c["count"]) for c in cells
             if c["true_index"] != c["predicted_index"]}
    assert wrong == {(c["true_gloss"], c["predicted_gloss"]): int(c["count"])
                     for c in read_csv(folder / "confusions.csv")}, "its off-diagonal cells are confusions.csv"
    assert "confusion_matrix.csv" in out.splitlines()[-1]
    if plots._pyplot() is not None:
        assert (folder / "confusion_matrix.png").stat().st_size > 1000 and "confusion_matrix.png" in out

    # without matplotlib: one note, the CSVs all the same, evaluation still succeeds
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setattr(plots, "_missing_noted", False)
    assert evaluate.run(["--checkpoint", str(run / "best.pt"), "--output_dir", str(tmp_path / "bare"),
                         "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.count("matplotlib is not installed") == 1
    assert (tmp_path / "bare" / "eval_test" / "confusion_matrix.csv").read_text() == \
        (folder / "confusion_matrix.csv").read_text()
    assert not list((tmp_path / "bare" / "eval_test").glob("*.png"))


# ---------------------------------------------------------------------------------------------------------------
# --help

HELP = {  # command -> a default its --help must show
    "train_simple.py": "the other's files are not needed (default: hybrid)",
    "evaluate.py": "which split of the split file to evaluate (default: test)",
    "predict.py": "how many glosses to show per input (default: 5)",
    "extract_landmarks.py": "(default: 0/1)",
    "extract_gemma_features.py": "frames sampled uniformly from each clip (default: 16)",
    "prepare_own_signs.py": "(default: 0.15)",
    "export_onnx.py": "ONNX opset (default: 18)",
    "-m hybrid_asl.plots": "(default: 20)",
}


@pytest.mark.parametrize("command", list(HELP))
def test_help_shows_defaults(command):
    done = python(*command.split(), "--help")
    assert done.returncode == 0 and not done.stderr, done.stderr
    text = " ".join(done.stdout.split())  # argparse wraps to the terminal's width
    assert text.startswith("usage: ") and HELP[command] in text, text[:2000]


# ---------------------------------------------------------------------------------------------------------------
# Hints

def test_missing_class_list_is_said_once_with_how_to_supply_it(tmp_path, capsys):
    data_dir, subset = make_wlasl_layout(tmp_path / "data", num_classes=2, clips_per_class=(2, 1, 1))
    (data_dir / "wlasl_class_list.txt").unlink()
    assert train_run(["--data_dir", data_dir, "--subset", subset, "--output_dir", tmp_path / "run", "--epochs", "1",
                      "--warmup_epochs", "0", "--no_cache", *TINY]) == 0
    out = capsys.readouterr().out
    notes = [line for line in out.splitlines() if "wlasl_class_list.txt" in line]
    assert len(notes) == 1, notes
    assert notes[0].startswith("note: ") and "glosses are shown as class ids" in notes[0]
    assert f"'<class id><TAB><gloss>' lines to {quote(data_dir / 'wlasl_class_list.txt')}" in notes[0]
    mapping = json.loads((tmp_path / "run" / "label_mapping.json").read_text())
    assert [e["gloss"] for e in mapping] == ["3", "10"], "the glosses really are the class ids"


def test_files_not_found_hint_names_folder_expected_and_closest(tmp_path, capsys):
    data_dir, subset = make_wlasl_layout(tmp_path / "my signs", num_classes=2, clips_per_class=(2, 1, 1))
    landmarks = data_dir / "landmarks"
    for path in landmarks.glob("*_landmarks.npy"):  # a slip in the extractor's naming: _landmark.npy
        path.rename(path.with_name(path.name.replace("_landmarks", "_landmark")))
    assert train_run(["--data_dir", data_dir, "--subset", subset, "--modality", "landmarks", "--output_dir",
                      tmp_path / "run", "--no_cache", *TINY]) == 2
    captured = capsys.readouterr()
    assert "no usable train clip" in captured.err
    hint = next(line for line in captured.out.splitlines() if line.startswith("hint: "))
    expected = re.search(r"for names like (\d+)_landmarks\.npy;", hint)
    assert expected and expected.group(1) in json.loads((data_dir / subset).read_text()), hint
    assert f"found 0 of the 8 files the split names; searched {quote(landmarks)} " in hint, hint
    assert hint.endswith(f"the closest name there is {expected.group(1)}_landmark.npy"), hint


def test_extraction_with_misnamed_videos_says_what_it_looked_for(tmp_path):
    needs_extraction()
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("335.mp4", "336.mp4"):  # the split names 00335 and 00336: leading zeros lost
        (videos / name).write_bytes(b"")
    split = {"00335": {"subset": "train", "action": [1, 1, -1]}, "00336": {"subset": "val", "action": [1, 1, -1]}}
    (tmp_path / "nslt_2.json").write_text(json.dumps(split))
    out = succeeded(python(ROOT / "extract_landmarks.py", "--videos_dir", videos, "--subset", tmp_path / "nslt_2.json",
                           "--output_dir", tmp_path / "out", "--no_progress"))
    hint = next(line for line in out.splitlines() if line.startswith("hint: "))
    assert hint == (f"hint: found 0 of the 2 files the split names; searched {quote(videos)} for names like "
                    "00335.mp4; the closest name there is 335.mp4"), hint


def test_error_hints_quote_paths_with_spaces(tmp_path, capsys):
    data_dir = tmp_path / "my data"  # does not exist
    line = one_error_line(python(ROOT / "train_simple.py", "--data_dir", data_dir, "--subset", "nslt_test.json"), 2)
    split_path = data_dir / "nslt_test.json"
    assert quote(split_path) in line and quote(split_path) != str(split_path), line
    pasted = line[line.index(quote(split_path)):].split(" not found")[0]
    assert shlex.split(pasted) == [str(split_path)], "pasted into a shell, the path is one word"

    make_wlasl_layout(data_dir, num_classes=2, clips_per_class=(2, 1, 1))  # now it exists, without landmarks
    shutil.rmtree(data_dir / "landmarks")
    assert train_run(["--data_dir", data_dir, "--subset", "nslt_test.json", "--no_cache", *TINY]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {quote(data_dir / 'landmarks')} not found"), err
    assert shlex.split(err[len("error: "):].split(" not found")[0]) == [str(data_dir / "landmarks")]


PREFLIGHT = ("import sys, test_nslt1000_fixes as preflight\n"
             "preflight.CHECKS.clear()  # the generic checks: test_nslt1000_fixes.py runs them itself\n"
             "sys.exit(preflight.main(sys.argv[1:]))")


def test_preflight_on_landmark_only_data_ends_with_the_command_that_passes(tmp_path):
    data_dir, subset = make_wlasl_layout(tmp_path / "lm data", num_classes=2, clips_per_class=(2, 1, 1))
    shutil.rmtree(data_dir / "gemma_features")
    done = python("-c", PREFLIGHT, "--data_dir", data_dir, "--subset", subset)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[-3].startswith("FAIL  your data: ") and "gemma_features" in lines[-3], lines
    assert lines[-2].startswith("      next: ") and lines[-1] == "0 passed, 1 failed", lines
    suggested = lines[-2].split("next: ", 1)[1]
    assert suggested == (f"python test_nslt1000_fixes.py --data_dir {quote(data_dir)} --subset {subset} "
                         "--modality landmarks")
    argv = shlex.split(suggested)  # as the user pastes it
    assert argv[:2] == ["python", "test_nslt1000_fixes.py"]
    done = python("-c", PREFLIGHT, *argv[2:])
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().splitlines()[-2:] == ["PASS  your data", "1 passed, 0 failed"], done.stdout


# ---------------------------------------------------------------------------------------------------------------
# Extraction into a folder that already holds clips

@pytest.mark.skipif(not WLASL_RAW.is_dir(), reason="../shared/data/videos not present")
def test_extracting_more_clips_adds_to_the_metadata(tmp_path):
    needs_extraction()
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("00335", "00336"):
        os.symlink(WLASL_RAW / f"{name}.mp4", videos / f"{name}.mp4")
    (tmp_path / "first.json").write_text(json.dumps({"00335": {"subset": "train", "action": [1, 1, -1]},
                                                     "99999": {"subset": "train", "action": [1, 1, -1]}}))
    (tmp_path / "second.json").write_text(json.dumps({"00336": {"subset": "train", "action": [2, 1, -1]}}))
    out = tmp_path / "landmarks"
    for split in ("first.json", "second.json"):
        succeeded(python(ROOT / "extract_landmarks.py", "--videos_dir", videos, "--subset", tmp_path / split,
                         "--output_dir", out, "--num_frames", "4", "--no_progress"))
    meta = json.loads((out / "extraction_metadata.json").read_text())
    assert sorted(p.name for p in out.glob("*_landmarks.npy")) == ["00335_landmarks.npy", "00336_landmarks.npy"]
    assert [Path(r["subset"]).name for r in meta["runs"]] == ["first.json", "second.json"]
    assert [r["counts"]["extracted"] for r in meta["runs"]] == [1, 1]
    assert meta["counts"]["outputs_present"] == 2
    assert meta["missing"] == ["99999"], "the first run's missing clip is still listed"
