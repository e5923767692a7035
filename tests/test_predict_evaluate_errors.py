"""What evaluate.py, predict.py and plots.py tell a user who gives them something wrong: the user's own paths and
flags, one line, what to do.

    python -m pytest tests/test_predict_evaluate_errors.py -q
"""
import argparse
import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import evaluate
import predict
from helpers import train_run
from hybrid_asl.run_folder import recorded_dir
from test_nslt1000_fixes import make_wlasl_layout

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--hidden_dim", "32", "--num_heads", "4", "--epochs", "2", "--batch_size", "8", "--warmup_epochs", "1",
        "--device", "cpu"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny hybrid run (32-wide Gemma features) trained from its project folder with relative paths, as a user
    would: `--data_dir data --subset data/nslt_test.json --output_dir runs/tiny`. Returns (project, run folder)."""
    project = tmp_path_factory.mktemp("project")
    make_wlasl_layout(project / "data")
    here = os.getcwd()
    os.chdir(project)
    try:
        assert train_run(["--data_dir", "data", "--subset", "data/nslt_test.json", "--output_dir", "runs/tiny",
                          *TINY]) == 0
    finally:
        os.chdir(here)
    return project, project / "runs" / "tiny"


def one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


def clip_files(project, video_id="10000"):
    return (project / "data" / "landmarks" / f"{video_id}_landmarks.npy",
            project / "data" / "gemma_features" / f"{video_id}_gemma.npy")


def predict_npy(run_dir, landmarks, gemma, *extra):
    return predict.run(["--checkpoint", str(run_dir / "best.pt"), "--device", "cpu", "--landmarks", str(landmarks),
                        "--gemma", str(gemma), *extra])


# ---------------------------------------------------------------------------------------------------------------
# predict.py: bad .npy files are named as the user named them

def test_predict_bad_npy_errors_name_the_users_file(run, tmp_path, capsys):
    project, run_dir = run
    landmarks, gemma = clip_files(project)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "truncated_landmarks.npy").write_bytes(landmarks.read_bytes()[:60])
    (bad / "empty_landmarks.npy").write_bytes(b"")
    (bad / "garbage_landmarks.npy").write_bytes(bytes(range(256)) * 2)
    np.save(bad / "wide_landmarks.npy", np.zeros((16, 170), np.float32))
    for name, expected in (("truncated", "re-create it with extract_landmarks.py"),
                           ("empty", "re-create it with extract_landmarks.py"),
                           ("garbage", "re-create it with extract_landmarks.py"),
                           ("wide", "has 170 features per frame; expected 162")):
        path = bad / f"{name}_landmarks.npy"
        assert predict_npy(run_dir, path, gemma) == 2, name
        err = one_line_error(capsys)
        assert err.startswith(f"error: {path}") and expected in err, err
        assert "clip_landmarks" not in err and "clip_gemma" not in err, err


def test_predict_says_when_landmarks_and_gemma_look_swapped(run, capsys):
    project, run_dir = run
    landmarks, gemma = clip_files(project)
    assert predict_npy(run_dir, gemma, landmarks) == 2
    err = one_line_error(capsys)
    assert err == (f"error: {landmarks} has 162 features per frame; expected 32; are --landmarks and --gemma "
                   "swapped?"), err
    assert predict_npy(run_dir, gemma, gemma) == 2  # a visual-features file given as landmarks
    err = one_line_error(capsys)
    assert f"{gemma} has 32 features per frame; expected 162" in err and "swapped?" in err


def test_predict_subprocess_truncated_file_is_one_line_with_the_users_path(run, tmp_path):
    project, run_dir = run
    landmarks, gemma = clip_files(project)
    truncated = tmp_path / "90001_landmarks.npy"
    truncated.write_bytes(landmarks.read_bytes()[:60])
    done = subprocess.run([sys.executable, str(ROOT / "predict.py"), "--checkpoint", str(run_dir / "best.pt"),
                           "--device", "cpu", "--landmarks", str(truncated), "--gemma", str(gemma)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith(f"error: {truncated}: ") and "EOF" in done.stderr, done.stderr


def test_predict_folder_keeps_input_order_and_names_the_users_files(run, tmp_path, capsys):
    project, run_dir = run
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    ids = ["10000", "10001", "10002", "10003"]
    for video_id in ids:
        shutil.copy(clip_files(project, video_id)[0], inputs)
    (inputs / "10001_landmarks.npy").write_bytes(b"\x93NUMPY truncated")  # the 2nd of 4 fails
    out_csv = tmp_path / "predictions.csv"
    assert predict.run(["--checkpoint", str(run_dir / "best.pt"), "--device", "cpu", "--input_dir", str(inputs),
                        "--gemma_dir", str(project / "data" / "gemma_features"), "--output_csv", str(out_csv)]) == 0
    captured = capsys.readouterr()
    with open(out_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["input"] for r in rows] == ids, "one row per input, in id order, the failed one in its place"
    assert rows[1]["frames"] == "0" and rows[1]["error"].startswith(str(inputs / "10001_landmarks.npy"))
    assert all(r["error"] == "" and r["gloss_1"] for i, r in enumerate(rows) if i != 1)
    assert f"warning: 10001 skipped: {inputs / '10001_landmarks.npy'}" in captured.err
    assert "clip_landmarks" not in captured.err and "clip_landmarks" not in out_csv.read_text()


def test_predict_warns_once_about_nan_landmarks(run, tmp_path, capsys):
    project, run_dir = run
    landmarks, gemma = clip_files(project)
    array = np.load(landmarks)[:12]  # shorter than --num_frames 16: every frame is used
    array[2:5, :10] = np.nan  # 30 values in 3 frames
    nan_file = tmp_path / "nan_landmarks.npy"
    np.save(nan_file, array)
    assert predict_npy(run_dir, nan_file, gemma) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: {nan_file}: 30 NaN/inf landmark values in 3 of 12 frames set to 0 "
                        "(not detected), as training does"], captured.err
    assert "1. gloss" in captured.out, "the prediction is still made"


@pytest.mark.parametrize("window, expected", [
    (("--start_frame", "20", "--end_frame", "10"), "error: --end_frame 10 is before --start_frame 20"),
    (("--start_frame", "0"), "error: --start_frame 0: frames are 1-indexed"),
    (("--start_frame", "-3"), "error: --start_frame -3: frames are 1-indexed"),
    (("--end_frame", "0"), "error: --end_frame 0 is before --start_frame 1"),
])
def test_predict_rejects_a_bad_video_window(run, tmp_path, capsys, window, expected):
    _, run_dir = run
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"")  # never read: the window is checked first
    assert predict.run(["--checkpoint", str(run_dir / "best.pt"), "--video", str(video), *window]) == 2
    assert one_line_error(capsys).startswith(expected)


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints given as a folder

def test_a_run_folder_as_checkpoint_says_which_file_to_pass(run, capsys):
    project, run_dir = run
    landmarks, gemma = clip_files(project)
    assert evaluate.run(["--checkpoint", str(run_dir)]) == 2
    err = one_line_error(capsys)
    assert "is a folder" in err and str(run_dir / "best.pt") in err and "not found" not in err
    assert predict.run(["--checkpoint", str(run_dir), "--landmarks", str(landmarks), "--gemma", str(gemma)]) == 2
    err = one_line_error(capsys)
    assert "is a folder" in err and str(run_dir / "best.pt") in err


# ---------------------------------------------------------------------------------------------------------------
# evaluate.py

def test_evaluate_feature_width_mismatch_is_only_the_error(run, tmp_path, capsys):
    _, run_dir = run
    wide, subset = make_wlasl_layout(tmp_path / "wide", gemma_dim=64)
    assert evaluate.run(["--checkpoint", str(run_dir / "best.pt"), "--data_dir", str(wide), "--subset", subset,
                         "--no_cache", "--no_plots", "--device", "cpu"]) == 2
    captured = capsys.readouterr()
    assert "warning" not in captured.out and "continuing" not in captured.out, captured.out
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "64-wide" in err and "32-wide" in err


def test_evaluate_from_another_folder_finds_the_data_as_training_did(run, tmp_path, monkeypatch, capsys):
    """Trained from the project folder with `--data_dir data --subset data/nslt_test.json`: evaluated from
    elsewhere, the recorded relative paths are resolved from where training ran (not doubled to data/data/...)."""
    project, run_dir = run
    monkeypatch.chdir(tmp_path)
    assert evaluate.run(["--checkpoint", str(run_dir / "best.pt"), "--output_dir", str(tmp_path), "--no_plots",
                         "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert f"{project / 'data' / 'nslt_test.json'}: test: using 12 of 12" in out
    assert "evaluated 12 of 12 listed clips" in out
    # a split file recorded as a name in --data_dir resolves the same way, through splits.data_paths
    args = argparse.Namespace(data_dir="data", subset="nslt_test.json", gemma_features_dir=None, landmarks_dir=None,
                              cache_dir=None, no_cache=False, output_dir="runs/tiny")
    cli = argparse.Namespace(checkpoint=str(run_dir / "best.pt"), data_dir=None, subset=None, gemma_features_dir=None,
                             landmarks_dir=None, cache_dir=None)
    data_dir, split_path, gemma_dir, _, cache_dir = evaluate.split_paths(cli, args)
    assert (data_dir, split_path, gemma_dir, cache_dir) == (
        project / "data", project / "data" / "nslt_test.json", project / "data" / "gemma_features",
        project / "data" / ".cache")


def test_predict_from_another_folder_reads_the_training_data_folders(run, tmp_path, monkeypatch):
    """predict.py --video reads extraction_metadata.json beside the training data (how many frames the landmarks
    were sampled to, which Gemma model and layer): the recorded relative folders resolve from where training ran."""
    project, run_dir = run
    monkeypatch.chdir(tmp_path)
    args = argparse.Namespace(output_dir="runs/tiny")
    checkpoint = run_dir / "best.pt"
    assert recorded_dir(checkpoint, args, "data") == str(project / "data")
    assert recorded_dir(checkpoint, args, "data/landmarks") == str(project / "data" / "landmarks")
    assert recorded_dir(checkpoint, args, "nowhere") == "nowhere"      # left for the error to name
    assert recorded_dir(checkpoint, args, None) is None
    (tmp_path / "data").mkdir()
    assert recorded_dir(checkpoint, args, "data") == "data"            # exists from here: used as given


def test_a_moved_run_still_finds_its_data_and_moved_data_is_named(run, tmp_path, monkeypatch, capsys):
    """A run records its data folders as absolute paths: its folder can move (or evaluate.py run from anywhere).
    When the data itself moved, the message names where the run looked and what to pass."""
    project, run_dir = run
    moved = tmp_path / "moved"
    shutil.copytree(run_dir, moved)
    monkeypatch.chdir(tmp_path)
    assert evaluate.run(["--checkpoint", str(moved / "best.pt"), "--no_plots", "--device", "cpu"]) == 0
    assert "evaluated 12 of 12 listed clips" in capsys.readouterr().out
    shutil.move(project / "data", tmp_path / "data_elsewhere")
    try:
        assert evaluate.run(["--checkpoint", str(moved / "best.pt"), "--no_plots", "--device", "cpu"]) == 2
        err = one_line_error(capsys)
        assert f"--data_dir {project / 'data'}" in err and "pass --data_dir and --subset" in err
        assert evaluate.run(["--checkpoint", str(moved / "best.pt"), "--data_dir", str(tmp_path / "data_elsewhere"),
                             "--output_dir", str(tmp_path), "--no_plots", "--device", "cpu"]) == 0
    finally:
        shutil.move(tmp_path / "data_elsewhere", project / "data")


# ---------------------------------------------------------------------------------------------------------------
# plots.py and the usage examples

def test_plots_cli_says_not_found(tmp_path):
    missing = tmp_path / "nope" / "summary.csv"
    done = subprocess.run([sys.executable, "-m", "hybrid_asl.plots", str(missing)], capture_output=True, text=True,
                          cwd=ROOT)
    assert done.returncode == 2 and done.stderr.startswith(f"error: {missing} not found"), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("script", ["evaluate.py", "predict.py", "hybrid_asl/plots.py"])
def test_usage_examples_create_the_run_folder_they_use(script):
    """The default run folder is runs/<subset>-<timestamp>: an example that reads runs/demo/ must show the training
    command that writes it."""
    doc = (ROOT / script).read_text().split('"""')[1]
    if "runs/demo/" in doc:
        assert "python train_simple.py --demo --output_dir runs/demo" in doc
