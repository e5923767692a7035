"""Reliability through the real command line: bad input, nonsense flags, interruptions, numerical faults (issue 3).

    python -m pytest tests/test_reliability.py -q          # ~2 minutes on 2 CPU cores

Every case runs `python train_simple.py ...` in a subprocess on tiny generated WLASL-layout data and checks the
exit code, that stderr is one clear line (never a traceback), the counts in the log and in metrics.json, and that
no output file was left corrupted. Only the CUDA out-of-memory handler and the atomic writers are tested
in-process (OOM cannot happen on CPU; a crash half-way through a write has to be injected).
docs_troubleshooting.md lists each failure a user can hit and names the test here that backs it.
"""
import csv
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import hybrid_asl.engine
import hybrid_asl.packing
from helpers import one_error_line, succeeded, train_main, train_run, train_script
from hybrid_asl.checkpoint import load_checkpoint, save_checkpoint
from hybrid_asl.clips import LANDMARK_DIM
from hybrid_asl.errors import DataError
from hybrid_asl.files import atomic_write_text
from hybrid_asl.packing import load_packed, pack_split, save_packed
from hybrid_asl.splits import build_label_mapping, load_split
from test_nslt1000_fixes import make_wlasl_layout

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--hidden_dim", "16", "--num_heads", "2", "--batch_size", "8", "--device", "cpu", "--warmup_epochs", "1"]
FEATURE_DIM = 32  # make_wlasl_layout's visual feature width
TIMING_COLUMNS = ("train_seconds", "data_seconds", "seconds")
# One thread per process: the subprocesses are tiny and CI has 2 cores; every run in a comparison uses the same env.
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def _default_sigint():
    # A child started from a shell that ignores SIGINT (background CI jobs) would otherwise ignore Ctrl-C too.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def cli(*argv, timeout=300):
    """Runs `python train_simple.py argv` from the repo root; returns the CompletedProcess (text)."""
    return subprocess.run([sys.executable, "train_simple.py", *map(str, argv)], cwd=ROOT, env=ENV, text=True,
                          capture_output=True, timeout=timeout, preexec_fn=_default_sigint)


def start(*argv):
    return subprocess.Popen([sys.executable, "train_simple.py", *map(str, argv)], cwd=ROOT, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_default_sigint)


def summary_rows(run_dir, drop_timing=True):
    with open(Path(run_dir) / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: v for k, v in row.items() if not (drop_timing and k in TIMING_COLUMNS)} for row in rows]


def count_rows(run_dir):
    try:
        return max(0, len((Path(run_dir) / "summary.csv").read_text().splitlines()) - 1)
    except OSError:
        return 0


def wait_for_rows(process, run_dir, rows, timeout=240):
    deadline = time.time() + timeout
    while count_rows(run_dir) < rows:
        assert process.poll() is None, f"the run ended (exit {process.returncode}) before epoch {rows} finished"
        assert time.time() < deadline, "the run is too slow"
        time.sleep(0.01)


def loads_finite_checkpoint(path):
    checkpoint = load_checkpoint(path)  # format-checked; raises on a half-written file
    assert all(torch.isfinite(t).all() for t in checkpoint["model"].values() if t.is_floating_point())
    return checkpoint


def digest(folder):
    return {p.name: hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(Path(folder).iterdir()) if p.is_file()}


def copy_data(data, tmp_path):
    """A private copy of the shared dataset (without its cache), for tests that change files."""
    data_dir, subset = data
    shutil.copytree(data_dir, tmp_path / "data", ignore=shutil.ignore_patterns(".cache"))
    return tmp_path / "data", subset


def train_ids(data_dir, subset, split="train"):
    return [vid for vid, e in json.loads((data_dir / subset).read_text()).items() if e["subset"] == split]


# ---------------------------------------------------------------------------------------------------------------
# Shared data and the reference run (4 epochs, seed 5), reused by the resume, kill -9 and determinism tests

@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_wlasl_layout(tmp_path_factory.mktemp("wlasl"))  # 4 classes, 32 train / 12 val / 12 test clips


def seeded_args(data):
    data_dir, subset = data
    return ["--data_dir", data_dir, "--subset", subset, *TINY, "--seed", "5", "--epochs", "4"]


@pytest.fixture(scope="module")
def reference_run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "run"
    succeeded(cli(*seeded_args(data), "--output_dir", out))
    return out


# ---------------------------------------------------------------------------------------------------------------
# Split files: exit 2 with the file, the entry and what to do

def test_missing_split_file(tmp_path):
    result = cli("--data_dir", tmp_path, "--subset", "nslt_100.json", *TINY)
    one_error_line(result, 2, tmp_path / "nslt_100.json", "WLASL data layout", "--demo")


def test_split_file_is_a_directory(data, tmp_path):
    """Unreadable split file. Tests run as root, where chmod 000 does not stop a read: a directory in its place
    fails the same read (IsADirectoryError is the same OSError path as PermissionError)."""
    (tmp_path / "nslt_test.json").mkdir()
    one_error_line(cli("--data_dir", tmp_path, "--subset", "nslt_test.json", *TINY), 2,
                   tmp_path / "nslt_test.json", "is a folder, not a file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 file; test_split_file_is_a_directory "
                                              "covers the unreadable-file path")
def test_split_file_without_read_permission(data, tmp_path):
    path = tmp_path / "nslt_test.json"
    shutil.copy(data[0] / data[1], path)
    path.chmod(0)
    one_error_line(cli("--data_dir", tmp_path, "--subset", "nslt_test.json", *TINY), 2, path, "permission")


BAD_SPLITS = {  # case: (file content, the entry the message must name, what it must say)
    "truncated": ('{"00001": {"subset": "train", "action": [3, 1, ', None, "not valid JSON"),
    "no_subset": ('{"00001": {"subset": "train", "action": [3, 1, 20]}, "00002": {"action": [3, 1, 20]}}', "'00002'",
                  'needs "subset" and "action"'),
    "no_action": ('{"00001": {"subset": "train"}}', "'00001'", 'needs "subset" and "action"'),
    "unknown_subset": ('{"00001": {"subset": "training", "action": [3, 1, 20]}}', "'00001'",
                       "use one of train, val, test"),
    "class_id_not_int": ('{"00001": {"subset": "train", "action": ["3", 1, 20]}}', "'00001'", "must be integers"),
    "class_id_float": ('{"00001": {"subset": "train", "action": [3.0, 1, 20]}}', "'00001'", "must be integers"),
    "class_id_negative": ('{"00001": {"subset": "train", "action": [-1, 1, 20]}}', "'00001'", "negative class id"),
    "not_an_object": ('[["00001", "train", 3]]', None, "must be a non-empty JSON object"),
}


@pytest.mark.parametrize("case", list(BAD_SPLITS))
def test_bad_split_file(tmp_path, case):
    content, names, says = BAD_SPLITS[case]
    path = tmp_path / "nslt_bad.json"
    path.write_text(content)
    before = path.read_bytes()
    line = one_error_line(cli("--data_dir", tmp_path, "--subset", "nslt_bad.json", *TINY), 2, path, says)
    if names:
        assert f"entry {names}" in line
    assert path.read_bytes() == before and not (tmp_path / ".cache").exists()


# ---------------------------------------------------------------------------------------------------------------
# Bad clip files: skipped (features) or sanitized (landmarks), named in the log, counted in metrics.json

def _garbage(path, shape_unused):
    path.write_bytes(np.random.default_rng(1).bytes(700))


def _truncated(path, shape_unused):
    np.save(path, np.ones((16, FEATURE_DIM), np.float32))
    path.write_bytes(path.read_bytes()[:200])  # a valid header, half the data: an interrupted copy


def _array(shape, fill=None, where=None):
    def write(path, shape_unused):
        a = np.full(shape, 0.5, np.float32)
        if fill is not None:
            a[where] = fill
        np.save(path, a)
    return write


# case -> (split, stream, writer, what train_simple does: a skip reason, or "sanitized")
FAULTS = {
    "gemma_garbage":       ("train", "gemma", _garbage, "unreadable"),
    "gemma_truncated":     ("train", "gemma", _truncated, "unreadable"),
    "gemma_empty":         ("train", "gemma", _array((0, FEATURE_DIM)), "empty"),
    "gemma_wrong_width":   ("train", "gemma", _array((16, 24)), "bad_shape"),
    "gemma_wrong_ndim":    ("val", "gemma", _array((16, FEATURE_DIM, 1)), "bad_shape"),
    "gemma_nan":           ("train", "gemma", _array((16, FEATURE_DIM), np.nan, (3, 4)), "nonfinite"),
    "gemma_inf":           ("test", "gemma", _array((16, FEATURE_DIM), np.inf, (0, 0)), "nonfinite"),
    "gemma_float16_overflow": ("train", "gemma", _array((16, FEATURE_DIM), 1e38, (5, 5)), "out_of_range"),
    "gemma_missing":       ("train", "gemma", None, "missing"),
    "landmarks_garbage":   ("train", "landmarks", _garbage, "unreadable"),
    "landmarks_empty":     ("val", "landmarks", _array((0, LANDMARK_DIM)), "empty"),
    "landmarks_wrong_width": ("train", "landmarks", _array((20, LANDMARK_DIM - 1)), "bad_shape"),
    "landmarks_wrong_ndim": ("train", "landmarks", _array((20, 54, 3)), "bad_shape"),
    "landmarks_nan":       ("train", "landmarks", _array((20, LANDMARK_DIM), np.nan, (slice(2, 4), slice(0, 5))),
                            "sanitized"),
    # only the frames that are sampled count (7 of these 20 frames is not): this one is bad in every frame
    "landmarks_inf":       ("test", "landmarks", _array((20, LANDMARK_DIM), -np.inf, (slice(None), 9)), "sanitized"),
}


@pytest.fixture(scope="module")
def faulty_run(data, tmp_path_factory):
    """One CLI run over a copy of the data where each FAULTS case breaks one clip (and two clips have streams of
    different lengths, for test_streams_of_different_lengths_are_aligned)."""
    tmp = tmp_path_factory.mktemp("faulty")
    data_dir, subset = copy_data(data, tmp)
    split = json.loads((data_dir / subset).read_text())
    free = {name: [vid for vid, e in split.items() if e["subset"] == name] for name in ("train", "val", "test")}
    victims = {}
    for case, (split_name, stream, write, _) in FAULTS.items():
        vid = free[split_name].pop()
        victims[case] = vid
        path = (data_dir / "gemma_features" / f"{vid}_gemma.npy" if stream == "gemma"
                else data_dir / "landmarks" / f"{vid}_landmarks.npy")
        if write is None:
            path.unlink()
        else:
            write(path, None)
    # Different frame counts per stream; values encode each frame's relative time t/T, so alignment is checkable.
    lengths = {"long_landmarks_short_gemma": (40, 7), "short_landmarks_long_gemma": (5, 25), "both_short": (5, 9)}
    for case, (n_landmarks, n_gemma) in lengths.items():
        vid = free["train"].pop()
        victims[case] = vid
        np.save(data_dir / "landmarks" / f"{vid}_landmarks.npy",
                np.repeat((np.arange(n_landmarks) / n_landmarks)[:, None], LANDMARK_DIM, 1).astype(np.float32))
        np.save(data_dir / "gemma_features" / f"{vid}_gemma.npy",
                np.repeat((np.arange(n_gemma) / n_gemma)[:, None], FEATURE_DIM, 1).astype(np.float32))
    out = tmp / "run"
    result = cli("--data_dir", data_dir, "--subset", subset, *TINY, "--epochs", "1", "--no_cache",
                 "--output_dir", out)
    return dict(result=result, out=out, victims=victims, data_dir=data_dir, subset=subset, lengths=lengths,
                listed={name: sum(e["subset"] == name for e in split.values()) for name in free})


@pytest.mark.parametrize("case", list(FAULTS))
def test_bad_clip_file_is_skipped_named_and_counted(faulty_run, case):
    log = succeeded(faulty_run["result"])
    split_name, stream, _, outcome = FAULTS[case]
    vid = faulty_run["victims"][case]
    metrics = json.loads((faulty_run["out"] / "metrics.json").read_text())
    skipped = metrics["skipped"][split_name]
    same = [c for c, f in FAULTS.items() if f[0] == split_name and f[3] == outcome]
    if outcome == "sanitized":
        assert skipped["nonfinite_landmark_clips"] == len(same), skipped
        assert vid in log and "NaN/inf landmark values" in log, log
    else:
        assert skipped[outcome] == len(same), skipped
        named = [line for line in log.splitlines() if vid in line]
        assert named, f"{vid} ({case}) is not named in the log:\n{log}"
    # "using N of M clips" for the split agrees with the counts
    n_skipped = sum(n for reason, n in skipped.items() if reason != "nonfinite_landmark_clips")
    listed = faulty_run["listed"][split_name]
    assert f"{split_name}: using {listed - n_skipped} of {listed} clips" in log
    n = metrics["test" if split_name == "test" else "val"]["n"]
    if split_name != "train":
        assert n == listed - n_skipped
    loads_finite_checkpoint(faulty_run["out"] / "last.pt")


def test_every_clip_of_a_split_unusable(data, tmp_path):
    data_dir, subset = copy_data(data, tmp_path)
    val = train_ids(data_dir, subset, "val")
    for vid in val:
        (data_dir / "landmarks" / f"{vid}_landmarks.npy").write_bytes(b"not a numpy file")
    result = cli("--data_dir", data_dir, "--subset", subset, *TINY, "--epochs", "1", "--no_cache",
                 "--output_dir", tmp_path / "run")
    one_error_line(result, 2, "no usable val clip", f"of {len(val)} listed", data_dir / "landmarks")
    assert f"val: using 0 of {len(val)} clips (skipped: {len(val)} unreadable" in result.stdout
    assert not (tmp_path / "run").exists(), "nothing is written before the data is known to be usable"


def test_streams_of_different_lengths_are_aligned(faulty_run):
    """Landmarks and features of one clip with different frame counts: both resampled onto one time grid."""
    succeeded(faulty_run["result"])
    data_dir, subset = faulty_run["data_dir"], faulty_run["subset"]
    clips = load_split(data_dir / subset)
    label_of = {m["wlasl_id"]: m["index"] for m in build_label_mapping(clips, {})}
    chosen = [clips[faulty_run["victims"][case]] for case in faulty_run["lengths"]]
    split = pack_split("train", chosen, label_of, data_dir / "gemma_features", data_dir / "landmarks", "hybrid",
                       16, FEATURE_DIM, show_progress=False)
    assert len(split) == 3 and not split.skipped
    for row, (case, (n_landmarks, n_gemma)) in enumerate(faulty_run["lengths"].items()):
        length = min(16, max(n_landmarks, n_gemma))
        assert split.lengths[row] == length, case
        landmark_time = split.landmarks[row, :length, 0]
        gemma_time = split.gemma[row, :length, 0].astype(np.float32)
        # Both streams cover the clip window: frame i of each comes from the same relative time (to one frame).
        assert np.all(np.abs(landmark_time - gemma_time) <= 1.0 / min(n_landmarks, n_gemma) + 1e-3), case
        assert np.all(np.diff(landmark_time) >= 0) and np.all(np.diff(gemma_time) >= 0), "time runs forward"
        assert np.all(split.landmarks[row, length:] == 0) and np.all(split.gemma[row, length:] == 0), "padding"
    used = json.loads((faulty_run["out"] / "metrics.json").read_text())["skipped"]["train"]
    assert "bad_shape" in used  # the run above trained with these three clips in it (they are not skipped)
    assert all(faulty_run["victims"][c] not in faulty_run["result"].stdout for c in faulty_run["lengths"])


# ---------------------------------------------------------------------------------------------------------------
# Nonsense flags: argparse-style errors, exit 2

@pytest.mark.parametrize("flags, names", [
    (["--batch_size", "0"], "--batch_size"),
    (["--epochs", "-1"], "--epochs"),
    (["--dropout", "1.0"], "--dropout"),
    (["--dropout", "-0.1"], "--dropout"),
    (["--lr", "0"], "--lr"),
    (["--device", "cuda:7"], "--device cuda:7"),
    (["--device", "tpu"], "--device 'tpu'"),
    (["--hidden_dim", "30", "--num_heads", "4"], "--num_heads"),
    (["--min_lr_ratio", "-1"], "--min_lr_ratio"),
    (["--weight_decay", "-1"], "--weight_decay"),
], ids=["batch_size_0", "epochs_negative", "dropout_1", "dropout_negative", "lr_0", "device_cuda7", "device_tpu",
        "heads_not_dividing", "min_lr_ratio_negative", "weight_decay_negative"])
def test_nonsense_flag(data, tmp_path, flags, names):
    data_dir, subset = data
    # The flags come last so they override TINY.
    result = cli("--data_dir", data_dir, "--subset", subset, *TINY, *flags, "--output_dir", tmp_path / "run")
    one_error_line(result, 2, names)
    assert result.stderr.startswith("usage:")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("content", [b"\x00\x13garbage" * 50, json.dumps({"format": "hybrid-asl-trainer/1"}).encode()],
                         ids=["random_bytes", "json_file"])
def test_resume_from_a_file_that_is_not_a_checkpoint(tmp_path, content):
    path = tmp_path / "last.pt"
    path.write_bytes(content)
    one_error_line(cli("--resume", path, *TINY), 2, path, "not a readable checkpoint", "best.pt or last.pt")
    assert path.read_bytes() == content


def test_checkpoint_path_that_is_a_folder(reference_run):
    one_error_line(cli("--resume", reference_run, *TINY), 2, "is a folder", reference_run / "last.pt")


# ---------------------------------------------------------------------------------------------------------------
# Nothing is lost by a typo: a finished run is only continued, never silently trained over or rewound

def test_output_dir_that_holds_a_run_is_refused(data, reference_run):
    before = digest(reference_run)
    one_error_line(cli(*seeded_args(data), "--output_dir", reference_run), 2, "already holds a run",
                   f"--resume {reference_run / 'last.pt'}", "--overwrite")
    assert digest(reference_run) == before


def test_overwrite_trains_into_a_used_folder(data, reference_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(reference_run, out)
    succeeded(cli(*seeded_args(data), "--epochs", "1", "--output_dir", out, "--overwrite"))
    assert len(summary_rows(out)) == 1 and load_checkpoint(out / "last.pt")["epoch"] == 1


def test_resume_from_an_earlier_checkpoint_than_last_is_refused(reference_run, tmp_path):
    """best.pt of a finished run is usually older than its last.pt: resuming from it would train the later epochs
    again over last.pt. Refused, the folder untouched; branching off into a new folder is allowed."""
    out = tmp_path / "run"
    shutil.copytree(reference_run, out)
    earlier = load_checkpoint(out / "last.pt")
    earlier["epoch"], earlier["history"] = 2, earlier["history"][:2]
    torch.save(earlier, out / "best.pt")
    before = digest(out)
    one_error_line(cli("--resume", out / "best.pt"), 2, "after epoch 2", "after epoch 4", out / "last.pt")
    assert digest(out) == before
    branch = tmp_path / "branch"
    succeeded(cli("--resume", out / "best.pt", "--output_dir", branch))
    assert len(summary_rows(branch)) == 4 and digest(out) == before
    # a branch into a folder that holds another run is refused too, whatever that run's epoch
    before = digest(branch)
    one_error_line(cli("--resume", out / "best.pt", "--output_dir", branch), 2, "already holds a run",
                   "branch off into an empty --output_dir")
    assert digest(branch) == before


def test_resume_with_another_model_shape_flag(reference_run):
    """A --hidden_dim 16 run resumed with --hidden_dim 32: refused before anything is loaded or written."""
    before = digest(reference_run)
    one_error_line(cli("--resume", reference_run / "last.pt", "--hidden_dim", "32"), 2, "--hidden_dim",
                   "drop those flags")
    assert digest(reference_run) == before


def test_resume_on_data_of_another_shape(data, reference_run, tmp_path):
    """Resuming with a split that has other classes would load weights of another shape: refused, and the run
    folder (args.json, label_mapping.json, checkpoints) is left exactly as it was."""
    data_dir, subset = data
    split = json.loads((data_dir / subset).read_text())
    fewer = {vid: e for vid, e in split.items() if e["action"][0] != 3}  # drop one class: 3 classes, not 4
    (tmp_path / "nslt_three.json").write_text(json.dumps(fewer))
    before = digest(reference_run)
    one_error_line(cli("--resume", reference_run / "last.pt", "--epochs", "6", "--subset",
                       tmp_path / "nslt_three.json"), 2, "--resume", "classes")
    assert digest(reference_run) == before


# ---------------------------------------------------------------------------------------------------------------
# CUDA out of memory (in-process: it cannot happen on CPU)

def test_cuda_out_of_memory_is_one_line(monkeypatch, capsys):
    def out_of_memory(argv=None):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    monkeypatch.setitem(train_script()["run"].__globals__, "main", out_of_memory)
    assert train_run(["--device", "cuda"]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "--batch_size" in err and "--gpu_cache_gb" in err and err.startswith("error:")


# ---------------------------------------------------------------------------------------------------------------
# Atomic writes: a crash half-way through a write leaves the previous good file and no temporary file

@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"), KeyboardInterrupt()],
                         ids=["disk_full", "ctrl_c"])
def test_checkpoint_write_interrupted_half_way(tmp_path, monkeypatch, failure):
    """The write fails half-way: the previous checkpoint stays loadable, no temporary is left, and a disk error
    becomes a one-line DataError naming the file (Ctrl-C stays a KeyboardInterrupt)."""
    path = tmp_path / "last.pt"
    save_checkpoint({"epoch": 1, "w": torch.arange(4.0)}, path)

    def fails_after_writing(fd):  # the bytes are in the temporary file; then the disk fills up (or Ctrl-C)
        assert os.fstat(fd).st_size > 0
        raise failure
    monkeypatch.setattr(os, "fsync", fails_after_writing)
    expected = DataError if isinstance(failure, OSError) else type(failure)
    with pytest.raises(expected) as raised:
        save_checkpoint({"epoch": 2, "w": torch.zeros(4)}, path)
    monkeypatch.undo()
    if expected is DataError:
        assert str(path) in str(raised.value) and "disk is full" in str(raised.value)
    previous = torch.load(path, weights_only=True)
    assert previous["epoch"] == 1 and torch.equal(previous["w"], torch.arange(4.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"], "a temporary file was left behind"


def test_text_write_interrupted_half_way(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    atomic_write_text(path, json.dumps({"top1": 0.5}))

    def disk_full(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(DataError, match="cannot write .*metrics.json: No space left on device"):
        atomic_write_text(path, json.dumps({"top1": 0.9, "pad": "x" * 10000}))
    assert json.loads(path.read_text()) == {"top1": 0.5}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"], "a temporary file was left behind"


def test_cache_write_interrupted_half_way(data, tmp_path, monkeypatch):
    data_dir, subset = data
    clips = load_split(data_dir / subset)
    label_of = {m["wlasl_id"]: m["index"] for m in build_label_mapping(clips, {})}
    split = pack_split("train", [c for c in clips.values() if c.subset == "train"], label_of,
                       data_dir / "gemma_features", data_dir / "landmarks", "hybrid", 16, FEATURE_DIM,
                       show_progress=False)
    folder = tmp_path / "cache" / "nslt_test-train"
    save_packed(split, folder)
    real_save, calls = np.save, []

    def fail_on_second_array(path, array, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_save(path, array, *args, **kwargs)
    monkeypatch.setattr(hybrid_asl.packing.np, "save", fail_on_second_array)
    with pytest.raises(OSError):
        save_packed(split, folder)
    monkeypatch.setattr(hybrid_asl.packing.np, "save", real_save)
    again = load_packed(folder)
    assert again is not None and np.array_equal(again.landmarks, split.landmarks)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["nslt_test-train"], "a temporary folder was left"


# ---------------------------------------------------------------------------------------------------------------
# Interruptions

@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["sigint", "sigterm"])
def test_ctrl_c_saves_and_prints_the_exact_resume_command(data, tmp_path, signum, code):
    """SIGINT (Ctrl-C) or SIGTERM (a scheduler's time limit) mid-run: exit 130 / 143, last.pt loads, and the
    printed command (run as printed) finishes the run.
    The run folder has a space in its name: the printed command must still work when pasted into a shell."""
    data_dir, subset = data
    out = tmp_path / "ctrl c run"
    process = start("--data_dir", data_dir, "--subset", subset, *TINY, "--epochs", "4", "--output_dir", out)
    try:
        wait_for_rows(process, out, 1)
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == code, (process.returncode, stdout[-2000:], stderr[-2000:])
    assert "Traceback" not in stderr, stderr
    command = f"python train_simple.py --resume {shlex.quote(str(out / 'last.pt'))}"
    assert command in stdout + stderr, stdout
    assert not (out / "metrics.json").exists()
    epoch = loads_finite_checkpoint(out / "last.pt")["epoch"]
    assert 1 <= epoch < 4 and count_rows(out) == epoch
    assert not [p for p in out.iterdir() if ".tmp" in p.name], "a temporary file was left behind"
    argv = shlex.split(command)
    assert argv[:2] == ["python", "train_simple.py"]
    resumed = subprocess.run([sys.executable, *argv[1:]], cwd=ROOT, env=ENV, text=True, capture_output=True,
                             timeout=300)
    succeeded(resumed)
    assert f"resumed from {out / 'last.pt'} after epoch {epoch}" in resumed.stdout
    assert json.loads((out / "metrics.json").read_text())["best_epoch"] in (1, 2, 3, 4)
    assert [row["epoch"] for row in summary_rows(out)] == ["1", "2", "3", "4"]


def test_last_pt_every_n_epochs_and_an_interrupt_still_saves_the_last_finished_one(data, tmp_path, monkeypatch):
    """--save_every 3 on a 4-epoch run writes last.pt before training and after epochs 3 and 4 only. Ctrl-C in
    epoch 3 still leaves the last finished epoch (2, kept in memory) in last.pt, and the resumed run ends exactly
    as the uninterrupted one (in-process both: the same threads, so every number is equal)."""
    script = train_script()["train"].__globals__
    real_save, real_evaluate, writes = script["save_checkpoint"], script["evaluate"], []

    def recorded(state, path):
        writes.append((Path(path).name, state["epoch"]))
        real_save(state, path)
    monkeypatch.setitem(script, "save_checkpoint", recorded)
    argv = [*map(str, seeded_args(data)), "--save_every", "3"]
    assert train_main([*argv, "--output_dir", str(tmp_path / "whole")]) == 0
    assert [epoch for name, epoch in writes if name == "last.pt"] == [0, 3, 4]
    assert json.loads((tmp_path / "whole" / "args.json").read_text())["save_every"] == 3

    calls = [0]

    def interrupted_in_epoch_3(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 3:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)
    monkeypatch.setitem(script, "evaluate", interrupted_in_epoch_3)
    out = tmp_path / "interrupted"
    assert train_main([*argv, "--output_dir", str(out)]) == 130
    assert load_checkpoint(out / "last.pt")["epoch"] == 2 == count_rows(out)
    monkeypatch.setitem(script, "evaluate", real_evaluate)
    assert train_main(["--resume", str(out / "last.pt")]) == 0
    assert (out / "metrics.json").read_text() == (tmp_path / "whole" / "metrics.json").read_text()
    assert summary_rows(out) == summary_rows(tmp_path / "whole")

    # by default a long run writes last.pt about LAST_CHECKPOINTS times: here 2, so every 2nd of 4 epochs
    monkeypatch.setitem(script, "LAST_CHECKPOINTS", 2)
    writes.clear()
    assert train_main([*map(str, seeded_args(data)), "--output_dir", str(tmp_path / "default")]) == 0
    assert [epoch for name, epoch in writes if name == "last.pt"] == [0, 2, 4]


def test_kill_9_mid_epoch_then_resume_matches_an_uninterrupted_run(data, reference_run, tmp_path):
    """SIGKILL during epoch 3 of 4 loses at most that epoch; --resume then ends with the uninterrupted run's
    metrics. Tolerance: none. On CPU with the same seed every number in metrics.json is exactly equal, and every
    summary.csv column except the wall-clock ones (train_seconds, data_seconds, seconds)."""
    out = tmp_path / "killed"
    process = start(*seeded_args(data), "--output_dir", out)
    try:
        wait_for_rows(process, out, 2)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        process.kill()
        process.communicate()
    assert process.returncode == -signal.SIGKILL
    assert not (out / "metrics.json").exists(), "the run was not killed before it finished"
    epoch = loads_finite_checkpoint(out / "last.pt")["epoch"]
    assert epoch in (2, 3)
    succeeded(cli("--resume", out / "last.pt"))
    assert json.loads((out / "metrics.json").read_text()) == json.loads((reference_run / "metrics.json").read_text())
    assert summary_rows(out) == summary_rows(reference_run)
    assert len(summary_rows(out)) == 4


# ---------------------------------------------------------------------------------------------------------------
# Numerical faults and determinism

def nan_losses(monkeypatch, every):
    """Makes every `every`-th training loss NaN: the only way left to get one, since clips with values that would
    overflow are now skipped as out_of_range (tests/test_hostile_inputs.py)."""
    real, calls = hybrid_asl.engine.weighted_loss, [0]

    def weighted_loss(*args):
        loss = real(*args)
        calls[0] += 1
        return loss * float("nan") if calls[0] % every == 0 else loss
    monkeypatch.setattr(hybrid_asl.engine, "weighted_loss", weighted_loss)


def test_nonfinite_loss_step_is_skipped_and_counted(data, tmp_path, monkeypatch, capsys):
    """A step whose loss is NaN is skipped (not applied) and counted, once per epoch (4 steps per epoch here, the
    4th is NaN); the run finishes with finite weights and metrics."""
    data_dir, subset = data
    nan_losses(monkeypatch, every=4)
    out = tmp_path / "run"
    assert train_main(["--data_dir", str(data_dir), "--subset", subset, *map(str, TINY), "--epochs", "2",
                              "--no_cache", "--output_dir", str(out)]) == 0
    log = capsys.readouterr().out
    assert "warning: skipped 1 steps with a non-finite loss in epoch 1" in log
    assert [row["skipped_steps"] for row in summary_rows(out)] == ["1", "1"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["skipped_steps"] == 2
    assert all(np.isfinite(float(row["train_loss"])) for row in summary_rows(out))
    loads_finite_checkpoint(out / "last.pt")
    loads_finite_checkpoint(out / "best.pt")


def test_run_of_nonfinite_losses_stops_and_keeps_the_last_good_checkpoint(data, tmp_path, monkeypatch, capsys):
    data_dir, subset = data
    nan_losses(monkeypatch, every=1)
    out = tmp_path / "run"
    assert train_main(["--data_dir", str(data_dir), "--subset", subset, *map(str, TINY), "--epochs", "3",
                              "--output_dir", str(out)]) == 1
    line = capsys.readouterr().err.strip()
    assert len(line.splitlines()) == 1 and line.startswith("error:")
    for text in ("non-finite loss", "--lr", "features", str(out / "last.pt"), "steps in epoch 1"):
        assert text in line, (text, line)
    checkpoint = loads_finite_checkpoint(out / "last.pt")
    assert checkpoint["epoch"] == 0, "last.pt is the last good state, from before the bad epoch"
    assert not (out / "metrics.json").exists() and not (out / "best.pt").exists()


def test_a_failed_epoch_between_checkpoint_writes_saves_the_last_good_one(data, tmp_path, monkeypatch):
    """With --save_every 3, epoch 3 goes non-finite: last.pt is written then, with epoch 2 (kept in memory), not
    left at epoch 0."""
    real, calls = hybrid_asl.engine.weighted_loss, [0]

    def nan_from_epoch_3(*args):  # 32 clips, batch 8: 4 steps per epoch
        calls[0] += 1
        return real(*args) * (float("nan") if calls[0] > 8 else 1.0)
    monkeypatch.setattr(hybrid_asl.engine, "weighted_loss", nan_from_epoch_3)
    out = tmp_path / "run"
    assert train_main([*map(str, seeded_args(data)), "--save_every", "3", "--output_dir", str(out)]) == 1
    assert loads_finite_checkpoint(out / "last.pt")["epoch"] == 2


def test_same_seed_same_data_same_metrics(data, reference_run, tmp_path):
    """Two runs, same seed and data, on CPU: identical metrics.json (exact equality of every number). The second
    run reads the packed cache the first one wrote, so this also checks that cached and fresh data agree."""
    out = tmp_path / "again"
    succeeded(cli(*seeded_args(data), "--output_dir", out))
    assert (reference_run / "metrics.json").read_text() == (out / "metrics.json").read_text()
    assert summary_rows(out) == summary_rows(reference_run)


def test_resume_refuses_a_different_schedule(tmp_path):
    """The learning-rate schedule lives in the checkpoint: changing it on --resume is an argparse-style error."""
    data_dir, subset = make_wlasl_layout(tmp_path / "data", num_classes=2, clips_per_class=(3, 1, 1))
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "train_simple.py", "--data_dir", str(data_dir), "--subset", subset,
                           "--epochs", "1", "--hidden_dim", "16", "--num_heads", "2", "--device", "cpu",
                           "--output_dir", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    before = (out / "args.json").read_text()
    again = subprocess.run([sys.executable, "train_simple.py", "--resume", str(out / "last.pt"), "--lr", "0.5"],
                           cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert "--lr" in again.stderr.splitlines()[-1] and "start a new run" in again.stderr
    assert (out / "args.json").read_text() == before, "a refused resume must not touch the run folder"


def test_ctrl_c_during_start_up_is_one_line(tmp_path, monkeypatch, capsys):
    data_dir, subset = make_wlasl_layout(tmp_path / "data", num_classes=2, clips_per_class=(3, 1, 1))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setitem(train_script()["train"].__globals__, "load_run_data", interrupted)
    code = train_run(["--data_dir", data_dir, "--subset", subset, "--device", "cpu", "--output_dir", tmp_path / "run"])
    err = capsys.readouterr().err.strip()
    assert code == 130 and err == "interrupted before training started; nothing to resume, run the same command again"
