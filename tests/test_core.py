"""Core behaviour: the loader on real WLASL split files, masks, modalities, cache, resume and metrics."""
import csv
import json
import os
import shlex
import shutil
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import train_run, train_script
from hybrid_asl.batches import Batch, BatchLoader
from hybrid_asl.checkpoint import load_checkpoint, model_from_checkpoint
from hybrid_asl.clips import uniform_indices
from hybrid_asl.engine import EMA, make_train_step
from hybrid_asl.errors import DataError
from hybrid_asl.landmarks import LandmarkPreprocessor, channel_statistics
from hybrid_asl.packing import load_splits, pack_split
from hybrid_asl.splits import build_label_mapping, load_glosses, load_split
from hybrid_asl_model import FullHybridASLModel
from hybrid_asl_model_simple import SimpleHybridASLModel
from test_nslt1000_fixes import make_wlasl_layout

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
WLASL = SHARED / "data" / "wlasl"
needs_wlasl = pytest.mark.skipif(not (WLASL / "nslt_100.json").is_file(), reason="../shared/data/wlasl absent")
TINY = ["--hidden_dim", "32", "--num_heads", "4", "--batch_size", "8", "--device", "cpu", "--warmup_epochs", "1"]


def run_cli(*argv):
    return train_run(argv)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_wlasl_layout(tmp_path_factory.mktemp("wlasl"))


# ---------------------------------------------------------------------------------------------------------------
# Split files

@needs_wlasl
def test_real_nslt100_split_sizes_and_label_mapping():
    clips = load_split(WLASL / "nslt_100.json")
    counts = {s: sum(c.subset == s for c in clips.values()) for s in ("train", "val", "test")}
    assert counts == {"train": 1442, "val": 338, "test": 258}
    mapping = build_label_mapping(clips, load_glosses(WLASL))
    assert [m["index"] for m in mapping] == list(range(100))
    assert mapping[0] == {"index": 0, "wlasl_id": 0, "gloss": "book"}
    assert all(m["gloss"] != str(m["wlasl_id"]) for m in mapping), "every gloss comes from wlasl_class_list.txt"


@needs_wlasl
def test_real_nslt1000_with_most_files_missing(tmp_path):
    """Real users miss many videos: the loader uses what is there and says how many."""
    clips = load_split(WLASL / "nslt_1000.json")
    label_of = {m["wlasl_id"]: m["index"] for m in build_label_mapping(clips, {})}
    train = [c for c in clips.values() if c.subset == "train"]
    (tmp_path / "landmarks").mkdir()
    for clip in train[::10]:
        np.save(tmp_path / "landmarks" / f"{clip.video_id}_landmarks.npy", np.full((20, 162), 0.5, np.float32))
    split = pack_split("train", train, label_of, tmp_path / "g", tmp_path / "landmarks", "landmarks", 16,
                       show_progress=False)
    assert len(split) == len(train[::10]) and split.listed == 8978
    assert split.skipped == {"missing": 8978 - len(train[::10])}
    assert f"using {len(split)} of 8978 clips" in split.report() and train[1].video_id in split.report()


@pytest.mark.parametrize("content, expected", [
    ("{not json", "not valid JSON"),
    ('{"00001": {"action": [1, 1, 20]}}', "needs \"subset\" and \"action\""),
    ('{"00001": {"subset": "training", "action": [1, 1, 20]}}', "use one of train, val, test"),
    ('{"00001": {"subset": "train", "action": ["one", 1, 20]}}', "must be integers"),
])
def test_bad_split_files_are_named(tmp_path, content, expected):
    path = tmp_path / "nslt_bad.json"
    path.write_text(content)
    with pytest.raises(DataError, match=expected) as error:
        load_split(path)
    assert str(path) in str(error.value)


def test_missing_split_file_points_to_readme_and_demo(tmp_path, capsys):
    assert run_cli("--data_dir", tmp_path, "--subset", "nslt_100.json") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(tmp_path / "nslt_100.json") in err and "WLASL data layout" in err and "--demo" in err


# ---------------------------------------------------------------------------------------------------------------
# Clips, masks, cache

def test_uniform_sampling_and_padding(tmp_path):
    assert list(uniform_indices(32, 16)) == list(range(1, 32, 2))
    assert list(uniform_indices(5, 16)) == [0, 1, 2, 3, 4]
    data_dir, subset = make_wlasl_layout(tmp_path, num_classes=2, clips_per_class=(2, 1, 1))
    clips = load_split(data_dir / subset)
    label_of = {c: i for i, c in enumerate(sorted({c.class_id for c in clips.values()}))}
    lengths = {vid: len(np.load(data_dir / "landmarks" / f"{vid}_landmarks.npy")) for vid in clips}
    split = pack_split("train", [c for c in clips.values() if c.subset == "train"], label_of,
                       data_dir / "gemma_features", data_dir / "landmarks", "landmarks", num_frames=40,
                       show_progress=False)
    for row, vid in enumerate(split.video_ids):
        assert split.lengths[row] == lengths[vid]
        assert np.all(split.landmarks[row, lengths[vid]:] == 0), "padding frames are zeros"
    batch = next(BatchLoader(split, 4, "cpu").batches())
    assert isinstance(batch, Batch) and batch.gemma is None and batch.mask.sum(1).tolist() == split.lengths.tolist()


@pytest.mark.parametrize("model", [
    SimpleHybridASLModel(5, gemma_feature_dim=24, hidden_dim=32, num_heads=4, fusion_type="concat"),
    SimpleHybridASLModel(5, gemma_feature_dim=24, hidden_dim=32, num_heads=4, fusion_type="attention"),
    SimpleHybridASLModel(5, gemma_feature_dim=24, hidden_dim=32, num_heads=4, fusion_type="gated"),
    FullHybridASLModel(5, gemma_feature_dim=24, hidden_dim=32, num_heads=4),
], ids=["concat", "attention", "gated", "full"])
def test_padding_does_not_change_logits(model):
    """Attention and pooling honour the mask: a padded clip scores exactly like the unpadded one."""
    model.eval()
    torch.manual_seed(0)
    gemma, landmarks = torch.randn(1, 9, 24), torch.randn(1, 9, 162)
    padded_gemma = torch.cat([gemma, 100 * torch.randn(1, 7, 24)], 1)  # garbage in the padding must not leak
    padded_landmarks = torch.cat([landmarks, 100 * torch.randn(1, 7, 162)], 1)
    mask = torch.arange(16)[None] < 9
    with torch.no_grad():
        plain = model(gemma, landmarks)
        padded = model(padded_gemma, padded_landmarks, mask)
    assert torch.allclose(plain, padded, atol=1e-5)


def test_attention_fusion_really_attends_across_frames():
    """Changing one Gemma frame changes the fused landmark tokens (not a softmax over one pooled vector)."""
    model = SimpleHybridASLModel(5, gemma_feature_dim=24, hidden_dim=32, num_heads=4, fusion_type="attention")
    model.eval()
    mask = torch.ones(1, 8, dtype=torch.bool)
    landmark_tokens, gemma = torch.randn(1, 8, 32), torch.randn(1, 8, 32)
    changed = gemma.clone()
    changed[0, 3] += 5
    with torch.no_grad():
        a = model.landmark_to_gemma(landmark_tokens, mask, context=gemma, context_mask=mask)
        b = model.landmark_to_gemma(landmark_tokens, mask, context=changed, context_mask=mask)
    assert (a - b).abs().sum(-1).gt(1e-4).all(), "every landmark frame attends to the changed gemma frame"


def test_cache_is_reused_and_rebuilt_when_a_file_changes(data, tmp_path):
    data_dir, subset = data
    clips = load_split(data_dir / subset)
    label_of = {c: i for i, c in enumerate(sorted({c.class_id for c in clips.values()}))}
    args = (clips, label_of, data_dir / "gemma_features", data_dir / "landmarks", "hybrid", 16, 32)
    first = load_splits(*args, cache_dir=tmp_path, subset_name=subset, show_progress=False)
    assert isinstance(load_splits(*args, cache_dir=tmp_path, subset_name=subset)["train"].landmarks, np.memmap)
    plain = load_splits(*args, cache_dir=None, show_progress=False)
    for name in ("train", "val", "test"):
        cached_batches = list(BatchLoader(load_splits(*args, cache_dir=tmp_path, subset_name=subset)[name], 5,
                                          "cpu").batches(shuffle=True, seed=3))
        plain_batches = list(BatchLoader(plain[name], 5, "cpu").batches(shuffle=True, seed=3))
        for a, b in zip(cached_batches, plain_batches, strict=True):
            for x, y in zip(a, b):
                assert torch.equal(x, y), "the cached path serves exactly the batches of the plain path"
    # Change one landmark file: the train split is packed again, with the new values.
    vid = first["train"].video_ids[0]
    path = data_dir / "landmarks" / f"{vid}_landmarks.npy"
    original = np.load(path)
    np.save(path, np.full_like(original, 0.25))
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10**9))
    try:
        again = load_splits(*args, cache_dir=tmp_path, subset_name=subset, show_progress=False)["train"]
        assert np.all(again.landmarks[again.video_ids.index(vid), : len(original)] == 0.25)
    finally:
        np.save(path, original)


def test_nonfinite_landmarks_become_undetected_and_are_counted(tmp_path):
    data_dir, subset = make_wlasl_layout(tmp_path, num_classes=2, clips_per_class=(3, 1, 1))
    clips = load_split(data_dir / subset)
    vid = next(c.video_id for c in clips.values() if c.subset == "train")
    landmarks = np.load(data_dir / "landmarks" / f"{vid}_landmarks.npy")
    landmarks[2, :5] = np.nan
    landmarks[3, 7] = np.inf
    np.save(data_dir / "landmarks" / f"{vid}_landmarks.npy", landmarks)
    label_of = {c: i for i, c in enumerate(sorted({c.class_id for c in clips.values()}))}
    split = pack_split("train", [c for c in clips.values() if c.subset == "train"], label_of, None,
                       data_dir / "landmarks", "landmarks", 40, show_progress=False)
    row = split.video_ids.index(vid)
    assert np.isfinite(split.landmarks).all() and np.all(split.landmarks[row, 2, :5] == 0)
    assert split.nonfinite_landmark_clips == 1 and split.nonfinite_landmark_values == 6
    assert "6 NaN/inf landmark values in 1 clips" in split.report()


def test_weighted_smoothed_loss_matches_pytorch_mean():
    """The per-clip loss (used so padded rows can weigh 0) equals PyTorch's own weighted, smoothed mean."""
    logits, labels = torch.randn(6, 4), torch.tensor([0, 1, 1, 2, 3, 3])
    class_weights = torch.tensor([0.5, 1.0, 2.0, 3.0])
    expected = F.cross_entropy(logits, labels, weight=class_weights, label_smoothing=0.1)
    per_clip = F.cross_entropy(logits, labels, weight=class_weights, label_smoothing=0.1, reduction="none")
    assert torch.allclose(per_clip.sum() / class_weights[labels].sum(), expected)


# ---------------------------------------------------------------------------------------------------------------
# The command line: modalities, outputs, resume

@pytest.mark.parametrize("modality, folder", [("landmarks", "landmarks"), ("gemma", "gemma_features")])
def test_one_stream_needs_only_its_own_files(data, tmp_path, modality, folder):
    data_dir, subset = data
    one_stream = tmp_path / "data"
    shutil.copytree(data_dir / folder, one_stream / folder)
    shutil.copy(data_dir / subset, one_stream / subset)
    assert run_cli("--data_dir", one_stream, "--subset", subset, "--modality", modality, "--epochs", "1",
                   "--output_dir", tmp_path / "run", *TINY) == 0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]["n"] == 12


def test_landmark_channels_are_standardized_with_training_statistics(data, tmp_path):
    """The checkpoint carries the training split's channel mean/std beside the model (normalized channels only);
    --no_landmark_standardize and --no_landmark_norm leave the input as it is."""
    data_dir, subset = data
    common = ["--data_dir", data_dir, "--subset", subset, "--epochs", "1", *TINY]
    assert run_cli(*common, "--output_dir", tmp_path / "std") == 0
    checkpoint = load_checkpoint(tmp_path / "std" / "best.pt")
    label_of = {e["wlasl_id"]: e["index"] for e in checkpoint["label_mapping"]}
    train = load_splits(load_split(data_dir / subset), label_of, data_dir / "gemma_features", data_dir / "landmarks",
                        "hybrid", checkpoint["args"]["num_frames"], checkpoint["gemma_dim"], cache_dir=None)["train"]
    mean, std = channel_statistics(train.landmarks, train.lengths)
    state = checkpoint["landmark_normalization"]
    assert state["normalize"] and torch.allclose(state["mean"], mean) and torch.allclose(state["std"], std)
    assert not any("standardizer" in k for k in checkpoint["model"]), "statistics live beside the model, not in it"
    _, prepare = model_from_checkpoint(checkpoint, "best.pt", torch.device("cpu"))
    raw, mask = torch.rand(2, 5, 162), torch.ones(2, 5, dtype=torch.bool)
    assert torch.allclose(prepare(raw, mask), (LandmarkPreprocessor(True)(raw, mask) - mean) / std)
    for flag, normalize in (("--no_landmark_standardize", True), ("--no_landmark_norm", False)):
        out = tmp_path / flag.strip("-")
        assert run_cli(*common, flag, "--output_dir", out) == 0
        state = load_checkpoint(out / "best.pt")["landmark_normalization"]
        assert state == {"normalize": normalize, "mean": None, "std": None, "hand_shape": False,
                         "hand_frame": False, "mirror_left_handed": False}


def test_outputs_and_metrics_schema(data, tmp_path):
    data_dir, subset = data
    out = tmp_path / "run"
    assert run_cli("--data_dir", data_dir, "--subset", subset, "--epochs", "2", "--output_dir", out, *TINY) == 0
    for name in ("best.pt", "last.pt", "args.json", "label_mapping.json", "summary.csv", "metrics.json"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_classes"] == 4 and metrics["best_epoch"] in (1, 2)
    for split in ("val", "test"):
        assert {"top1", "top5", "per_class_top1", "per_class_top5", "loss", "n"} <= set(metrics[split])
        for key in ("top1", "top5", "per_class_top1", "per_class_top5"):
            assert 0.0 <= metrics[split][key] <= 1.0
        assert metrics[split]["top1"] <= metrics[split]["top5"]
    mapping = json.loads((out / "label_mapping.json").read_text())
    assert [m["wlasl_id"] for m in mapping] == [3, 10, 17, 24] and mapping[1]["gloss"] == "gloss10"
    checkpoint = torch.load(out / "best.pt", weights_only=True)
    assert checkpoint["epoch"] == metrics["best_epoch"] and checkpoint["label_mapping"] == mapping
    assert len((out / "summary.csv").read_text().splitlines()) == 3


def test_resume_finishes_like_an_uninterrupted_run(data, tmp_path, monkeypatch, capsys):
    """Ctrl-C after epoch 2 of 4, then --resume: the same final metrics as a run that was never stopped."""
    data_dir, subset = data
    common = ["--data_dir", data_dir, "--subset", subset, *TINY, "--seed", "7", "--epochs", "4"]
    assert run_cli(*common, "--output_dir", tmp_path / "full") == 0
    script = train_script()["train"].__globals__  # the script's namespace: patch what it calls
    real_write_summary, calls = script["write_summary"], []

    def interrupt_after_two_epochs(path, history):
        real_write_summary(path, history)
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
    monkeypatch.setitem(script, "write_summary", interrupt_after_two_epochs)
    assert run_cli(*common, "--output_dir", tmp_path / "part") == 130
    assert f"python train_simple.py --resume {tmp_path / 'part' / 'last.pt'}" in capsys.readouterr().out
    assert not (tmp_path / "part" / "metrics.json").exists()
    monkeypatch.setitem(script, "write_summary", real_write_summary)
    assert run_cli("--resume", tmp_path / "part" / "last.pt") == 0
    full = json.loads((tmp_path / "full" / "metrics.json").read_text())
    resumed = json.loads((tmp_path / "part" / "metrics.json").read_text())
    assert full == resumed, "resume on CPU with the same seed must give identical metrics"

    def rows_without_timing(run):
        rows = list(csv.DictReader(open(tmp_path / run / "summary.csv")))
        return [{k: v for k, v in row.items() if not k.endswith("seconds")} for row in rows]
    assert rows_without_timing("full") == rows_without_timing("part")


def test_classifier_with_ema_and_full_model_train(data, tmp_path):
    data_dir, subset = data
    assert run_cli("--data_dir", data_dir, "--subset", subset, "--epochs", "1", "--model", "full", "--ema",
                   "--output_dir", tmp_path / "run", *TINY) == 0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["val"]["n"] == 12


# ---------------------------------------------------------------------------------------------------------------
# Real signers

REAL_LANDMARKS = SHARED / "data" / "landmarks" / "isl13_162.npz"


@pytest.mark.skipif(not REAL_LANDMARKS.is_file(), reason="../shared/data/landmarks absent")
def test_landmark_only_training_on_real_signers(tmp_path):
    """13 Indian Sign Language words by real people, converted to the WLASL layout: clearly above chance."""
    archive = np.load(REAL_LANDMARKS)
    X, y = archive["X"], archive["y"]
    rng = np.random.default_rng(0)
    (tmp_path / "landmarks").mkdir()
    split = {}
    for c in range(int(y.max()) + 1):
        rows = rng.permutation(np.flatnonzero(y == c))
        for k, row in enumerate(rows):
            subset = "train" if k < 20 else "val" if k < 25 else "test"
            vid = f"{row:05d}"
            np.save(tmp_path / "landmarks" / f"{vid}_landmarks.npy", X[row].astype(np.float32))
            split[vid] = {"subset": subset, "action": [int(c), 1, X.shape[1]]}
    (tmp_path / "nslt_isl.json").write_text(json.dumps(split))
    out = tmp_path / "run"
    assert run_cli("--data_dir", tmp_path, "--subset", "nslt_isl.json", "--modality", "landmarks", "--epochs", "15",
                   "--hidden_dim", "64", "--num_heads", "4", "--batch_size", "16", "--lr", "2e-3", "--dropout", "0.2",
                   "--warmup_epochs", "2", "--device", "cpu", "--output_dir", out) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["n"] == 13 * 5
    assert metrics["test"]["top1"] > 0.5, metrics["test"]  # chance is 1/13


def test_tensorboard_logs_epochs_and_lr_per_step(data, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    data_dir, subset = data
    out = tmp_path / "run"
    assert run_cli("--data_dir", data_dir, "--subset", subset, "--epochs", "2", "--tensorboard",
                   "--output_dir", out, *TINY) == 0
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert len(events.Scalars("lr")) == 2 * 4  # 32 clips / batch 8 = 4 steps per epoch
    assert [e.step for e in events.Scalars("val_top1")] == [1, 2]


def test_ema_warms_up_and_resumes(data, tmp_path):
    """The EMA decay warms up as (1+n)/(10+n): the first update moves the average 90 % of the way to the
    weights (a fixed 0.999 would move it 0.1 %). Its update count is saved for --resume."""
    from types import SimpleNamespace
    model = SimpleHybridASLModel(3, gemma_feature_dim=8, hidden_dim=16, num_heads=2, modality="landmarks")
    ema = EMA(model, decay=0.999)
    start = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.AdamW(model.parameters(), lr=torch.tensor(0.1), fused=True)
    args = SimpleNamespace(label_smoothing=0.1, grad_clip=1.0)
    step = make_train_step(model, LandmarkPreprocessor(False), optimizer, args, torch.ones(3), nullcontext(), None,
                           torch.amp.GradScaler("cuda", enabled=False), ema, torch.zeros(()), torch.zeros(()))
    batch = Batch(None, torch.rand(4, 6, 162), torch.ones(4, 6, dtype=torch.bool), torch.tensor([0, 1, 2, 0]),
                  torch.ones(4))
    step(batch)
    assert ema.updates.item() == 1.0
    for e, p, p0 in zip(ema.params, model.parameters(), start):
        assert torch.allclose(e, p0 + 0.9 * (p.detach() - p0), atol=1e-6)
    step(batch)
    # the average stays outside autograd: a graph chained onto it would grow every step (and break graph capture)
    assert not any(e.requires_grad or e.grad_fn is not None for e in ema.params)
    data_dir, subset = data
    out = tmp_path / "run"
    assert run_cli("--data_dir", data_dir, "--subset", subset, "--epochs", "1", "--ema", "--output_dir", out,
                   *TINY) == 0
    assert torch.load(out / "last.pt", weights_only=True)["ema_updates"] == 4.0  # 32 clips / batch 8


def test_committed_demo_is_what_the_generator_makes(tmp_path):
    """data/demo is reproducible: the committed generator with its fixed seed writes byte-identical files."""
    import filecmp
    import subprocess
    import sys
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, str(root / "data" / "make_demo.py"), "--out", str(tmp_path)], check=True,
                   capture_output=True)
    committed = root / "data" / "demo"
    names = ["nslt_demo.json", "wlasl_class_list.txt", "gemma_features/extraction_metadata.json"]
    names += [f"landmarks/{p.name}" for p in sorted((committed / "landmarks").glob("*.npy"))]
    names += [f"gemma_features/{p.name}" for p in sorted((committed / "gemma_features").glob("*.npy"))]
    assert len(names) == 3 + 2 * 174
    match, mismatch, errors = filecmp.cmpfiles(committed, tmp_path, names, shallow=False)
    assert not mismatch and not errors


def test_preflight_checks_the_users_data(tmp_path, capsys):
    import test_nslt1000_fixes as preflight
    data_dir, subset = make_wlasl_layout(tmp_path, num_classes=2, clips_per_class=(3, 1, 1))
    vid = next(iter(load_split(data_dir / subset)))
    (data_dir / "landmarks" / f"{vid}_landmarks.npy").unlink()
    lines, unusable = preflight.check_user_data(data_dir, subset)
    assert "Gemma features: 32-wide" in lines and unusable == 0
    assert any(line.startswith("train: using 5 of 6 clips (skipped: 1 missing") for line in lines), lines
    vid2 = [v for v in load_split(data_dir / subset)][1]
    (data_dir / "landmarks" / f"{vid2}_landmarks.npy").write_bytes(b"not an array")
    assert preflight.main(["--data_dir", str(data_dir), "--subset", subset]) == 0
    out = capsys.readouterr().out
    assert "PASS  your data (1 clips have unusable files" in out and "1 unreadable" in out
    # --subset alone is not ignored: it checks that split in the default --data_dir (absent here)
    assert preflight.main(["--subset", subset]) == 1
    assert "FAIL  your data: split file data/wlasl/nslt_test.json not found" in capsys.readouterr().out
    shutil.rmtree(data_dir / "gemma_features")
    assert preflight.main(["--data_dir", str(data_dir), "--subset", subset]) == 1
    out = capsys.readouterr().out
    assert "FAIL  your data: " in out and "gemma_features not found" in out and out.strip().endswith("6 passed, 1 failed")
    # every data failure ends with the command that would pass: here, the landmark-only check, which does pass
    suggested = next(line for line in out.splitlines() if line.strip().startswith("next: ")).split("next: ")[1]
    assert suggested == f"python test_nslt1000_fixes.py --data_dir {data_dir} --subset {subset} --modality landmarks"
    assert preflight.main(shlex.split(suggested)[2:]) == 0
    assert preflight.main(["--data_dir", str(data_dir), "--subset", "nslt_typo.json"]) == 1
    assert f"next: python test_nslt1000_fixes.py --data_dir {data_dir} --subset {subset}" in capsys.readouterr().out
