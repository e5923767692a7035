"""Live (streaming) recognition: hybrid_asl.live and `predict.py --stream`.

    python -m pytest tests/test_live.py -q

The recognizer's logic runs on scripted landmark rows with scripted models (no extras needed). The real stream
tests need ../shared/data/videos, the extras (mediapipe, opencv) and requirements-export.txt, and skip cleanly
without them: they train a small landmark-only model with the product's trainer on the reference landmarks of the
10 real clips (strong augmentation, seeded), export it, and stream real clip files through MediaPipe frame by frame.
"""
import importlib.util
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import predict
from helpers import ROOT, one_error_line, train_run
from hybrid_asl import live
from hybrid_asl.live import LiveConfig, StreamRecognizer, hands_up
from hybrid_asl.onnx_model import OnnxModel, softmax

VIDEOS = ROOT.parent / "shared" / "data" / "videos"
REFERENCE = VIDEOS / "reference_landmarks_mediapipe_0.10.21"
# The glosses of the real clips (../shared/data/videos/NOTES.md); test_video's sign is not named there.
REAL_CLIPS = {"wlasl_raw/00335": "abdomen", "wlasl_raw/00336": "abdomen", "wlasl_raw/00338": "abdomen",
              "wlasl_raw/00339": "abdomen", "msl150/ambulancia_001": "ambulancia", "msl150/doctor_001": "doctor",
              "msl150/dolor_001": "dolor", "msl150/hoy_001": "hoy", "msl150/yo_001": "yo",
              "pose_format_test/test_video": "test_video"}
EXTRAS = ("mediapipe", "cv2", "onnx", "onnxruntime", "onnxscript")
needs_real = pytest.mark.skipif(not REFERENCE.is_dir() or any(importlib.util.find_spec(m) is None for m in EXTRAS),
                                reason="needs ../shared/data/videos, requirements-extract.txt and "
                                       "requirements-export.txt")


# ---------------------------------------------------------------------------------------------------------------
# Scripted rows and models

def frame(hand_x=None, hand_y=0.55, shoulders=True):
    """One (162,) row: shoulders at y 0.4 (0.2 apart), the right hand at (hand_x, hand_y) when given."""
    pts = np.zeros((54, 3), np.float32)
    if shoulders:
        pts[42], pts[43] = (0.6, 0.4, -0.1), (0.4, 0.4, -0.1)
    if hand_x is not None:
        pts[21:42, 0], pts[21:42, 1] = hand_x + np.linspace(0, 0.03, 21), hand_y + np.linspace(0, -0.05, 21)
    return pts.reshape(162)


class MajorityModel:
    """Class "left" when most frames it is shown have the right hand at x < 0.5, else "right"; logits scaled by
    `sharpness` (0: a flat, unconfident answer). Records how many frames each decision saw."""
    label_mapping = [{"index": 0, "wlasl_id": 10, "gloss": "left"}, {"index": 1, "wlasl_id": 11, "gloss": "right"}]
    num_frames, modality, path = 8, "landmarks", "scripted"

    def __init__(self, sharpness=10.0):
        self.sharpness, self.windows = sharpness, []

    def predict(self, clips):
        out = []
        for gemma, landmarks in clips:
            assert gemma is None and len(landmarks) <= self.num_frames
            x = landmarks[:, 63]                  # right hand, point 0, x
            real = x != 0
            left = ((x < 0.5) & real).sum() / max(real.sum(), 1)
            self.windows.append(len(landmarks))
            out.append(softmax(self.sharpness * np.array([left, 1 - left], np.float32)))
        return np.stack(out)


class ScriptedModel(MajorityModel):
    """Answers a fixed sequence of classes, whatever it is shown."""

    def __init__(self, answers):
        super().__init__()
        self.answers = list(answers)

    def predict(self, clips):
        return softmax(np.float32([[10.0, 0.0] if self.answers.pop(0) == 0 else [0.0, 10.0]]))


def stream(recognizer, rows, fps=25.0):
    segments = []
    for i, row in enumerate(rows):
        segments += recognizer.push(i / fps, row)
    return segments + recognizer.finish()


def check_partition(segments, end):
    """Segments cover the stream from 0 to `end` without gaps, and each one differs from the one before."""
    assert segments[0].start == 0.0 and segments[-1].end == pytest.approx(end)
    for a, b in zip(segments, segments[1:]):
        assert a.end == b.start and a.start <= a.end
        assert a.label != b.label


def test_hands_up_rest_line():
    assert hands_up(frame(0.3, hand_y=0.55))                   # chest height
    assert hands_up(frame(0.3, hand_y=0.70))                   # 1.5 shoulder widths below: still up (abdomen)
    assert not hands_up(frame(0.3, hand_y=0.85))               # 2.25 widths below: down
    assert hands_up(frame(0.3, hand_y=0.85), rest_line=100.0)  # a large line: any detected hand is up
    assert not hands_up(frame(None))                           # no hand detected
    assert hands_up(frame(0.3, hand_y=0.95, shoulders=False))  # no shoulders: no line to judge by


def test_signs_separated_by_rest_are_reported_in_order_with_their_spans():
    rows = [frame()] * 25 + [frame(0.3)] * 50 + [frame()] * 25 + [frame(0.7)] * 50 + [frame()] * 25
    recognizer = StreamRecognizer(MajorityModel(), LiveConfig(hop=1))
    segments = stream(recognizer, rows)
    assert [s.label for s in segments] == [live.NO_SIGN, "left", live.NO_SIGN, "right", live.NO_SIGN]
    check_partition(segments, (len(rows) - 1) / 25)
    left, right = segments[1], segments[3]
    assert left.wlasl_id == 10 and left.confidence == pytest.approx(1 / (1 + np.exp(-10)), abs=1e-6)
    assert 1.0 + 0.5 <= left.start <= 1.0 + 0.5 + 0.1          # signing starts at 1 s; min_window 0.5 s
    assert 3.0 <= left.end <= 3.0 + 0.4 + 0.1                   # hands down at 3 s; rest_after 0.4 s
    assert 4.0 + 0.5 <= right.start and right.end <= 6.0 + 0.5
    assert segments[2].confidence is None and segments[2].gloss is None
    # after the pause a decision sees only the second sign's frames: the pause cuts the window
    assert min(d.window_start for d in recognizer.decisions if d.time > 4.0 and d.reason == "sign") == 4.0


def test_continuous_signing_switches_when_the_window_turns_over():
    """No rest between two signs: the sliding window (2 s) decides by what it sees, so the change comes about half
    a window after the boundary."""
    rows = [frame(0.3)] * 75 + [frame(0.7)] * 75
    segments = stream(StreamRecognizer(MajorityModel(), LiveConfig(hop=1, window=2.0)), rows)
    assert [s.label for s in segments] == [live.NO_SIGN, "left", "right"]
    assert 3.0 + 0.8 <= segments[2].start <= 3.0 + 1.0 + 0.25  # the model sees 8 frames sampled from the window


def test_low_confidence_is_no_sign():
    recognizer = StreamRecognizer(MajorityModel(sharpness=0.0), LiveConfig(hop=1, min_confidence=0.6))
    segments = stream(recognizer, [frame(0.3)] * 60)
    assert [s.label for s in segments] == [live.NO_SIGN]
    assert {d.reason for d in recognizer.decisions} == {"low confidence"}


def test_hold_ignores_a_single_disagreeing_decision():
    answers = [0, 0, 0, 1, 0, 0, 1, 1, 1]
    recognizer = StreamRecognizer(ScriptedModel(answers), LiveConfig(hop=1, min_window=0.0, hold=2))
    segments = stream(recognizer, [frame(0.3)] * len(answers))
    assert [s.label for s in segments] == [live.NO_SIGN, "left", "right"]
    assert segments[2].start == pytest.approx(6 / 25)   # the first of the two agreeing decisions
    assert segments[1].decisions == 5                    # 0, 0 (the switch), 0, 0, 0; the lone 1 is not counted


def test_hop_and_window_bound_the_model_calls():
    model = MajorityModel()
    recognizer = StreamRecognizer(model, LiveConfig(hop=3, window=1.0))
    stream(recognizer, [frame(0.3)] * 100)
    assert recognizer.model_calls == len(model.windows) <= 100 // 3 + 1
    assert max(model.windows) == model.num_frames           # sampled down to num_frames
    assert max(d.frames for d in recognizer.decisions) == 26  # at most 1 s of frames at 25 fps


def test_visual_models_are_refused_for_live(tmp_path):
    pytest.importorskip("onnx")
    from test_onnx_export import tiny_checkpoint
    for modality in ("hybrid", "gemma"):
        checkpoint = tiny_checkpoint(tmp_path / f"{modality}.pt", ["--modality", modality])
        result = subprocess.run([sys.executable, "predict.py", "--checkpoint", str(checkpoint), "--stream", "0"],
                                capture_output=True, text=True, cwd=ROOT, timeout=300)
        one_error_line(result, 2, f"is a {modality} model", "Gemma encoder", "not live", "--modality landmarks")


# ---------------------------------------------------------------------------------------------------------------
# Real clips through MediaPipe

@pytest.fixture(scope="module")
def real_model(tmp_path_factory):
    """(checkpoint, .onnx) of a landmark-only model trained with train_simple.py on the reference landmarks of the 10
    real clips (7 glosses, strong augmentation, seed 42); val and test repeat the clips: it only has to know them."""
    if not REFERENCE.is_dir() or any(importlib.util.find_spec(m) is None for m in EXTRAS):
        pytest.skip("needs ../shared/data/videos, requirements-extract.txt and requirements-export.txt")
    from hybrid_asl.onnx_export import export_checkpoint
    root = tmp_path_factory.mktemp("real_live")
    (root / "data" / "landmarks").mkdir(parents=True)
    glosses = sorted(set(REAL_CLIPS.values()))
    class_id = {g: 100 + i for i, g in enumerate(glosses)}
    split = {}
    for subset in ("train", "val", "test"):
        for clip, gloss in REAL_CLIPS.items():
            video_id = f"{len(split):05d}"
            source = REFERENCE / f"{clip.split('/')[1]}.npy"
            shutil.copy(source, root / "data" / "landmarks" / f"{video_id}_landmarks.npy")
            split[video_id] = {"subset": subset, "action": [class_id[gloss], 1, len(np.load(source))]}
    (root / "data" / "real.json").write_text(json.dumps(split))
    (root / "data" / "wlasl_class_list.txt").write_text("".join(f"{class_id[g]}\t{g}\n" for g in glosses))
    run = root / "run"
    assert train_run(["--data_dir", root / "data", "--subset", "real.json", "--modality", "landmarks",
                      "--hidden_dim", "64", "--num_heads", "4", "--epochs", "40", "--batch_size", "10",
                      "--warmup_epochs", "2", "--lr", "3e-3", "--dropout", "0.1", "--drop_path", "0",
                      "--augment", "strong", "--device", "cpu", "--no_cache", "--seed", "42",
                      "--output_dir", run]) == 0
    # the last epoch: best.pt keeps the first epoch that reached val top-1 1.0 (val repeats the training clips)
    _, parity = export_checkpoint(run / "last.pt", run / "model.onnx")
    assert max(d for _, d in parity) < 1e-4
    return run / "last.pt", run / "model.onnx"


@needs_real
def test_live_rows_are_the_extractors_rows():
    """Frame by frame through live's reader and tracker gives what extract_landmarks.py writes for the video."""
    from hybrid_asl.mediapipe_landmarks import extract_video_landmarks, holistic_row
    video = VIDEOS / "wlasl_raw" / "00339.mp4"
    with live.holistic() as tracker:
        rows = np.stack([holistic_row(tracker.process(rgb))
                         for _, rgb in live.read_frames(live.open_source(video), realtime=False)])
    assert np.array_equal(rows, extract_video_landmarks(str(video)))


@needs_real
def test_stream_a_real_clip_with_onnx_and_with_the_checkpoint(real_model):
    """00335 (abdomen): hands down, the sign, hands down again, read as fast as possible; the checkpoint (torch)
    and its .onnx export (onnxruntime) report the same segments."""
    import torch
    checkpoint, onnx_path = real_model
    threads = torch.get_num_threads()
    summaries = {}
    try:
        for name, model in (("onnx", OnnxModel(onnx_path, threads=1)),
                            ("checkpoint", predict.CheckpointModel(checkpoint, torch.device("cpu"), threads=1))):
            summaries[name] = live.run_stream(model, VIDEOS / "wlasl_raw" / "00335.mp4", realtime=False)
    finally:
        torch.set_num_threads(threads)
    summary = summaries["onnx"]
    assert summary["frames"] == 58 and summary["dropped"] == 0 and summary["stopped"] is None
    segments = summary["segments"]
    assert [s["gloss"] for s in segments] == [None, "abdomen", None]
    assert segments[0]["start"] == 0.0 and segments[-1]["end"] == 57 / 25
    assert 0.5 < segments[1]["start"] < segments[1]["end"] < 57 / 25 and segments[1]["confidence"] >= 0.5
    assert summary["model_calls"] > 0 and 0 < summary["model_share"] < 1
    by_checkpoint = summaries["checkpoint"]["segments"]
    assert [(s["gloss"], s["start"], s["end"]) for s in by_checkpoint] == \
        [(s["gloss"], s["start"], s["end"]) for s in segments]
    assert [s["confidence"] for s in by_checkpoint] == pytest.approx([s["confidence"] for s in segments], abs=1e-3)


@needs_real
def test_stream_a_file_as_if_live(real_model):
    """At the file's own frame rate: it takes the clip's duration, and the frames processing cannot keep up with
    are dropped (as from a camera), never queued."""
    _, onnx_path = real_model
    summary = live.run_stream(OnnxModel(onnx_path, threads=1), VIDEOS / "wlasl_raw" / "00335.mp4")
    assert summary["frames"] + summary["dropped"] == 58 and summary["frames"] > 0
    assert summary["wall_seconds"] >= 0.9 * 57 / 25
    assert summary["segments"][0]["gloss"] is None and summary["segments"][-1]["end"] <= 57 / 25


def two_clip_video(first, second, path):
    """The two real clips one after the other in one .mp4 (same frame size); returns the boundary in seconds."""
    import cv2
    frames, fps = [], None
    for clip in (first, second):
        cap = cv2.VideoCapture(str(VIDEOS / f"{clip}.mp4"))
        fps = fps or cap.get(cv2.CAP_PROP_FPS)
        while True:
            ok, image = cap.read()
            if not ok:
                break
            frames.append(image)
        cap.release()
        if clip == first:
            boundary = len(frames) / fps
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for image in frames:
        writer.write(image)
    writer.release()
    return boundary


@needs_real
def test_two_real_clips_back_to_back_are_reported_in_order(real_model, tmp_path, capsys):
    """doctor_001 then hoy_001 (the same signer, no rest between them) as one video, through the command line: the
    stream reports doctor, then hoy, each in its own part of the video, in the printout and in the .jsonl file."""
    _, onnx_path = real_model
    first, second = "msl150/doctor_001", "msl150/hoy_001"
    boundary = two_clip_video(first, second, tmp_path / "two_signs.mp4")
    out = tmp_path / "segments.jsonl"
    assert predict.run(["--checkpoint", str(onnx_path), "--stream", str(tmp_path / "two_signs.mp4"), "--fast",
                        "--segments", str(out)]) == 0
    printed = capsys.readouterr().out
    segments = [json.loads(line) for line in out.read_text().splitlines()]
    a, b = REAL_CLIPS[first], REAL_CLIPS[second]
    assert [s["gloss"] for s in segments if s["gloss"] is not None] == [a, b], segments
    sign_a, sign_b = (next(s for s in segments if s["gloss"] == g) for g in (a, b))
    assert sign_a["start"] < boundary < sign_b["end"] and sign_a["end"] <= sign_b["start"]
    assert sign_a["confidence"] >= 0.5 and sign_b["confidence"] >= 0.5
    assert re.findall(r"^ *[\d.]+ - +[\d.]+ s  (.+?) +[\d.]*$", printed, re.M) == \
        [s["gloss"] or live.NO_SIGN for s in segments]
    assert "frames/s" in printed and "% of the time" in printed


@needs_real
def test_stream_from_onnx_runs_without_torch_and_writes_csv(real_model, tmp_path):
    """`predict.py --checkpoint model.onnx --stream clip.mp4` in an interpreter where torch cannot be imported."""
    _, onnx_path = real_model
    out = tmp_path / "segments.csv"
    no_torch = "import sys; sys.modules['torch'] = None; import runpy; runpy.run_path('predict.py', run_name='__main__')"
    result = subprocess.run([sys.executable, "-c", no_torch, "--checkpoint", str(onnx_path), "--stream",
                             str(VIDEOS / "wlasl_raw" / "00339.mp4"), "--fast", "--segments", str(out)],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = out.read_text().splitlines()
    assert rows[0] == "gloss,wlasl_id,confidence,start,end,decisions"
    assert "abdomen" in [row.split(",")[0] for row in rows[1:]]


@needs_real
def test_sigterm_closes_the_open_segment_and_writes_the_file(real_model, tmp_path):
    """Stopping a live stream (SIGTERM, like Ctrl-C) reports the open segment, writes the segments and the summary,
    and exits 143."""
    import signal
    _, onnx_path = real_model
    out = tmp_path / "segments.jsonl"
    process = subprocess.Popen([sys.executable, "predict.py", "--checkpoint", str(onnx_path), "--stream",
                                str(VIDEOS / "wlasl_raw" / "00335.mp4"), "--segments", str(out)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    printed = [process.stdout.readline() for _ in range(2)]  # the header, then the first segment that ended
    process.send_signal(signal.SIGTERM)
    rest, err = process.communicate(timeout=120)
    assert process.returncode == 143 and "Traceback" not in err, err
    assert printed[1].split()[4:6] == ["(no", "sign)"] and "abdomen" in rest and "frames/s" in rest
    segments = [json.loads(line) for line in out.read_text().splitlines()]
    assert [s["gloss"] for s in segments] == [None, "abdomen"] and segments[1]["end"] >= segments[1]["start"]


@needs_real
def test_stream_errors_are_one_line(real_model, tmp_path):
    _, onnx_path = real_model

    def stream(*flags):
        return subprocess.run([sys.executable, "predict.py", "--checkpoint", str(onnx_path), "--stream",
                               *map(str, flags)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    one_error_line(stream(tmp_path / "missing.mp4"), 2, "missing.mp4")
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 1000)
    one_error_line(stream(tmp_path / "broken.mp4"), 2, "cannot open video")
    clip = VIDEOS / "wlasl_raw" / "00335.mp4"
    one_error_line(stream(clip, "--segments", tmp_path / "out.txt"), 2, "--segments", ".csv or a .jsonl")
    one_error_line(stream(clip, "--segments", clip), 2, "--segments", "--stream input")
    one_error_line(stream(clip, "--output_csv", tmp_path / "x.csv"), 2, "--output_csv", "--segments")
    one_error_line(stream(clip, "--hop", "0"), 2, "--hop")
    one_error_line(stream("7"), 2, "cannot open camera 7")


@needs_real
def test_predict_video_from_onnx_gives_the_checkpoints_top5(real_model, capsys):
    """predict.py --video with the checkpoint and with the .onnx file (MediaPipe, then onnxruntime): the same top-5
    for a real clip, and the right gloss first."""
    checkpoint, onnx_path = real_model
    video = str(VIDEOS / "msl150" / "dolor_001.mp4")
    top5 = []
    for model in (checkpoint, onnx_path):
        assert predict.run(["--checkpoint", str(model), "--video", video]) == 0
        top5.append([line.split()[1] for line in capsys.readouterr().out.splitlines()
                     if line.strip()[:2] in ("1.", "2.", "3.", "4.", "5.")])
    assert top5[0] == top5[1] and top5[0][0] == REAL_CLIPS["msl150/dolor_001"]
