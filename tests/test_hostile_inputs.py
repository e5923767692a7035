"""Hostile but realistic input through the real command lines (issue 13): untrusted checkpoints and arrays, split
files that try to leave their folders, outputs aimed at inputs, broken file systems, FIFOs, signals, extreme
numbers, inconsistent data, edited files under a cache, absurd flags and checkpoints of older versions.

    python -m pytest tests/test_hostile_inputs.py -q

Every case runs a tool in a subprocess on tiny generated data and checks the exit code, that stderr is one clear
line (never a traceback), what was written and what was not. README 'Trust and safety' states the promises.
"""
import json
import os
import pickle
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import one_error_line, succeeded
from hybrid_asl.clips import LANDMARK_DIM
from hybrid_asl.errors import DataError
from hybrid_asl.files import finite_json, json_text
from hybrid_asl.packing import check_packing_memory
from test_nslt1000_fixes import make_wlasl_layout

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "old_checkpoints"
TINY = ["--hidden_dim", "16", "--num_heads", "2", "--batch_size", "8", "--device", "cpu", "--warmup_epochs", "1"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def _default_signals():
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a background CI shell may start children with SIGINT ignored


def tool(script, *argv, timeout=180, preexec=None, cwd=ROOT):
    """Runs `python <script> argv`; a hang fails the test instead of the suite."""
    def setup():
        _default_signals()
        if preexec:
            preexec()
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, argv)], cwd=cwd, env=ENV, text=True,
                          capture_output=True, timeout=timeout, preexec_fn=setup)


def start(script, *argv):
    return subprocess.Popen([sys.executable, str(ROOT / script), *map(str, argv)], cwd=ROOT, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_default_signals)


def strict_json(path):
    """Parses like a strict JSON reader in another language: NaN/Infinity are not JSON."""
    def refuse(name):
        raise AssertionError(f"{path} holds {name}, which is not JSON")
    return json.loads(Path(path).read_text(), parse_constant=refuse)


def ids(data_dir, subset, split="train"):
    return [v for v, e in json.loads((data_dir / subset).read_text()).items() if e["subset"] == split]


def train_args(data_dir, subset, out, epochs=1):
    return ["--data_dir", data_dir, "--subset", subset, *TINY, "--epochs", epochs, "--output_dir", out]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_wlasl_layout(tmp_path_factory.mktemp("wlasl"))  # 4 classes, 32 / 12 / 12 clips, D = 32


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    """One finished tiny hybrid run: its folder."""
    out = tmp_path_factory.mktemp("run") / "run"
    succeeded(tool("train_simple.py", *train_args(*data, out, epochs=2)))
    return out


@pytest.fixture
def copy(data, tmp_path):
    """A private copy of the data (no cache) for tests that change files."""
    import shutil
    shutil.copytree(data[0], tmp_path / "data", ignore=shutil.ignore_patterns(".cache"))
    return tmp_path / "data", data[1]


def dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# ---------------------------------------------------------------------------------------------------------------
# 1. No file can execute code

class CreatesAFile:
    """Unpickling this calls open(path, 'w'): the file appears if and only if the loader ran code from the file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_the_payload_would_run_under_plain_pickle(tmp_path):
    """The attack is real: an unrestricted unpickler (what torch.load(weights_only=False) used) creates the file."""
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps(CreatesAFile(marker)))
    assert marker.exists()


def test_no_tool_runs_code_from_a_checkpoint(run, tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    checkpoint = torch.load(run / "best.pt", weights_only=True)
    checkpoint["history"] = CreatesAFile(marker)  # a trained checkpoint with one poisoned field
    torch.save(checkpoint, evil)
    landmarks = tmp_path / "x_landmarks.npy"
    np.save(landmarks, np.full((20, LANDMARK_DIM), 0.5, np.float32))
    for script, argv in (("train_simple.py", ["--resume", evil]),
                         ("evaluate.py", ["--checkpoint", evil]),
                         ("predict.py", ["--checkpoint", evil, "--landmarks", landmarks, "--gemma", landmarks])):
        one_error_line(tool(script, *argv), 2, evil, "not a plain checkpoint", "open)")
    assert not marker.exists(), "a tool ran code from the checkpoint"


def test_no_tool_unpickles_an_array(copy, tmp_path):
    """An object .npy whose unpickling would create a file: training skips the clip as unreadable, predict refuses
    it; neither runs its code."""
    data_dir, subset = copy
    marker = tmp_path / "pwned"
    victim = ids(data_dir, subset)[0]
    evil = data_dir / "landmarks" / f"{victim}_landmarks.npy"
    np.save(evil, np.array([CreatesAFile(marker)], dtype=object), allow_pickle=True)
    out = tmp_path / "run"
    log = succeeded(tool("train_simple.py", *train_args(data_dir, subset, out), "--no_cache"))
    assert strict_json(out / "metrics.json")["skipped"]["train"]["unreadable"] == 1 and victim in log
    features = data_dir / "gemma_features" / f"{victim}_gemma.npy"
    one_error_line(tool("predict.py", "--checkpoint", out / "best.pt", "--landmarks", evil, "--gemma", features),
                   2, evil, "pickled Python objects")
    assert not marker.exists(), "a tool unpickled an array"


# ---------------------------------------------------------------------------------------------------------------
# 2. Inputs cannot escape their folders

BAD_IDS = ["../outside", "/tmp/absolute", "sub/dir", "back\\slash", "nul\x00byte", ".."]


def test_video_ids_that_are_paths_are_refused_by_name(copy, tmp_path):
    """Ids that would reach outside the feature/landmark folders are skipped and counted as bad_id. The file the
    '../outside' id would reach is a FIFO: opening it would hang the run, so finishing proves it was never opened."""
    data_dir, subset = copy
    split = json.loads((data_dir / subset).read_text())
    for i, bad in enumerate(BAD_IDS):
        split[bad] = {"subset": ["train", "val", "test"][i % 3], "action": [3, 1, 20]}
    (data_dir / subset).write_text(json.dumps(split))
    os.mkfifo(data_dir / "outside_landmarks.npy")  # where landmarks/../outside_landmarks.npy points
    out = tmp_path / "run"
    result = tool("train_simple.py", *train_args(data_dir, subset, out), "--no_cache", timeout=120)
    log = succeeded(result)
    skipped = strict_json(out / "metrics.json")["skipped"]
    assert sum(s.get("bad_id", 0) for s in skipped.values()) == len(BAD_IDS)
    assert f"{len(BAD_IDS)} video ids are paths or not plain names" in log and "'../outside'" in log


def test_extractor_never_writes_outside_its_folder(tmp_path):
    pytest.importorskip("mediapipe")
    videos = tmp_path / "videos"
    videos.mkdir()
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"../escaped": {"subset": "train", "action": [1, 1, 20]},
                                 "ok": {"subset": "train", "action": [1, 1, 20]}}))
    out = tmp_path / "out" / "landmarks"
    result = tool("extract_landmarks.py", "--videos_dir", videos, "--subset", split, "--output_dir", out,
                  "--no_progress")
    succeeded(result)
    meta = strict_json(out / "extraction_metadata.json")
    assert meta["counts"]["refused"] == 1 and meta["refused"][0]["video_id"] == "../escaped"
    assert "'../escaped' skipped: video id '../escaped' is a path" in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["landmarks"]


# ---------------------------------------------------------------------------------------------------------------
# 3. Outputs never clobber inputs or another run

def test_a_second_run_into_a_busy_folder_is_refused(data, tmp_path):
    out = tmp_path / "run"
    first = start("train_simple.py", *train_args(*data, out, epochs=400))
    try:
        deadline = time.time() + 120
        while not (out / ".lock").exists():
            assert first.poll() is None and time.time() < deadline, "the first run did not start"
            time.sleep(0.05)
        second = tool("train_simple.py", *train_args(*data, out, epochs=1), "--overwrite")
        one_error_line(second, 2, out, "in use by another run", f"process {first.pid}")
        assert first.poll() is None, "the first run was disturbed"
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=60)
    assert first.returncode == 130 and not (out / ".lock").exists()
    torch.load(out / "last.pt", weights_only=True)


def test_a_stale_lock_of_a_dead_process_is_taken_over(data, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").write_text(json.dumps({"pid": dead_pid(), "host": socket.gethostname(), "started": "x",
                                            "command": "killed -9"}))
    log = succeeded(tool("train_simple.py", *train_args(*data, out)))
    assert "which no longer runs (killed or crashed); taking the folder over" in log
    assert (out / "metrics.json").is_file() and not (out / ".lock").exists()


def test_leftover_temporaries_of_a_killed_writer_are_removed(run, tmp_path):
    import shutil
    out = tmp_path / "run"
    shutil.copytree(run, out)
    pid = dead_pid()
    (out / f"last.pt.tmp{pid}").write_bytes(b"PK\x03\x04 half a checkpoint")
    (out / f"summary.csv.tmp{pid}").write_text("epoch,")
    live = out / f"notes.tmp{os.getpid()}"  # a live process's temporary is left alone
    live.write_text("still being written")
    log = succeeded(tool("train_simple.py", "--resume", out / "last.pt", "--epochs", "3"))
    assert "removed 2 temporary files" in log
    assert sorted(p.name for p in out.iterdir() if ".tmp" in p.name) == [live.name]


def test_outputs_aimed_at_inputs_or_empty_are_refused(run, data, tmp_path):
    data_dir, subset = data
    vid = ids(data_dir, subset)[0]
    landmarks = data_dir / "landmarks" / f"{vid}_landmarks.npy"
    features = data_dir / "gemma_features" / f"{vid}_gemma.npy"
    checkpoint = run / "best.pt"
    before = {p: p.read_bytes() for p in (checkpoint, landmarks, features)}
    predict = ["predict.py", "--checkpoint", checkpoint, "--landmarks", landmarks, "--gemma", features]
    one_error_line(tool(*predict, "--output_csv", checkpoint), 2, "--output_csv", "--checkpoint input")
    one_error_line(tool(*predict, "--output_csv", landmarks), 2, "--output_csv", "--landmarks input")
    one_error_line(tool(*predict, "--output_csv", ""), 2, "--output_csv is empty")
    one_error_line(tool("predict.py", "--checkpoint", checkpoint, "--input_dir", data_dir / "landmarks",
                        "--gemma_dir", data_dir / "gemma_features", "--output_csv", landmarks), 2, "--input_dir input")
    one_error_line(tool("evaluate.py", "--checkpoint", checkpoint, "--output_dir", ""), 2, "--output_dir is empty")
    one_error_line(tool("train_simple.py", *train_args(data_dir, subset, "")), 2, "--output_dir is empty")
    assert {p: p.read_bytes() for p in before} == before
    # a split file named like a run file, in the folder the run would write: refused before anything is written
    (tmp_path / "args.json").write_text((data_dir / subset).read_text())
    split_before = (tmp_path / "args.json").read_text()
    one_error_line(tool("train_simple.py", "--data_dir", data_dir, "--subset", tmp_path / "args.json", *TINY,
                        "--output_dir", tmp_path, "--overwrite"), 2, "--subset input")
    assert (tmp_path / "args.json").read_text() == split_before


# ---------------------------------------------------------------------------------------------------------------
# 4. File-system failures are named

def test_a_file_where_a_folder_is_expected_and_the_reverse(data, run, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    one_error_line(tool("train_simple.py", *train_args(*data, blocker)), 2, blocker, "is a file, not a folder")
    one_error_line(tool("train_simple.py", *train_args(*data, blocker / "sub")), 2, blocker / "sub",
                   "a part of the path is a file")
    one_error_line(tool("train_simple.py", *train_args(*data, tmp_path / "r"), "--cache_dir", blocker), 2,
                   "--cache_dir", "is a file")
    vid = ids(*data)[0]
    predict = ["predict.py", "--checkpoint", run / "best.pt", "--landmarks",
               data[0] / "landmarks" / f"{vid}_landmarks.npy", "--gemma",
               data[0] / "gemma_features" / f"{vid}_gemma.npy"]
    one_error_line(tool(*predict, "--output_csv", tmp_path), 2, "--output_csv", "is a folder")
    one_error_line(tool(*predict, "--output_csv", blocker / "x.csv"), 2, blocker / "x.csv", "a part of the path is a file")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "metrics.json").mkdir()  # a folder where the run writes a file
    one_error_line(tool("train_simple.py", *train_args(*data, tmp_path / "busy")), 2, "metrics.json", "is a folder")
    pytest.importorskip("mediapipe")
    one_error_line(tool("extract_landmarks.py", "--videos_dir", tmp_path, "--output_dir", blocker), 2,
                   blocker, "is a file, not a folder")


def test_disk_full_keeps_the_previous_checkpoint(run, tmp_path):
    """A file-size limit (the kernel refuses writes past it: EFBIG, like a full disk) hit while saving: one line
    naming the file, the previous last.pt still loads, no temporary file is left."""
    import shutil
    out = tmp_path / "run"
    shutil.copytree(run, out)
    size = (out / "last.pt").stat().st_size
    before = (out / "last.pt").read_bytes()

    def limit():  # small files (args.json, summary.csv) still fit, a checkpoint does not
        resource.setrlimit(resource.RLIMIT_FSIZE, (size // 2, size // 2))
    result = tool("train_simple.py", "--resume", out / "last.pt", "--epochs", "4", preexec=limit)
    line = one_error_line(result, 2, "cannot write", "File too large", "the previous file is unchanged")
    assert str(out / "best.pt") in line or str(out / "last.pt") in line
    assert (out / "last.pt").read_bytes() == before
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 2
    assert not [p for p in out.iterdir() if ".tmp" in p.name]


def test_a_read_only_place_is_named(data, tmp_path):
    target = None
    if os.geteuid() != 0:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o555)
        target = folder / "run"
    else:  # root writes through chmod; /sys refuses even root in a container
        try:
            os.mkdir("/sys/hostile_probe")
            os.rmdir("/sys/hostile_probe")
        except OSError:
            target = Path("/sys/hostile_probe/run")
    if target is None:
        pytest.skip("no read-only place to write to here")
    one_error_line(tool("train_simple.py", *train_args(*data, target)), 2, target, "cannot be created")


# ---------------------------------------------------------------------------------------------------------------
# 5. Nothing hangs

def test_fifos_and_devices_are_refused_without_being_opened(copy, run, tmp_path):
    data_dir, subset = copy
    victim = ids(data_dir, subset)[0]
    fifo = data_dir / "landmarks" / f"{victim}_landmarks.npy"
    fifo.unlink()
    os.mkfifo(fifo)
    out = tmp_path / "run"
    log = succeeded(tool("train_simple.py", *train_args(data_dir, subset, out), timeout=120))
    assert strict_json(out / "metrics.json")["skipped"]["train"]["not_a_file"] == 1 and victim in log
    split_fifo = tmp_path / "split.json"
    os.mkfifo(split_fifo)
    one_error_line(tool("train_simple.py", "--data_dir", data_dir, "--subset", split_fifo, *TINY, timeout=60), 2,
                   split_fifo, "FIFO")
    checkpoint_fifo = tmp_path / "best.pt"
    os.mkfifo(checkpoint_fifo)
    one_error_line(tool("evaluate.py", "--checkpoint", checkpoint_fifo, timeout=60), 2, checkpoint_fifo, "FIFO")
    features = data_dir / "gemma_features" / f"{victim}_gemma.npy"
    one_error_line(tool("predict.py", "--checkpoint", run / "best.pt", "--landmarks", "/dev/zero", "--gemma",
                        features, timeout=60), 2, "/dev/zero", "is a device")


def test_extractor_refuses_a_fifo_video(tmp_path):
    pytest.importorskip("mediapipe")
    videos = tmp_path / "videos"
    videos.mkdir()
    os.mkfifo(videos / "clip.mp4")
    result = tool("extract_landmarks.py", "--videos_dir", videos, "--output_dir", tmp_path / "out", "--no_progress",
                  timeout=120)
    succeeded(result)
    assert "warning: clip skipped:" in result.stderr and "FIFO" in result.stderr
    assert strict_json(tmp_path / "out" / "extraction_metadata.json")["counts"]["failed"] == 1


def test_sigterm_while_packing_the_cache_ends_within_seconds(tmp_path):
    """A big split is being packed (8 reader threads, thousands of files) when SIGTERM arrives: the tool ends within
    seconds with exit 143 and one line, instead of reading the rest of the corpus first; no temporary is left."""
    data_dir = tmp_path / "data"
    (data_dir / "landmarks").mkdir(parents=True)
    rng = np.random.default_rng(0)
    split = {}
    for i in range(6000):
        vid = f"{i:05d}"
        np.save(data_dir / "landmarks" / f"{vid}_landmarks.npy", rng.random((12, LANDMARK_DIM), np.float32))
        split[vid] = {"subset": ("train", "val", "test")[i % 3], "action": [i % 5, 1, 12]}
    (data_dir / "split.json").write_text(json.dumps(split))
    process = start("train_simple.py", "--data_dir", data_dir, "--subset", "split.json", "--modality", "landmarks",
                    *TINY, "--output_dir", tmp_path / "run")
    try:
        for line in process.stdout:
            if line.startswith("packing train"):
                break
        process.send_signal(signal.SIGTERM)
        signalled = time.time()
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert time.time() - signalled < 10, "the tool kept working after SIGTERM"
    assert process.returncode == 143 and "Traceback" not in stderr, stderr
    assert stderr.strip() == "interrupted before training started; nothing to resume, run the same command again"
    cache = data_dir / ".cache"
    assert not cache.exists() or not [p for p in cache.iterdir() if ".tmp" in p.name]


def test_a_second_ctrl_c_ends_the_run_at_once(data, tmp_path):
    out = tmp_path / "run"
    process = start("train_simple.py", *train_args(*data, out, epochs=400))
    try:
        deadline = time.time() + 120
        while not (out / "summary.csv").exists():
            assert process.poll() is None and time.time() < deadline
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 130
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] >= 1  # the last good checkpoint is whole


# ---------------------------------------------------------------------------------------------------------------
# 6. Numbers stay numbers

def _save(value):
    def write(path):
        np.save(path, value, allow_pickle=False)
    return write


NUMBER_FAULTS = {  # case: (stream, writer, the reason it is counted under)
    "landmarks_3e38": ("landmarks", _save(np.full((20, LANDMARK_DIM), 3e38, np.float32)), "out_of_range"),
    "landmarks_int64_overflow": ("landmarks", _save(np.full((20, LANDMARK_DIM), np.iinfo(np.int64).min)),
                                 "out_of_range"),
    "landmarks_bool": ("landmarks", _save(np.ones((20, LANDMARK_DIM), bool)), "bad_dtype"),
    "gemma_complex": ("gemma", _save(np.ones((16, 32), np.complex64)), "bad_dtype"),
    "gemma_float64_1e300": ("gemma", _save(np.full((16, 32), 1e300)), "out_of_range"),
    "gemma_text": ("gemma", _save(np.full((16, 32), "a")), "bad_dtype"),
}


def test_extreme_values_and_odd_dtypes_are_counted_bad_clips(copy, tmp_path):
    data_dir, subset = copy
    victims = dict(zip(NUMBER_FAULTS, ids(data_dir, subset)))
    for case, (stream, write, _) in NUMBER_FAULTS.items():
        folder, suffix = ("landmarks", "_landmarks.npy") if stream == "landmarks" else ("gemma_features", "_gemma.npy")
        write(data_dir / folder / f"{victims[case]}{suffix}")
    out = tmp_path / "run"
    log = succeeded(tool("train_simple.py", *train_args(data_dir, subset, out, epochs=2), "--no_cache"))
    metrics = strict_json(out / "metrics.json")
    expected = {}
    for _, _, reason in NUMBER_FAULTS.values():
        expected[reason] = expected.get(reason, 0) + 1
    assert {k: v for k, v in metrics["skipped"]["train"].items() if v and k != "nonfinite_landmark_clips"} == expected
    assert all(victims[case] in log for case in NUMBER_FAULTS)
    rows = (out / "summary.csv").read_text().splitlines()[1:]
    assert all(row.split(",")[-1] == "0" for row in rows), "no step had a non-finite loss"
    assert all(np.isfinite(float(row.split(",")[1])) for row in rows)


def test_strict_json_never_holds_nan():
    text = json_text({"loss": float("nan"), "top1": [float("inf"), 0.5], "n": 0})
    assert json.loads(text, parse_constant=lambda c: pytest.fail(c)) == {"loss": None, "top1": [None, 0.5], "n": 0}
    assert finite_json((1.0, float("-inf"))) == [1.0, None]


def test_predict_never_prints_nan(run, data, tmp_path):
    broken = tmp_path / "nan.pt"
    checkpoint = torch.load(run / "best.pt", weights_only=True)
    name = next(k for k, t in checkpoint["model"].items() if t.is_floating_point() and "classifier" in k)
    checkpoint["model"][name] = torch.full_like(checkpoint["model"][name], float("nan"))
    torch.save(checkpoint, broken)
    vid = ids(*data, "test")[0]
    result = tool("predict.py", "--checkpoint", broken, "--landmarks", data[0] / "landmarks" / f"{vid}_landmarks.npy",
                  "--gemma", data[0] / "gemma_features" / f"{vid}_gemma.npy", "--output_csv", tmp_path / "p.csv")
    one_error_line(result, 2, broken, "NaN or infinite weights")
    assert "nan" not in result.stdout.lower() and not (tmp_path / "p.csv").exists()


# ---------------------------------------------------------------------------------------------------------------
# 7. Data consistency is reported, not assumed

def test_duplicate_ids_and_reversed_windows_are_named_and_counted(data, tmp_path):
    data_dir, subset = data
    entries = json.loads((data_dir / subset).read_text())
    first = ids(data_dir, subset, "train")[0]
    body = ",\n".join(f'"{v}": {json.dumps(e)}' for v, e in entries.items())
    again = dict(entries[first], subset="test")
    text = "{" + body + f',\n"{first}": {json.dumps(again)}' + "}"  # listed twice: train, then test
    split = tmp_path / "dupes.json"
    split.write_text(text)
    reversed_id = ids(data_dir, subset, "val")[0]
    split.write_text(text.replace(f'"{reversed_id}": {json.dumps(entries[reversed_id])}',
                                  f'"{reversed_id}": ' + json.dumps(dict(entries[reversed_id],
                                                                         action=[entries[reversed_id]["action"][0],
                                                                                 30, 5]))))
    out = tmp_path / "run"
    log = succeeded(tool("train_simple.py", "--data_dir", data_dir, "--subset", split, *TINY, "--epochs", "1",
                         "--output_dir", out, "--no_cache"))
    assert f"1 video ids are listed more than once ('{first}' (train then test)); the first entry" in log
    assert f"1 clips have a frame window that ends before it starts ('{reversed_id}')" in log
    metrics = strict_json(out / "metrics.json")
    assert metrics["test"]["n_listed"] == len(ids(data_dir, subset, "test")), "the duplicate is not tested again"


def test_partly_decodable_video_and_windows_outside_the_clip(tmp_path):
    pytest.importorskip("mediapipe")
    import cv2
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("cut", "whole"):
        writer = cv2.VideoWriter(str(videos / f"{name}.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 25, (64, 48))
        for i in range(40):
            writer.write(np.full((48, 64, 3), 5 * i, np.uint8))
        writer.release()
    data = (videos / "cut.avi").read_bytes()
    (videos / "cut.avi").write_bytes(data[: len(data) // 2])  # an interrupted download
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"cut": {"subset": "train", "action": [1, 1, 40]},
                                 "whole": {"subset": "train", "action": [1, 1, 400]},
                                 "late": {"subset": "train", "action": [1, 300, 400]},
                                 "backwards": {"subset": "train", "action": [1, 30, 10]}}))
    (videos / "late.avi").write_bytes((videos / "whole.avi").read_bytes())
    out = tmp_path / "out"
    result = tool("extract_landmarks.py", "--videos_dir", videos, "--subset", split, "--output_dir", out,
                  "--no_progress")
    succeeded(result)
    meta = strict_json(out / "extraction_metadata.json")
    notes = {n["video_id"]: n["note"] for n in meta["notes"]}
    assert "of the 40 frames of its window decode" in notes["cut"] and "used those" in notes["cut"]
    assert "beyond its 40 frames; used the frames up to its end" in notes["whole"]
    assert [f["video_id"] for f in meta["failed"]] == ["late"] and "starts at frame 300" in meta["failed"][0]["reason"]
    assert meta["refused"] == [{"video_id": "backwards", "reason": "frame window 30..10 ends before it starts"}]
    assert meta["counts"]["extracted"] == 2 and meta["counts"]["with_notes"] == 2
    assert "warning: cut: only" in result.stderr and "2 warnings" in result.stdout


# ---------------------------------------------------------------------------------------------------------------
# 8. Caches are keyed by content

def test_an_edited_file_is_read_again_even_with_size_and_mtime_restored(copy, tmp_path):
    data_dir, subset = copy
    victim = ids(data_dir, subset, "val")[0]
    path = data_dir / "landmarks" / f"{victim}_landmarks.npy"
    first = strict_json_run(data_dir, subset, tmp_path / "first")
    assert first["skipped"]["val"].get("out_of_range", 0) == 0
    stat = path.stat()
    shape = np.load(path).shape
    np.save(path, np.full(shape, 1e30, np.float32))  # same size, same layout, other content
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    second = strict_json_run(data_dir, subset, tmp_path / "second")
    assert second["skipped"]["val"]["out_of_range"] == 1, "the stale cache was used"
    third = strict_json_run(data_dir, subset, tmp_path / "third")  # unchanged since: the cache is used again
    assert third["skipped"] == second["skipped"]


def strict_json_run(data_dir, subset, out):
    log = succeeded(tool("train_simple.py", *train_args(data_dir, subset, out), "--modality", "landmarks"))
    assert ("packing val" in log) == (out.name != "third"), log  # packed on a change only
    return strict_json(out / "metrics.json")


# ---------------------------------------------------------------------------------------------------------------
# 9. Every flag has a range

@pytest.mark.parametrize("script, flags, names", [
    ("train_simple.py", ["--seed", "-1"], "--seed"),
    ("train_simple.py", ["--seed", str(2**32)], "--seed"),
    ("train_simple.py", ["--num_frames", "1000000"], "--num_frames"),
    ("train_simple.py", ["--batch_size", str(10**9)], "--batch_size"),
    ("train_simple.py", ["--lr", "inf"], "--lr"),
    ("train_simple.py", ["--lr", "1e30"], "--lr"),
    ("train_simple.py", ["--gpu_cache_gb", "nan"], "--gpu_cache_gb"),
    ("train_simple.py", ["--grad_clip", "0"], "--grad_clip"),
    ("train_simple.py", ["--ema_decay", "1"], "--ema_decay"),
    ("train_simple.py", ["--hidden_dim", "100000"], "--hidden_dim"),
    ("train_simple.py", ["--aug_rotate_p", "2"], "--aug_rotate_p"),
    ("evaluate.py", ["--checkpoint", "x.pt", "--batch_size", "0"], "--batch_size"),
    ("predict.py", ["--checkpoint", "x.pt", "--top_k", "0"], "--top_k"),
    ("extract_landmarks.py", ["--videos_dir", ".", "--workers", "0"], "--workers"),
    ("extract_landmarks.py", ["--videos_dir", ".", "--num_frames", "-3"], "--num_frames"),
    ("extract_gemma_features.py", ["--videos_dir", ".", "--readers", "0"], "--readers"),
    ("extract_gemma_features.py", ["--videos_dir", ".", "--batch_size", "-1"], "--batch_size"),
])
def test_numeric_flags_out_of_range(data, script, flags, names):
    extra = ["--data_dir", data[0], "--subset", data[1]] if script == "train_simple.py" else []
    one_error_line(tool(script, *extra, *flags), 2, names)


def test_what_does_not_fit_in_memory_is_said_before_allocating(data, tmp_path):
    result = tool("train_simple.py", *train_args(*data, tmp_path / "run"), "--hidden_dim", "8192", "--num_heads", "8",
                  "--num_layers", "64")
    one_error_line(result, 2, "parameters", "more than the", "lower --hidden_dim or --num_layers")
    assert not (tmp_path / "run").exists()
    check_packing_memory("train", 1000, "landmarks", 100, None)  # fits anywhere
    with pytest.raises(DataError, match=r"--num_frames 4096: the train split \(1000000 clips\) needs .* fewer fits"):
        check_packing_memory("train", 10**6, "hybrid", 4096, 2560)


# ---------------------------------------------------------------------------------------------------------------
# 10. Checkpoints of older versions

OLD = {  # fixture: what it is. Made by train_simple.py at that commit (1 epoch, hidden 16, seed 42) on
         # make_wlasl_layout(num_classes=3, clips_per_class=(4, 2, 2), gemma_dim=8)
    "94c5d7c-hybrid": "the first version: no train_counts",
    "acc57e4-landmarks": "before standardized landmark channels",
    "f9ed3ec-hybrid": "the last version before issue 13",
}


@pytest.fixture(scope="module")
def old_data(tmp_path_factory):
    return make_wlasl_layout(tmp_path_factory.mktemp("old"), num_classes=3, clips_per_class=(4, 2, 2), gemma_dim=8)


@pytest.mark.parametrize("name", list(OLD))
def test_old_checkpoints_evaluate_to_their_own_metrics(old_data, name, tmp_path):
    data_dir, subset = old_data
    checkpoint = FIXTURES / name / "best.pt"
    result = tool("evaluate.py", "--checkpoint", checkpoint, "--data_dir", data_dir, "--subset", subset,
                  "--output_dir", tmp_path, "--no_plots")
    log = succeeded(result)
    recorded = json.loads((FIXTURES / name / "metrics.json").read_text())["test"]
    now = strict_json(tmp_path / "eval_test" / "metrics.json")["test"]
    assert now["n"] == recorded["n"] and now["top1"] == recorded["top1"]
    assert abs(now["loss"] - recorded["loss"]) < 1e-6
    if name.startswith("94c5d7c"):
        assert "written before 2026-11-25 (no train_counts, ema_updates in it)" in log
        assert {r.split(",")[-1] for r in (tmp_path / "eval_test" / "per_class.csv").read_text().splitlines()[1:]} \
            == {""}
    vid = ids(data_dir, subset, "test")[0]
    succeeded(tool("predict.py", "--checkpoint", checkpoint, "--landmarks", data_dir / "landmarks" /
                   f"{vid}_landmarks.npy", "--gemma", data_dir / "gemma_features" / f"{vid}_gemma.npy"))


def test_checkpoints_no_version_can_read_are_named(tmp_path):
    checkpoint = torch.load(FIXTURES / "f9ed3ec-hybrid" / "best.pt", weights_only=True)
    future = dict(checkpoint, format="hybrid-asl-trainer/9")
    torch.save(future, tmp_path / "future.pt")
    one_error_line(tool("evaluate.py", "--checkpoint", tmp_path / "future.pt"), 2, "newer version",
                   "hybrid-asl-trainer/9")
    gutted = {k: v for k, v in checkpoint.items() if k != "label_mapping"}
    torch.save(gutted, tmp_path / "gutted.pt")
    one_error_line(tool("evaluate.py", "--checkpoint", tmp_path / "gutted.pt"), 2, "incompatible version",
                   "without label_mapping", "retrain")
