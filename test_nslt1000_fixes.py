"""
Pre-flight checks for the nslt_1000 fixes: run before a long training run.

    python test_nslt1000_fixes.py                                             # the fixes, on generated data
    python test_nslt1000_fixes.py --data_dir data/wlasl --subset nslt_1000.json   # ... and your own data
    python -m pytest test_nslt1000_fixes.py                                   # the same checks under pytest

Each check prints one line; the last line is `N passed, N failed` and the exit code is 1 if any failed.
Checks: class weights, feature dimension verification, the warmup + cosine schedule, sinusoidal positional
encoding, model capacity (100 vs 1000 classes), and an integration run (real optimisation on generated
WLASL-layout data: the loss must fall). With --data_dir/--subset it also checks that your files are present,
their shapes and widths agree, and how many clips each split will use.
"""
import argparse
import contextlib
import io
import json
import math
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

import numpy as np
import torch

from hybrid_asl.cli import HelpFormatter
from hybrid_asl.clips import LANDMARK_DIM
from hybrid_asl.errors import DataError
from hybrid_asl.files import quote
from hybrid_asl.packing import pack_split
from hybrid_asl.recipe import compute_class_weights, get_cosine_schedule_with_warmup, verify_feature_dimensions
from hybrid_asl.splits import SPLIT_HINT, SUBSETS, data_paths, load_split
from hybrid_asl_model import LandmarkEncoder, SinusoidalPositionalEncoding as FullModelPE
from hybrid_asl_model_simple import SimpleHybridASLModel, SinusoidalPositionalEncoding

ROOT = Path(__file__).resolve().parent


def make_wlasl_layout(root, num_classes=4, clips_per_class=(8, 3, 3), gemma_dim=32, seed=0, class_ids=None):
    """Writes a small dataset in the WLASL layout with a class-dependent signal in both streams.

    Returns (data_dir, split file name). Class ids are spread out (non-contiguous), like real WLASL ids.
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / "gemma_features").mkdir(parents=True, exist_ok=True)
    (root / "landmarks").mkdir(parents=True, exist_ok=True)
    class_ids = class_ids or [7 * c + 3 for c in range(num_classes)]
    split, n = {}, 0
    for c, class_id in enumerate(class_ids):
        direction = rng.standard_normal(2)
        prototype = rng.standard_normal(gemma_dim)
        for subset, count in zip(SUBSETS, clips_per_class):
            for _ in range(count):
                video_id = f"{10000 + n:05d}"
                n += 1
                frames = int(rng.integers(10, 30))
                t = np.linspace(0, 1, frames)[:, None]
                landmarks = 0.5 + 0.02 * rng.standard_normal((frames, LANDMARK_DIM))
                landmarks[:, 0:126:3] += 0.2 * t * direction[0]  # both hands move in a class-specific direction
                landmarks[:, 1:126:3] += 0.2 * t * direction[1]
                features = prototype + 0.8 * rng.standard_normal((16, gemma_dim))
                np.save(root / "landmarks" / f"{video_id}_landmarks.npy", landmarks.astype(np.float32))
                np.save(root / "gemma_features" / f"{video_id}_gemma.npy", features.astype(np.float32))
                split[video_id] = {"subset": subset, "action": [class_id, 1, frames]}
    (root / "nslt_test.json").write_text(json.dumps(split))
    (root / "wlasl_class_list.txt").write_text("".join(f"{c}\tgloss{c}\n" for c in class_ids))
    return root, "nslt_test.json"


# ----------------------------------------------------------------------------------------------------------------
# The checks (pytest collects them; main() runs them as a script)

def test_class_weights():
    labels = np.array([0] * 50 + [1] * 10 + [2] * 5)  # class 3 has no sample at all
    weights = compute_class_weights(labels, num_classes=4)
    assert weights.dtype == torch.float32 and weights.shape == (4,)
    assert torch.isfinite(weights).all(), "a class with no sample must still get a finite weight"
    assert weights[0] < weights[1] < weights[2] <= weights[3], "rarer classes must weigh more"
    assert weights.min() >= 0.1 and weights.max() <= 10.0, "weights are clipped to [0.1, 10]"
    common = compute_class_weights(np.array([0] * 100000 + [1]), num_classes=2)
    assert math.isclose(common[0].item(), 0.1, rel_tol=1e-6), "a very common class is clipped up to 0.1"
    rare = compute_class_weights(np.repeat(np.arange(19), 1000), num_classes=20)
    assert math.isclose(rare[19].item(), 10.0, rel_tol=1e-6), "an unseen class among common ones is clipped to 10"
    balanced = compute_class_weights(np.repeat(np.arange(5), 7), num_classes=5)
    assert torch.allclose(balanced, torch.ones(5)), "a balanced split gives weight 1 to every class"


def test_feature_dimension_verification():
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for i in range(3):
            np.save(tmp / f"{i:05d}_gemma.npy", np.zeros((16, 1152), np.float32))
        np.save(tmp / "99999_gemma.npy", np.zeros((16, 2560), np.float32))  # one file from another extractor
        log = io.StringIO()
        with contextlib.redirect_stdout(log):
            detected = verify_feature_dimensions(tmp, expected_dim=2560)
        assert detected == 1152, f"expected the majority width 1152, got {detected}"
        assert "mismatch" in log.getvalue(), "a mismatch must be reported"
        assert "99999_gemma.npy" in log.getvalue(), "the file that disagrees must be named"
        with contextlib.redirect_stdout(io.StringIO()) as quiet:
            assert verify_feature_dimensions(tmp, expected_dim=1152) == 1152
        assert "mismatch" not in quiet.getvalue()


def test_warmup_schedule():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=1.0)
    scheduler = get_cosine_schedule_with_warmup(optimizer, warmup_epochs=2, total_epochs=10,
                                                             steps_per_epoch=5)
    lrs = []
    for _ in range(50):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    warmup = lrs[:10]
    assert all(b > a for a, b in zip(warmup, warmup[1:])), "warmup must rise linearly, batch by batch"
    assert np.allclose(np.diff(warmup), warmup[1] - warmup[0]), "warmup must be linear"
    assert math.isclose(max(lrs), 1.0) and lrs.index(max(lrs)) == 9, "peak lr at the end of warmup"
    decay = lrs[10:]
    assert all(b < a for a, b in zip(decay, decay[1:])), "cosine decay must fall every batch, not every epoch"
    assert lrs[-1] < 0.01, "cosine decays to ~0 by the last step"
    middle = 10 + 20  # half-way through the cosine phase the factor is 0.5
    assert math.isclose(lrs[middle], 0.5, abs_tol=1e-6)


def test_sinusoidal_encoding():
    assert SinusoidalPositionalEncoding is FullModelPE, "one definition, importable from both model files"
    d_model, max_len = 64, 100
    encoding = SinusoidalPositionalEncoding(d_model, max_len, dropout=0.0)
    pe = encoding.pe
    assert pe.shape == (1, max_len, d_model)
    pos, i = 7, 5
    assert math.isclose(pe[0, pos, 2 * i].item(), math.sin(pos / 10000 ** (2 * i / d_model)), abs_tol=1e-6)
    assert math.isclose(pe[0, pos, 2 * i + 1].item(), math.cos(pos / 10000 ** (2 * i / d_model)), abs_tol=1e-6)
    x = torch.zeros(2, 10, d_model)
    assert torch.allclose(encoding(x), pe[:, :10].expand(2, -1, -1)), "forward adds the encoding"
    assert "pe" in dict(encoding.named_buffers()) and not list(encoding.parameters()), "a fixed buffer, not learned"
    encoder = LandmarkEncoder(input_dim=162, hidden_dim=64, num_heads=4, use_sinusoidal_pos=True)
    assert encoder(torch.randn(3, 16, 162)).shape == (3, 64)
    legacy = LandmarkEncoder(input_dim=162, hidden_dim=64, num_heads=4, use_sinusoidal_pos=False)
    assert any(n.endswith("pos_encoding.pe") for n, _ in legacy.named_parameters()), "legacy encoding is learned"


def test_model_capacity():
    def linear_layers(model):
        return [m for m in model.classifier if isinstance(m, torch.nn.Linear)]

    small = SimpleHybridASLModel(num_classes=100, gemma_feature_dim=2560, hidden_dim=512, dropout=0.5)
    large = SimpleHybridASLModel(num_classes=1000, gemma_feature_dim=2560, hidden_dim=512, dropout=0.5)
    assert len(linear_layers(small)) == 2 and len(linear_layers(large)) == 3
    assert linear_layers(large)[0].out_features == 1024, "intermediate width is hidden_dim * 2 above 500 classes"
    n_small = sum(p.numel() for p in small.parameters())
    n_large = sum(p.numel() for p in large.parameters())
    assert 12e6 < n_small < 20e6 and n_small < n_large < 22e6, (n_small, n_large)
    final = linear_layers(large)[-1].weight
    bound = 0.1 * math.sqrt(6 / (final.shape[0] + final.shape[1]))  # xavier_uniform with gain 0.1
    assert final.abs().max() <= bound + 1e-7 and final.abs().max() > 0.5 * bound
    logits = large(torch.randn(2, 16, 2560), torch.randn(2, 16, 162))
    assert logits.shape == (2, 1000) and torch.isfinite(logits).all()


def test_integration():
    """Real optimisation through `python train_simple.py` on generated WLASL-layout data: the training loss falls."""
    with tempfile.TemporaryDirectory() as tmp:
        data_dir, subset = make_wlasl_layout(Path(tmp) / "data")
        out = Path(tmp) / "run"
        run = subprocess.run([sys.executable, str(ROOT / "train_simple.py"), "--data_dir", str(data_dir), "--subset",
                              subset, "--epochs", "8", "--hidden_dim", "32", "--num_heads", "4", "--batch_size", "8",
                              "--lr", "3e-3", "--warmup_epochs", "1", "--dropout", "0.1", "--use_class_weights",
                              "--output_dir", str(out), "--device", "cpu"], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr[-2000:]
        rows = (out / "summary.csv").read_text().splitlines()[1:]
        losses = [float(row.split(",")[1]) for row in rows]
        assert len(losses) == 8 and losses[-1] < 0.8 * losses[0], f"training loss did not fall: {losses}"
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["num_classes"] == 4 and metrics["test"]["n"] == 12


# ----------------------------------------------------------------------------------------------------------------
# The user's own data

class DataCheckFailed(DataError):
    """What stops a run on the user's data, and the command that would pass (or the step that makes it pass)."""

    def __init__(self, message, next_step):
        super().__init__(message)
        self.next_step = next_step


def check_command(data_dir, subset, modality):
    return (f"python test_nslt1000_fixes.py --data_dir {quote(data_dir)} --subset {quote(subset)}"
            + (f" --modality {modality}" if modality != "hybrid" else ""))


def check_user_data(data_dir, subset, modality="hybrid", num_frames=16):
    """-> (lines describing the data, number of clips whose files exist but are unusable). Raises DataCheckFailed
    on what would stop a run, with the next command to run. Absent files are normal (users have part of WLASL);
    unusable ones deserve a look."""
    flags = argparse.Namespace(data_dir=data_dir, subset=subset, gemma_features_dir=None, landmarks_dir=None,
                               cache_dir=None, no_cache=True)
    data_dir, split_path, gemma_dir, landmarks_dir, _ = data_paths(flags)  # as training finds them
    try:
        clips = load_split(split_path, hint=SPLIT_HINT)
    except DataError as e:
        present = sorted(p.name for p in Path(data_dir).glob("nslt_*.json")) if Path(data_dir).is_dir() else []
        raise DataCheckFailed(str(e), check_command(data_dir, present[0], modality) if present else
                              "put the split files (nslt_*.json) in a folder and pass it as --data_dir")
    lines = [f"{split_path}: {len(clips)} clips, {len({c.class_id for c in clips.values()})} classes"]
    folders = {"gemma": gemma_dir, "landmarks": landmarks_dir}
    for stream, folder in folders.items():
        if modality in ("hybrid", stream) and not folder.is_dir():
            other = "landmarks" if stream == "gemma" else "gemma"
            step = (check_command(data_dir, subset, other) if folders[other].is_dir() else
                    f"python {'extract_gemma_features.py' if stream == 'gemma' else 'extract_landmarks.py'} "
                    f"--videos_dir VIDEOS --data_dir {quote(data_dir)} --subset {quote(subset)}, then "
                    f"{check_command(data_dir, subset, modality)}")
            raise DataCheckFailed(f"{folder} not found: extract the {stream} files first (README 'Preparing WLASL'), "
                                  f"or check the other stream alone with --modality {other}", step)
    gemma_dim = None
    if modality != "landmarks":
        with contextlib.redirect_stdout(io.StringIO()) as log:
            gemma_dim = verify_feature_dimensions(gemma_dir, None)
        lines += [f"Gemma features: {gemma_dim}-wide"] + log.getvalue().splitlines()
    label_of = {c: i for i, c in enumerate(sorted({c.class_id for c in clips.values()}))}
    unusable = 0
    for name in SUBSETS:
        chosen = [c for c in clips.values() if c.subset == name]
        split = pack_split(name, chosen, label_of, gemma_dir, landmarks_dir, modality, num_frames, gemma_dim,
                           show_progress=False)
        lines.append(split.report())
        unusable += sum(n for reason, n in split.skipped.items() if reason != "missing")
        if len(split) == 0:
            usable = [m for m in ("landmarks", "gemma") if m != modality and folders[m].is_dir()
                      and any(folders[m].glob("*.npy"))]
            raise DataCheckFailed(f"no usable {name} clip: check {gemma_dir} and {landmarks_dir}",
                                  check_command(data_dir, subset, usable[0]) if usable and modality == "hybrid" else
                                  f"extract the clips of {split_path.name} (README 'Preparing WLASL'), then "
                                  f"{check_command(data_dir, subset, modality)}")
    return lines, unusable


CHECKS = [test_class_weights, test_feature_dimension_verification, test_warmup_schedule, test_sinusoidal_encoding,
          test_model_capacity, test_integration]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--data_dir", help="also check this WLASL data folder (default data/wlasl with --subset)")
    parser.add_argument("--subset", help="split file to check, in --data_dir or a path (default nslt_1000.json)")
    parser.add_argument("--modality", default="hybrid", choices=("hybrid", "landmarks", "gemma"),
                        help="which streams the run will use")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    passed = failed = 0
    for check in CHECKS:
        try:
            check()
            print(f"PASS  {check.__name__}")
            passed += 1
        except Exception as e:
            print(f"FAIL  {check.__name__}: {type(e).__name__}: {e}")
            if not isinstance(e, AssertionError):
                traceback.print_exc()
            failed += 1
    if args.data_dir or args.subset:
        try:
            lines, unusable = check_user_data(args.data_dir or "data/wlasl", args.subset or "nslt_1000.json",
                                              args.modality)
            for line in lines:
                print(f"      {line}")
            print("PASS  your data" + (f" ({unusable} clips have unusable files and will be skipped: see the "
                                       "'skipped' counts above; re-extract them)" if unusable else ""))
            passed += 1
        except DataCheckFailed as e:
            print(f"FAIL  your data: {e}")
            print(f"      next: {e.next_step}")
            failed += 1
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
