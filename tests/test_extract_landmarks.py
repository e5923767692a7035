"""Landmark extraction on real clips, against MediaPipe 0.10.21 reference output.

    python -m pytest tests/test_extract_landmarks.py -q

Needs the extras (pip install -r requirements-extract.txt) and ../shared beside the checkout; skips without them.
"""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"
VIDEOS = SHARED / "data" / "videos"
WLASL = SHARED / "data" / "wlasl"
REFERENCE = VIDEOS / "reference_landmarks_mediapipe_0.10.21"
WLASL_RAW = VIDEOS / "wlasl_raw"
POSES = VIDEOS / "pose_format_test"

pytestmark = pytest.mark.skipif(not WLASL_RAW.is_dir(), reason="../shared/data/videos not present")
cv2 = pytest.importorskip("cv2", reason="extras not installed: pip install -r requirements-extract.txt")

from hybrid_asl import extraction  # noqa: E402
from hybrid_asl.clips import uniform_indices  # noqa: E402
from hybrid_asl.extraction import take_shard  # noqa: E402
from hybrid_asl.mediapipe_landmarks import pose_file_landmarks  # noqa: E402
from hybrid_asl.video import VideoError, clip_window, read_clip_frames  # noqa: E402


def parts_detected(a):
    """(T, 3) bool: left hand, right hand, pose present in each frame."""
    return np.stack([(a[:, s] != 0).any(1) for s in (slice(0, 63), slice(63, 126), slice(126, 162))], 1)


def make_videos_dir(tmp_path, names):
    d = tmp_path / "videos"
    d.mkdir()
    for name in names:
        src = next(VIDEOS.glob(f"*/{name}.mp4"))
        os.symlink(src, d / f"{name}.mp4")
    return d


# ---------------------------------------------------------------------------------------------------------------
# video reading: windows, sampling, bad files (no mediapipe needed)

def test_clip_window_converts_25fps_frames_and_clamps():
    assert clip_window(25.0, 1, 58) == (0, 58)        # 1-indexed inclusive -> 0-indexed [start, end)
    assert clip_window(25.0, 10, 30) == (9, 30)
    assert clip_window(30.0, 11, 35) == (12, 42)      # 0.4 s .. 1.4 s at 30 fps
    assert clip_window(30.0, 1, -1) == (0, None)      # -1 = to the end
    assert clip_window(30.0, None, None) == (0, None)


def test_read_clip_frames_window_sampling_and_clamping():
    full, fps = read_clip_frames(WLASL_RAW / "00335.mp4")
    assert fps == pytest.approx(25.0) and full.shape == (58, 240, 320, 3) and full.dtype == np.uint8
    part, _ = read_clip_frames(WLASL_RAW / "00335.mp4", 10, 30)
    np.testing.assert_array_equal(part, full[9:30])
    sampled, _ = read_clip_frames(WLASL_RAW / "00335.mp4", 10, 30, num_frames=5)
    np.testing.assert_array_equal(sampled, full[9:30][uniform_indices(21, 5)])
    # 00336 is 30 fps with 65 frames: end_frame 56 at 25 fps -> frame 68 at 30 fps -> clamped to 65
    clamped, fps = read_clip_frames(WLASL_RAW / "00336.mp4", 1, 56)
    assert fps == pytest.approx(30.0, abs=0.01) and len(clamped) == 65
    # 00338's header claims 72 frames, 71 decode: sampling must still come from the 71 real ones
    all71, _ = read_clip_frames(WLASL_RAW / "00338.mp4")
    assert len(all71) == 71
    s, _ = read_clip_frames(WLASL_RAW / "00338.mp4", num_frames=71)
    np.testing.assert_array_equal(s, all71)
    s, _ = read_clip_frames(WLASL_RAW / "00338.mp4", num_frames=16)
    np.testing.assert_array_equal(s, all71[uniform_indices(71, 16)])


def test_bad_videos_raise_video_error(tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(os.urandom(4096))
    (tmp_path / "empty.mp4").write_bytes(b"")
    for path in (garbage, tmp_path / "empty.mp4", tmp_path / "absent.mp4"):
        with pytest.raises(VideoError):
            read_clip_frames(path)
    with pytest.raises(VideoError, match="starts at frame 500 .* has only 58 frames"):  # window past the end
        read_clip_frames(WLASL_RAW / "00335.mp4", 500, 600)


def test_shards_are_disjoint_complete_and_balanced():
    jobs = [{"video_id": f"{i:05d}"} for i in np.random.default_rng(0).permutation(1001)]
    shards = [take_shard(jobs, i, 4) for i in range(4)]
    ids = [j["video_id"] for s in shards for j in s]
    assert len(ids) == len(set(ids)) == 1001
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    with pytest.raises(ValueError):
        extraction.parse_shard("4/4")


# ---------------------------------------------------------------------------------------------------------------
# MediaPipe extraction

import extract_landmarks  # noqa: E402  (imports mediapipe only when it runs)

needs_mediapipe = pytest.mark.skipif(importlib.util.find_spec("mediapipe") is None,
                                     reason="mediapipe not installed: pip install -r requirements-extract.txt")

# Measured on this project's machines: the output is bit-identical to the reference (max |diff| 0.0, masks
# equal). The tolerance leaves room for another CPU's float rounding, not for a different layout or model.
ATOL = 1e-4


@needs_mediapipe
def test_cli_matches_reference_reports_bad_videos_and_resumes(tmp_path):
    names = ["00335", "00336", "00338", "00339", "ambulancia_001"]  # both hands (ambulancia), 3 frame sizes
    videos = make_videos_dir(tmp_path, names)
    (videos / "corrupt.mp4").write_bytes(os.urandom(20000))
    (videos / "empty.webm").write_bytes(b"")
    out = tmp_path / "landmarks"
    meta = extract_landmarks.main(["--videos_dir", str(videos), "--output_dir", str(out), "--workers", "2",
                                   "--no_progress"])
    for name in names:
        got, ref = np.load(out / f"{name}_landmarks.npy"), np.load(REFERENCE / f"{name}.npy")
        assert got.dtype == np.float32 and got.shape == ref.shape
        mask_got, mask_ref = parts_detected(got), parts_detected(ref)
        assert (mask_got != mask_ref).sum(0).max() <= 1, f"{name}: detections differ from the reference"
        both = (got != 0) & (ref != 0)
        assert np.abs(got - ref)[both].max() <= ATOL, name
    assert mask_ref[:, 0].sum() == 66 and mask_ref[:, 1].sum() == 65  # ambulancia: both hands really tested

    assert meta["counts"] == {"clips": 7, "extracted": 5, "skipped_existing": 0, "missing": 0, "refused": 0, "failed": 2, "with_notes": 0,
                              "frames_extracted": 58 + 65 + 71 + 60 + 66, "outputs_present": 5}
    assert {f["video_id"] for f in meta["failed"]} == {"corrupt", "empty"}
    assert all(f["reason"] for f in meta["failed"])
    on_disk = json.loads((out / "extraction_metadata.json").read_text())
    assert on_disk["counts"] == meta["counts"] and on_disk["versions"]["mediapipe"] == "0.10.21"
    assert not list(out.glob("*.tmp"))

    # resume: nothing is recomputed, the files are untouched
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*_landmarks.npy")}
    again = extract_landmarks.main(["--videos_dir", str(videos), "--output_dir", str(out), "--no_progress"])
    assert again["counts"]["skipped_existing"] == 5 and again["counts"]["extracted"] == 0
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*_landmarks.npy")} == stamps


@needs_mediapipe
def test_split_window_num_frames_and_missing_ids(tmp_path, capsys):
    videos = make_videos_dir(tmp_path, ["00335", "00336"])
    split = {"00335": {"subset": "test", "action": [1283, 10, 30]},
             "00336": {"subset": "train", "action": [1283, 1, 56]},
             "99999": {"subset": "train", "action": [1283, 1, -1]}}
    (tmp_path / "split.json").write_text(json.dumps(split))
    out = tmp_path / "lm"
    meta = extract_landmarks.main(["--videos_dir", str(videos), "--subset", str(tmp_path / "split.json"),
                                   "--output_dir", str(out), "--num_frames", "4", "--no_progress"])
    assert np.load(out / "00335_landmarks.npy").shape == (4, 162)
    assert np.load(out / "00336_landmarks.npy").shape == (4, 162)
    # an absent video is counted and listed as missing, not as a failure, and gets no warning of its own
    assert meta["counts"]["missing"] == 1 and meta["counts"]["failed"] == 0 and meta["failed"] == []
    assert meta["missing"] == ["99999"]
    assert json.loads((out / "extraction_metadata.json").read_text())["missing"] == ["99999"]
    printed = capsys.readouterr()
    assert "99999" not in printed.err
    assert f"missing 1 (no video or .pose file with that id, e.g. 99999; all listed in {out}" in printed.out
    assert "failed 0" in printed.out


@needs_mediapipe
def test_real_split_with_few_videos_reports_missing_in_one_line(tmp_path):
    """The user's case: nslt_2000 (21,095 clips) with only a few of its videos on disk. The absent ones are
    counted as missing in the summary, listed in the metadata and not warned one by one; a corrupt video still
    gets its named warning and counts as failed. 00333 is the first absent id of the split."""
    split = json.loads((WLASL / "nslt_2000.json").read_text())
    present = ["00335", "00336", "00338", "00339"]
    videos = make_videos_dir(tmp_path, present)
    (videos / "00295.mp4").write_bytes(os.urandom(20000))  # an id of the split, unreadable
    out = tmp_path / "lm"
    r = subprocess.run([sys.executable, str(ROOT / "extract_landmarks.py"), "--videos_dir", str(videos),
                        "--data_dir", str(WLASL), "--subset", "nslt_2000.json", "--output_dir", str(out),
                        "--num_frames", "2", "--no_progress"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    n_missing = len(split) - 5
    # stderr holds that one warning and nothing else: no line per absent video, no MediaPipe chatter per clip
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: 00295 skipped: cannot open video"), lines[:5]
    summary = r.stdout.strip().splitlines()[-1]
    assert summary.startswith("extracted 4 clips (8 frames), skipped 0 existing, "
                              f"missing {n_missing} (no video or .pose file with that id, e.g. 00333, 00337, ")
    assert f"all listed in {out / 'extraction_metadata.json'}), refused 0, failed 1;" in summary

    meta = json.loads((out / "extraction_metadata.json").read_text())
    assert meta["counts"]["missing"] == n_missing and meta["counts"]["failed"] == 1
    assert meta["counts"]["extracted"] == meta["counts"]["outputs_present"] == 4
    assert meta["missing"] == sorted(set(split) - set(present) - {"00295"})
    assert [f["video_id"] for f in meta["failed"]] == ["00295"]


@needs_mediapipe
def test_shards_merge_into_one_metadata_file(tmp_path):
    names = ["00335", "00336", "00338", "00339"]
    videos = make_videos_dir(tmp_path, names)
    split = {v: {"subset": "train", "action": [1283, 1, -1]} for v in names + ["99998", "99999"]}  # 2 absent
    (tmp_path / "split.json").write_text(json.dumps(split))
    out = tmp_path / "lm"
    common = ["--videos_dir", str(videos), "--subset", str(tmp_path / "split.json"), "--output_dir", str(out),
              "--num_frames", "2", "--no_progress"]
    first = extract_landmarks.main(common + ["--shard", "1/2"])
    assert not (out / "extraction_metadata.json").exists()  # shard 0 has not run yet
    second = extract_landmarks.main(common + ["--shard", "0/2"])
    assert first["counts"]["clips"] == second["counts"]["clips"] == 3
    assert first["missing"] == ["99999"] and second["missing"] == ["99998"]
    assert sorted(p.name for p in out.glob("*_landmarks.npy")) == [f"{v}_landmarks.npy" for v in names]
    merged = json.loads((out / "extraction_metadata.json").read_text())
    assert merged["counts"]["clips"] == 6 and merged["counts"]["extracted"] == 4
    assert merged["counts"]["outputs_present"] == 4 and merged["counts"]["failed"] == 0
    assert merged["counts"]["missing"] == 2 and merged["missing"] == ["99998", "99999"]


@needs_mediapipe
def test_pose_files_convert_to_162_layout(tmp_path):
    pytest.importorskip("pose_format")
    from pose_format import Pose
    for name, frames in (("mediapipe", 170), ("mediapipe_long", 278)):
        got = pose_file_landmarks(str(POSES / f"{name}.pose"))
        assert got.shape == (frames, 162) and got.dtype == np.float32
        pose = Pose.read((POSES / f"{name}.pose").read_bytes())
        data, mask = np.ma.getdata(pose.body.data)[:, 0], np.ma.getmaskarray(pose.body.data)[:, 0, :, 0]
        rh = 8 + 128 + 21  # offset of RIGHT_HAND_LANDMARKS in this reduced holistic layout
        detected = ~mask[:, rh:rh + 21].all(1)
        assert (parts_detected(got)[:, 1] == detected).all() and detected.sum() > 100
        assert not parts_detected(got)[:, 0].any()  # these files never see a left hand
        t = int(np.argmax(detected))
        np.testing.assert_allclose(got[t, 63:65], data[t, rh, :2] / [1250, 1250], rtol=1e-6)
        # pose 11..16 (shoulders, elbows, wrists) exist in the file, 17..22 (pinkies, index, thumbs) do not
        pose_pts = got[:, 126:].reshape(-1, 12, 3)
        assert (pose_pts[:, :6] != 0).any(-1).all() and not pose_pts[:, 6:].any()
        np.testing.assert_allclose(pose_pts[0, 0, :2], data[0, 0, :2] / 1250, rtol=1e-6)  # LEFT_SHOULDER
        assert 0 < got[:, 126:128].max() < 1.5
    windowed = pose_file_landmarks(str(POSES / "mediapipe.pose"), 10, 50, num_frames=8)
    assert windowed.shape == (8, 162)
    with pytest.raises(ValueError, match="not in MediaPipe Holistic layout"):
        pose_file_landmarks(str(POSES / "openpose.pose"))

    # through the CLI: the OpenPose file is listed as failed with the reason, the others converted
    poses = tmp_path / "poses"
    poses.mkdir()
    for name in ("mediapipe", "openpose"):
        os.symlink(POSES / f"{name}.pose", poses / f"{name}.pose")
    meta = extract_landmarks.main(["--poses_dir", str(poses), "--output_dir", str(tmp_path / "o"), "--no_progress"])
    assert meta["counts"]["extracted"] == 1 and np.load(tmp_path / "o" / "mediapipe_landmarks.npy").shape == (170, 162)
    assert [f["video_id"] for f in meta["failed"]] == ["openpose"]
    assert "MediaPipe Holistic layout" in meta["failed"][0]["reason"]


@needs_mediapipe
def test_cli_errors_are_one_line(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "extract_landmarks.py"), "--videos_dir", str(WLASL_RAW),
                        "--output_dir", str(tmp_path), "--shard", "2/2"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().startswith("error: --shard") and len(r.stderr.strip().splitlines()) == 1
