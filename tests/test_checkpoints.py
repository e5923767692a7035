"""Checkpoints carry what inference needs, and say which model they hold: the positional encoding is read from the
weights (learned or sinusoidal), whatever the saved flags claim; a clip reads the same from arrays as from files."""
import json

import numpy as np
import pytest
import torch

import evaluate
from helpers import train_run
from hybrid_asl.checkpoint import learned_positions, load_checkpoint, model_from_checkpoint
from hybrid_asl.clips import LANDMARK_DIM, check_array, load_clip, sample_clip
from hybrid_asl.splits import load_split
from test_nslt1000_fixes import make_wlasl_layout

TINY = ["--hidden_dim", "16", "--num_heads", "2", "--batch_size", "8", "--device", "cpu", "--warmup_epochs", "1",
        "--epochs", "2"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny hybrid runs on the same data: sinusoidal (the default) and learned (--legacy_pos_encoding)."""
    root = tmp_path_factory.mktemp("pe")
    data_dir, subset = make_wlasl_layout(root / "data")
    out = {}
    for name, flags in (("sinusoidal", []), ("learned", ["--legacy_pos_encoding"])):
        out[name] = root / name
        assert train_run(["--data_dir", data_dir, "--subset", subset, *TINY, *flags, "--output_dir", out[name]]) == 0
    return data_dir, subset, out


def with_wrong_flag(run_dir, tmp_path):
    """A copy of the run's best.pt whose saved settings claim the other positional encoding."""
    checkpoint = torch.load(run_dir / "best.pt", weights_only=True)
    checkpoint["model_config"]["use_sinusoidal_pos"] = not checkpoint["model_config"]["use_sinusoidal_pos"]
    checkpoint["args"]["legacy_pos_encoding"] = not checkpoint["args"]["legacy_pos_encoding"]
    path = tmp_path / run_dir.name / "best.pt"
    path.parent.mkdir(parents=True)
    torch.save(checkpoint, path)
    return path


@pytest.mark.parametrize("name", ["sinusoidal", "learned"])
def test_the_positional_encoding_is_read_from_the_weights(runs, name, tmp_path, capsys):
    data_dir, subset, out = runs
    weights = load_checkpoint(out[name] / "best.pt")["model"]
    assert learned_positions(weights) is (name == "learned")
    model, _ = model_from_checkpoint(load_checkpoint(with_wrong_flag(out[name], tmp_path)), "x", torch.device("cpu"))
    encodings = [m for m in model.modules() if type(m).__name__.endswith("PositionalEncoding")]
    kinds = {type(m).__name__ for m in encodings}
    assert kinds == {"LearnedPositionalEncoding" if name == "learned" else "SinusoidalPositionalEncoding"}
    # evaluated through the CLI with the misleading flag, the run's own test metrics come back exactly
    assert evaluate.run(["--checkpoint", str(with_wrong_flag(out[name], tmp_path / "cli")), "--data_dir",
                         str(data_dir), "--subset", subset, "--output_dir", str(tmp_path / "eval"), "--no_plots",
                         "--device", "cpu"]) == 0
    recorded = json.loads((out[name] / "metrics.json").read_text())["test"]
    evaluated = json.loads((tmp_path / "eval" / "eval_test" / "metrics.json").read_text())["test"]
    assert evaluated["top1"] == recorded["top1"] and abs(evaluated["loss"] - recorded["loss"]) < 1e-6


def test_a_clip_reads_the_same_from_arrays_as_from_files(runs):
    """What predict.py does with arrays (no files, no symlinks) gives exactly what training packs from files."""
    data_dir, subset, _ = runs
    vid = next(iter(load_split(data_dir / subset)))
    from_files = load_clip(vid, data_dir / "gemma_features", data_dir / "landmarks", "hybrid", 16, 32)
    gemma = np.load(data_dir / "gemma_features" / f"{vid}_gemma.npy")
    landmarks = np.load(data_dir / "landmarks" / f"{vid}_landmarks.npy")
    from_arrays = sample_clip(check_array(gemma, "g", 32), check_array(landmarks, "l", LANDMARK_DIM), 16)
    for a, b in zip(from_files, from_arrays):
        assert np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b
