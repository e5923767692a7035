"""The defaults Protocols 4, 8 and 11 adopted (BENCHMARKS.md): landmark frames independent of the visual frames, a
training length in optimizer steps for small splits (explicit --epochs wins), strong augmentation, hand-shape and
hand-frame channels, left-handed clips mirrored and an ensemble of 3 for landmarks alone; and runs saved before these
flags resume as they were trained."""
import json
import subprocess
import sys

import pytest
import torch

from helpers import ROOT, one_error_line, train_main, train_script
from test_nslt1000_fixes import make_wlasl_layout

TINY = ["--hidden_dim", "32", "--num_heads", "4", "--num_layers", "1", "--batch_size", "8", "--warmup_epochs", "0",
        "--device", "cpu", "--no_compile"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    # 2 classes x 4 train clips = 8 clips: one optimizer step per epoch at --batch_size 8
    return make_wlasl_layout(tmp_path_factory.mktemp("recipe"), num_classes=2, clips_per_class=(4, 1, 1))


def run_args(run_dir):
    return json.loads((run_dir / "args.json").read_text())


def test_training_epochs_in_steps_and_explicit_epochs_win():
    epochs = train_script()["training_epochs"]
    default = train_script()["DEFAULT_EPOCHS"]

    def args(epochs=None, min_steps=4000, batch_size=32):
        return type("Args", (), dict(epochs=epochs, min_steps=min_steps, batch_size=batch_size))
    assert epochs(args(), 560) == 223                 # 18 steps per epoch: ceil(4000 / 18)
    assert epochs(args(), 14296) == default           # nslt_2000's 447 steps per epoch: the default epochs already
    assert epochs(args(epochs=7), 560) == 7           # given explicitly, it wins
    assert epochs(args(min_steps=0), 10) == default   # 0 = always the default epochs
    assert epochs(args(batch_size=8), 1) == 4000      # one step per epoch


def test_landmarks_keep_more_frames_and_stronger_augmentation_than_the_visual_streams(data, tmp_path):
    data_dir, subset = data
    common = ["--data_dir", data_dir, "--subset", subset, "--epochs", "1", *TINY]
    assert train_main([*common, "--modality", "landmarks", "--output_dir", tmp_path / "lm"]) == 0
    assert train_main([*common, "--modality", "hybrid", "--output_dir", tmp_path / "hy"]) == 0
    assert train_main([*common, "--modality", "landmarks", "--num_frames", "24", "--output_dir", tmp_path / "nf"]) == 0
    assert train_main([*common, "--modality", "landmarks", "--landmark_frames", "12", "--augment", "none",
                       "--output_dir", tmp_path / "lf"]) == 0
    lm, hy, nf, lf = (run_args(tmp_path / name) for name in ("lm", "hy", "nf", "lf"))
    assert (lm["num_frames"], lm["landmark_frames"], lm["augment"]) == (64, 64, "strong")
    assert (hy["num_frames"], hy["landmark_frames"], hy["augment"]) == (16, 16, "light")
    assert (nf["num_frames"], nf["landmark_frames"]) == (24, 24)  # --num_frames given: the landmark stream follows
    assert (lf["num_frames"], lf["augment"]) == (12, "none")
    flags = ("ensemble", "hand_shape", "hand_frame", "mirror_left_handed")
    assert [lm[k] for k in flags] == [3, True, True, True] and [hy[k] for k in flags] == [1, False, False, False]
    # the model is built for the frames and channels kept: its checkpoint records them
    landmarks_only, hybrid = (torch.load(tmp_path / name / "best.pt", weights_only=True) for name in ("lm", "hy"))
    assert landmarks_only["args"]["num_frames"] == 64
    assert landmarks_only["model_config"]["members"] == 3 and hybrid["model_config"]["members"] == 1
    prepare = landmarks_only["landmark_normalization"]
    assert prepare["hand_shape"] and prepare["hand_frame"] and prepare["mirror_left_handed"]
    assert landmarks_only["model_config"]["landmark_dim"] == prepare["mean"].numel() == 453 + 50 + 138
    assert not any(hybrid["landmark_normalization"][k] for k in ("hand_shape", "hand_frame", "mirror_left_handed"))
    assert hybrid["model_config"]["landmark_dim"] == 453
    log = (tmp_path / "lm" / "train.log").read_text()   # the run says what it does with the landmarks
    assert "landmarks: 641 channels per frame (shoulder-normalized, standardized, hand shapes, hand frames); " \
           "left-handed clips mirrored: " in log and ", an ensemble of 3) on cpu" in log
    assert "mirrored" not in (tmp_path / "hy" / "train.log").read_text()


def test_each_landmark_default_can_be_turned_off(data, tmp_path):
    data_dir, subset = data
    out = tmp_path / "off"
    assert train_main(["--data_dir", data_dir, "--subset", subset, "--modality", "landmarks", "--epochs", "1",
                       "--no_hand_frame", "--no_mirror_left_handed", *TINY, "--output_dir", out]) == 0
    args = run_args(out)
    assert (args["hand_shape"], args["hand_frame"], args["mirror_left_handed"]) == (True, False, False)
    prepare = torch.load(out / "best.pt", weights_only=True)["landmark_normalization"]
    assert prepare["mean"].numel() == 503 and not prepare["hand_frame"] and not prepare["mirror_left_handed"]
    assert "landmarks: 503 channels per frame (shoulder-normalized, standardized, hand shapes)\n" in \
        (out / "train.log").read_text()
    out = tmp_path / "raw"  # raw coordinates have no hand channels, and left-handed clips are still mirrored
    assert train_main(["--data_dir", data_dir, "--subset", subset, "--modality", "landmarks", "--epochs", "1",
                       "--no_landmark_norm", *TINY, "--output_dir", out]) == 0
    args = run_args(out)
    assert (args["hand_shape"], args["hand_frame"], args["mirror_left_handed"]) == (False, False, True)


def test_a_small_split_trains_enough_steps_unless_epochs_is_given(data, tmp_path):
    data_dir, subset = data
    common = ["--data_dir", data_dir, "--subset", subset, "--modality", "landmarks", *TINY]
    out = tmp_path / "steps"
    assert train_main([*common, "--min_steps", "60", "--output_dir", out]) == 0
    assert run_args(out)["epochs"] == 60  # 8 clips at batch 8: one step per epoch, 60 steps
    assert len((out / "summary.csv").read_text().splitlines()) == 1 + 60
    assert "epochs: 60 (8 training clips: at least --min_steps 60" in (out / "train.log").read_text()
    out = tmp_path / "explicit"
    assert train_main([*common, "--min_steps", "60", "--epochs", "2", "--output_dir", out]) == 0
    assert run_args(out)["epochs"] == 2


def test_hybrid_refuses_landmark_frames_unlike_num_frames(data, tmp_path):
    data_dir, subset = data
    r = subprocess.run([sys.executable, str(ROOT / "train_simple.py"), "--data_dir", str(data_dir), "--subset",
                        subset, "--modality", "hybrid", "--landmark_frames", "32", *TINY,
                        "--output_dir", str(tmp_path / "x")], capture_output=True, text=True, cwd=tmp_path)
    line = one_error_line(r, 2, "--landmark_frames 32", "--num_frames 16", "--modality landmarks")
    assert "one to one" in line
    assert not (tmp_path / "x").exists()


def test_a_run_saved_before_these_flags_resumes_as_it_was_trained(data, tmp_path):
    """A last.pt of an older version has no landmark_frames, min_steps, ensemble, hand_shape, hand_frame or
    mirror_left_handed, and a modality-dependent augment: it resumes with its own frames, epochs, preset, one model,
    its 453 channels and no mirroring, not today's defaults."""
    data_dir, subset = data
    out = tmp_path / "old"
    assert train_main(["--data_dir", data_dir, "--subset", subset, "--modality", "landmarks", "--num_frames", "16",
                       "--augment", "light", "--epochs", "1", "--ensemble", "1", "--no_hand_shape", "--no_hand_frame",
                       "--no_mirror_left_handed", *TINY,
                       "--output_dir", out]) == 0
    checkpoint = torch.load(out / "last.pt", weights_only=True)
    del checkpoint["model_config"]["members"]
    for key in ("hand_shape", "hand_frame", "mirror_left_handed"):
        del checkpoint["landmark_normalization"][key]
    for key in ("landmark_frames", "min_steps", "ensemble", "hand_shape", "hand_frame", "mirror_left_handed"):
        del checkpoint["args"][key]
    torch.save(checkpoint, out / "last.pt")
    assert train_main(["--resume", out / "last.pt", "--epochs", "2"]) == 0
    resumed = run_args(out)
    assert (resumed["num_frames"], resumed["landmark_frames"], resumed["min_steps"]) == (16, 16, 0)
    assert resumed["augment"] == "light" and resumed["epochs"] == 2
    assert [resumed[k] for k in ("ensemble", "hand_shape", "hand_frame", "mirror_left_handed")] == [1, False, False, False]
    assert len((out / "summary.csv").read_text().splitlines()) == 1 + 2
