"""After training: evaluate.py, predict.py and the pictures, on tiny checkpoints trained on generated data.

    python -m pytest tests/test_evaluate_predict.py -q

The end-to-end video test needs the extras (pip install -r requirements-extract.txt) and ../shared; it skips
without them.
"""
import csv
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import evaluate
import predict
from helpers import train_run
from hybrid_asl import plots
from hybrid_asl.batches import BatchLoader
from hybrid_asl.checkpoint import load_trained
from hybrid_asl.engine import amp_context, predict_logits
from hybrid_asl.packing import load_splits
from hybrid_asl.splits import load_split
from test_nslt1000_fixes import make_wlasl_layout

ROOT = Path(__file__).resolve().parents[1]
WLASL_RAW = ROOT.parent / "shared" / "data" / "videos" / "wlasl_raw"
TINY = ["--hidden_dim", "32", "--num_heads", "4", "--epochs", "2", "--batch_size", "8", "--warmup_epochs", "1",
        "--device", "cpu"]


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(data_dir, split file name, {modality: run folder}) for a hybrid and a landmark-only tiny run."""
    root = tmp_path_factory.mktemp("after_training")
    data_dir, subset = make_wlasl_layout(root / "data")
    runs = {}
    for modality in ("hybrid", "landmarks"):
        runs[modality] = root / modality
        assert train_run(["--data_dir", data_dir, "--subset", subset, "--modality", modality,
                          "--output_dir", runs[modality], *TINY]) == 0
    return data_dir, subset, runs


def reference_logits(run_dir, split="test"):
    """Logits of every clip of a split as training's own evaluation computes them: {video_id: logits}."""
    model, prepare, args, checkpoint = load_trained(run_dir / "best.pt", torch.device("cpu"))
    label_of = {m["wlasl_id"]: m["index"] for m in checkpoint["label_mapping"]}
    clips = load_split(Path(args.data_dir) / args.subset)
    packed = load_splits(clips, label_of, Path(args.data_dir) / "gemma_features", Path(args.data_dir) / "landmarks",
                         args.modality, args.num_frames, checkpoint["gemma_dim"], splits=(split,),
                         show_progress=False)[split]
    logits, _ = predict_logits(model, prepare, BatchLoader(packed, 8, "cpu"), amp_context(torch.device("cpu")))
    return dict(zip(packed.video_ids, logits)), checkpoint["label_mapping"]


def one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


# ---------------------------------------------------------------------------------------------------------------
# evaluate.py

def test_evaluate_reproduces_the_run_and_writes_consistent_files(trained, capsys):
    _, _, runs = trained
    assert evaluate.run(["--checkpoint", str(runs["hybrid"] / "best.pt"), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "evaluated 12 of 12 listed clips" in out and "per class:" in out
    folder = runs["hybrid"] / "eval_test"
    result = json.loads((folder / "metrics.json").read_text())
    run_metrics = json.loads((runs["hybrid"] / "metrics.json").read_text())
    assert json.loads((runs["hybrid"] / "metrics.json").read_text()) == run_metrics, "the run's file is untouched"
    assert result["num_classes"] == 4 and result["best_epoch"] == run_metrics["best_epoch"]
    for key in ("top1", "top5", "per_class_top1", "per_class_top5", "loss"):
        assert result["test"][key] == pytest.approx(run_metrics["test"][key], abs=1e-6), key
    assert result["test"]["n"] == result["test"]["n_listed"] == 12

    rows = read_csv(folder / "per_class.csv")
    assert [r["gloss"] for r in rows] == ["gloss3", "gloss10", "gloss17", "gloss24"]
    assert sum(int(r["n"]) for r in rows) == result["test"]["n"]
    assert all(int(r["train_clips"]) == 8 for r in rows)
    top1_from_rows = sum(float(r["top1"]) * int(r["n"]) for r in rows) / result["test"]["n"]
    assert top1_from_rows == pytest.approx(result["test"]["top1"], abs=1e-4)
    wrong = round((1 - result["test"]["top1"]) * 12)
    confusions = read_csv(folder / "confusions.csv")
    assert sum(int(r["count"]) for r in confusions) == wrong
    assert all(r["true_gloss"] != r["predicted_gloss"] for r in confusions)
    if plots._pyplot() is not None:
        assert (folder / "per_class.png").stat().st_size > 1000
        assert (folder / "confusions.png").is_file() or wrong == 0


def test_evaluate_counts_clips_of_unknown_classes_and_honours_data_flags(trained, tmp_path, capsys):
    data_dir, subset, runs = trained
    split = json.loads((data_dir / subset).read_text())
    split["99999"] = {"subset": "val", "action": [500, 1, 20]}  # a class the checkpoint never saw
    (tmp_path / "other.json").write_text(json.dumps(split))
    assert evaluate.run(["--checkpoint", str(runs["landmarks"] / "best.pt"), "--split", "val", "--subset",
                         str(tmp_path / "other.json"), "--output_dir", str(tmp_path), "--no_plots", "--no_cache",
                         "--device", "cpu"]) == 0
    assert "evaluated 12 of 13 listed clips" in capsys.readouterr().out
    result = json.loads((tmp_path / "eval_val" / "metrics.json").read_text())
    assert result["val"]["n"] == 12 and result["val"]["n_listed"] == 13
    assert result["skipped"]["val"]["class_not_in_checkpoint"] == 1


def test_evaluate_errors_are_one_line(trained, tmp_path, capsys):
    _, _, runs = trained
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    assert evaluate.run(["--checkpoint", str(tmp_path / "notes.pt")]) == 2
    assert "not a readable checkpoint" in one_line_error(capsys)
    assert evaluate.run(["--checkpoint", str(runs["hybrid"] / "best.pt"), "--landmarks_dir",
                         str(tmp_path / "nowhere")]) == 2
    assert "--landmarks_dir" in one_line_error(capsys)


# ---------------------------------------------------------------------------------------------------------------
# predict.py

def test_predict_from_npy_matches_evaluate(trained, capsys):
    data_dir, _, runs = trained
    logits, mapping = reference_logits(runs["hybrid"])
    video_id = sorted(logits)[0]
    assert predict.run(["--checkpoint", str(runs["hybrid"] / "best.pt"), "--device", "cpu",
                        "--landmarks", str(data_dir / "landmarks" / f"{video_id}_landmarks.npy"),
                        "--gemma", str(data_dir / "gemma_features" / f"{video_id}_gemma.npy")]) == 0
    out = capsys.readouterr().out
    expected = mapping[int(np.argmax(logits[video_id]))]["gloss"]
    first = next(line for line in out.splitlines() if line.strip().startswith("1. "))
    assert first.split()[1] == expected, out
    probability = torch.softmax(torch.as_tensor(logits[video_id]), 0).max().item()
    assert float(first.split()[2]) == pytest.approx(probability, abs=1e-3)


def test_predict_folder_writes_csv_matching_evaluate(trained, tmp_path, capsys):
    data_dir, _, runs = trained
    logits, mapping = reference_logits(runs["hybrid"])
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for video_id in logits:
        shutil.copy(data_dir / "landmarks" / f"{video_id}_landmarks.npy", inputs)
    (inputs / "broken_landmarks.npy").write_bytes(b"\x93NUMPY truncated")
    out_csv = tmp_path / "predictions.csv"
    assert predict.run(["--checkpoint", str(runs["hybrid"] / "best.pt"), "--input_dir", str(inputs), "--gemma_dir",
                        str(data_dir / "gemma_features"), "--output_csv", str(out_csv), "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert f"predicted {len(logits)} of {len(logits) + 1} inputs; 1 skipped" in captured.out
    assert "broken" in captured.err
    rows = {r["input"]: r for r in read_csv(out_csv)}
    assert rows["broken"]["error"] and rows["broken"]["frames"] == "0"
    for video_id, row in logits.items():
        probs = torch.softmax(torch.as_tensor(row), 0).numpy()
        assert rows[video_id]["gloss_1"] == mapping[int(probs.argmax())]["gloss"]
        assert float(rows[video_id]["prob_1"]) == pytest.approx(float(probs.max()), abs=1e-4)
        assert rows[video_id]["gloss_4"] and "gloss_5" not in rows[video_id], "top-k is capped at 4 classes"


def test_predict_errors_are_one_line(trained, tmp_path, capsys):
    data_dir, _, runs = trained
    landmarks = str(next((data_dir / "landmarks").glob("*_landmarks.npy")))
    hybrid = str(runs["hybrid"] / "best.pt")
    assert predict.run(["--checkpoint", hybrid, "--landmarks", landmarks]) == 2
    assert "also needs Gemma features" in one_line_error(capsys)
    np.save(tmp_path / "narrow_gemma.npy", np.zeros((16, 7), np.float32))
    assert predict.run(["--checkpoint", hybrid, "--landmarks", landmarks, "--gemma",
                        str(tmp_path / "narrow_gemma.npy")]) == 2
    err = one_line_error(capsys)
    assert "feature dimension does not match" in err and "32-wide Gemma features" in err
    np.save(tmp_path / "wide_landmarks.npy", np.zeros((16, 170), np.float32))
    assert predict.run(["--checkpoint", str(runs["landmarks"] / "best.pt"), "--landmarks",
                        str(tmp_path / "wide_landmarks.npy")]) == 2
    assert "162-wide landmarks" in one_line_error(capsys)
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    assert predict.run(["--checkpoint", str(tmp_path / "notes.pt"), "--landmarks", landmarks]) == 2
    assert "not a readable checkpoint" in one_line_error(capsys)
    assert predict.run(["--checkpoint", hybrid, "--video", str(tmp_path / "missing.mp4")]) == 2
    assert "missing.mp4 not found" in one_line_error(capsys)


@pytest.fixture
def real_video():
    """A real WLASL clip for the video paths; skipped without the extras or ../shared."""
    pytest.importorskip("mediapipe")
    pytest.importorskip("cv2")
    if not WLASL_RAW.is_dir():
        pytest.skip("../shared/data/videos absent")
    return WLASL_RAW / "00335.mp4"


def test_predict_video_with_hybrid_checkpoint_needs_the_gemma_model(trained, tmp_path, capsys, real_video):
    """The generated data has no extraction_metadata.json, so nothing names the Gemma model: say so."""
    _, _, runs = trained
    assert predict.run(["--checkpoint", str(runs["hybrid"] / "best.pt"), "--video",
                        str(real_video)]) == 2
    assert "--gemma_model" in one_line_error(capsys)


def test_predict_real_video_end_to_end_with_a_landmark_checkpoint(trained, tmp_path, capsys, real_video):
    _, _, runs = trained
    assert predict.run(["--checkpoint", str(runs["landmarks"] / "best.pt"), "--video", str(real_video),
                        "--output_csv", str(tmp_path / "one.csv"), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    shown = re.search(r"00335\.mp4: top-4 of 4 glosses \((\d+) frames\)", out)
    assert shown and 16 < int(shown[1]) <= 64 and "4. gloss" in out  # landmarks alone keep every frame up to 64
    row = read_csv(tmp_path / "one.csv")[0]
    assert row["gloss_1"].startswith("gloss") and 0 < float(row["prob_1"]) <= 1


# ---------------------------------------------------------------------------------------------------------------
# Pictures

def test_training_curves_never_raise(trained, tmp_path, monkeypatch, capsys):
    _, _, runs = trained
    (tmp_path / "summary.csv").write_text("")
    assert plots.plot_training_curves(tmp_path / "summary.csv", tmp_path / "curves.png") is None
    assert plots.plot_training_curves(tmp_path / "absent.csv", tmp_path / "curves.png") is None
    (tmp_path / "odd.csv").write_text("epoch,train_loss\n1,oops\n")
    plots.plot_training_curves(tmp_path / "odd.csv", tmp_path / "odd.png")  # whatever it draws, it returns
    if plots._pyplot() is not None:
        written = plots.plot_training_curves(runs["hybrid"] / "summary.csv", tmp_path / "curves.png")
        assert written == tmp_path / "curves.png" and written.stat().st_size > 1000
    capsys.readouterr()
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    monkeypatch.setattr(plots, "_missing_noted", False)
    assert plots.plot_training_curves(runs["hybrid"] / "summary.csv", tmp_path / "none.png") is None
    assert plots.plot_confusions([("a", "b", 2)], tmp_path / "none.png") is None
    out = capsys.readouterr().out
    assert out.count("matplotlib is not installed") == 1 and len(out.splitlines()) == 1
    assert not (tmp_path / "none.png").exists()


def test_predict_video_extracts_gemma_features_as_the_extractor_did(tmp_path, monkeypatch, capsys):
    """A Gemma-only checkpoint on features from a tiny random Gemma 3: --video re-extracts them with the model
    named in extraction_metadata.json and predicts exactly what the saved features give."""
    pytest.importorskip("cv2")
    transformers = pytest.importorskip("transformers")
    if not WLASL_RAW.is_dir():
        pytest.skip("../shared/data/videos absent")
    import extract_gemma_features
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    config = transformers.Gemma3Config(
        vision_config=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64,
                           num_hidden_layers=1, num_attention_heads=4, image_size=28, patch_size=14),
        text_config=dict(hidden_size=24, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=1, head_dim=12, vocab_size=300), mm_tokens_per_image=1)
    model = transformers.Gemma3ForConditionalGeneration(config)
    with torch.no_grad():
        model.model.multi_modal_projector.mm_input_projection_weight.normal_()
    model.save_pretrained(tmp_path / "tiny_gemma3", safe_serialization=True)
    data = tmp_path / "data"
    split = {"00335": ["train", 0], "00336": ["train", 1], "00338": ["val", 0], "00339": ["test", 1]}
    (data).mkdir()
    (data / "nslt_v.json").write_text(json.dumps({v: {"subset": s, "action": [c, 1, -1]}
                                                 for v, (s, c) in split.items()}))
    extract_gemma_features.main(["--videos_dir", str(WLASL_RAW), "--data_dir", str(data), "--subset", "nslt_v.json",
                                 "--model_name", str(tmp_path / "tiny_gemma3"), "--device", "cpu", "--no_progress"])
    assert train_run(["--data_dir", data, "--subset", "nslt_v.json", "--modality", "gemma",
                      "--output_dir", tmp_path / "run", "--augment", "none", *TINY]) == 0
    checkpoint = str(tmp_path / "run" / "best.pt")
    capsys.readouterr()
    assert predict.run(["--checkpoint", checkpoint, "--gemma", str(data / "gemma_features" / "00336_gemma.npy"),
                        "--output_csv", str(tmp_path / "saved.csv")]) == 0
    assert predict.run(["--checkpoint", checkpoint, "--video", str(WLASL_RAW / "00336.mp4"),
                        "--output_csv", str(tmp_path / "video.csv")]) == 0
    saved, video = read_csv(tmp_path / "saved.csv")[0], read_csv(tmp_path / "video.csv")[0]
    assert saved["gloss_1"] == video["gloss_1"]
    assert float(saved["prob_1"]) == pytest.approx(float(video["prob_1"]), abs=1e-3)
