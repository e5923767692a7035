"""ONNX export (export_onnx.py, hybrid_asl.onnx_export) and prediction from the .onnx file (predict.py with
hybrid_asl.onnx_model: onnxruntime and numpy, no torch).

    pip install -r requirements-export.txt
    python -m pytest tests/test_onnx_export.py -q

Every kind of model the trainer builds is exported once (tiny, random weights with a wide head so that logits are
far from zero) with the default exporter and compared with the product's torch path; the demo is trained for 2
epochs (hybrid and landmark-only) and exported through the command line. Skips without onnx / onnxruntime /
onnxscript; the real-landmark check uses ../shared when it is there.
"""
import csv
import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from helpers import ROOT, one_error_line, train_run, train_script
from hybrid_asl.checkpoint import CHECKPOINT_FORMAT, save_checkpoint
from hybrid_asl.landmarks import masked_lower_median
from hybrid_asl.recipe import build_model, model_config

pytest.importorskip("onnx", reason="pip install -r requirements-export.txt")
pytest.importorskip("onnxruntime", reason="pip install -r requirements-export.txt")
pytest.importorskip("onnxscript", reason="the default (dynamo) exporter needs it: pip install -r requirements-export.txt")

import export_onnx  # noqa: E402
import predict  # noqa: E402
from hybrid_asl import onnx_export  # noqa: E402
from hybrid_asl.landmarks import landmark_preprocessor  # noqa: E402
from hybrid_asl.onnx_model import METADATA_KEY, OnnxModel  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
DEMO = ROOT / "data" / "demo"
TINY = ["--hidden_dim", "16", "--num_heads", "2", "--num_layers", "1"]


def tiny_checkpoint(path, flags, num_classes=5, gemma_dim=24, seed=0, ema=False):
    """A checkpoint as train_simple.py writes it (its flags, model_config, landmark normalization with statistics
    of random clips), without training: random weights, the classifier head widened so the logits are not ~0."""
    args = train_script()["build_parser"]().parse_args(TINY + flags)
    gemma_dim = None if args.modality == "landmarks" else gemma_dim
    config = model_config(args, num_classes, gemma_dim)
    torch.manual_seed(seed)
    model = build_model(config)
    with torch.no_grad():
        for member in getattr(model, "members", [model]):
            member.classifier[-1].weight.normal_(0, 1.0)
            member.classifier[-1].bias.normal_(0, 1.0)
    prepare = None
    if args.modality != "gemma":
        train = SimpleNamespace(landmarks=torch.rand(12, args.num_frames, 162, generator=torch.Generator()
                                                     .manual_seed(seed)).numpy(), lengths=np.full(12, args.num_frames))
        prepare = landmark_preprocessor(args, train)
    weights = model.state_dict()
    mapping = [{"index": i, "wlasl_id": 7 * i + 3, "gloss": f"gloss{7 * i + 3}"} for i in range(num_classes)]
    save_checkpoint({"format": CHECKPOINT_FORMAT, "model_config": config,
                     "landmark_normalization": None if prepare is None else prepare.state(), "model": weights,
                     "ema": {k: v + 0.01 for k, v in weights.items()} if ema else None, "epoch": 1, "best_epoch": 1,
                     "best_val_top1": 0.5, "args": vars(args), "label_mapping": mapping, "num_classes": num_classes,
                     "gemma_dim": gemma_dim, "train_counts": [1] * num_classes, "ema_updates": 1.0}, path)
    return path


def onnx_metadata(path):
    import onnx
    proto = onnx.load(str(path))
    return proto, json.loads({p.key: p.value for p in proto.metadata_props}[METADATA_KEY])


# ---------------------------------------------------------------------------------------------------------------
# The masked median that replaced torch.nanmedian (which has no ONNX form) in landmarks.clip_centre_scale

def shoulder_series():
    """(values (N, T, 3), valid (N, T)) shoulder midpoints and their validity from real MediaPipe clips when
    ../shared is here, plus random ones with ties and clips with no valid frame."""
    g = torch.Generator().manual_seed(0)
    series = []
    for path in sorted((SHARED / "videos" / "reference_landmarks_mediapipe_0.10.21").glob("*.npy")):
        x = torch.from_numpy(np.load(path)[:, 126:132].astype(np.float32)).reshape(-1, 2, 3)
        series.append(((x[:, 0] + x[:, 1]) / 2, (x != 0).any(-1).all(-1)))
    for trial in range(300):
        T = int(torch.randint(1, 40, (1,), generator=g))
        values = torch.randn(T, 3, generator=g)
        values = values.round(decimals=1) if trial % 3 == 0 else values   # ties
        series.append((values, torch.rand(T, generator=g) < torch.rand(1, generator=g) * (trial % 7 != 0)))
    return series


def test_masked_lower_median_is_bit_identical_to_nanmedian():
    for values, valid in shoulder_series():
        reference = torch.nanmedian(torch.where(valid[:, None], values, float("nan")), dim=0).values
        got = masked_lower_median(values[None], valid[None, :, None], dim=1)[0]
        assert torch.equal(reference.isnan(), got.isnan())
        assert torch.equal(torch.nan_to_num(reference), torch.nan_to_num(got))
        bits = [torch.nan_to_num(v).view(torch.int32) for v in (reference, got)]
        # bit for bit, but for the sign of a zero: which of the tied 0.0 and -0.0 nanmedian picks is unspecified
        assert ((bits[0] == bits[1]) | (reference == 0)).all()


# ---------------------------------------------------------------------------------------------------------------
# Every kind of model: export, parity, metadata

VARIANTS = {  # together: every model, modality, fusion, positional encoding and landmark input the trainer builds
    "simple-landmarks": ["--modality", "landmarks"],
    "simple-gemma": ["--modality", "gemma"],
    "simple-hybrid-concat": ["--modality", "hybrid", "--fusion_type", "concat"],
    "simple-hybrid-gated-unstandardized": ["--modality", "hybrid", "--fusion_type", "gated",
                                           "--no_landmark_standardize"],
    "simple-hybrid-attention-legacy-pe": ["--modality", "hybrid", "--fusion_type", "attention",
                                          "--legacy_pos_encoding"],
    "simple-landmarks-raw-legacy-pe": ["--modality", "landmarks", "--no_landmark_norm", "--legacy_pos_encoding"],
    "full-hybrid": ["--model", "full", "--modality", "hybrid"],
    "full-hybrid-legacy-pe-ema-501-classes": ["--model", "full", "--modality", "hybrid", "--legacy_pos_encoding"],
    "simple-landmarks-ensemble-hand-shape-frame-mirror": ["--modality", "landmarks", "--ensemble", "2", "--hand_shape",
                                                          "--hand_frame", "--mirror_left_handed"],
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_model_exports_with_parity_and_metadata(name, tmp_path):
    classes = 501 if "501" in name else 5
    checkpoint = tiny_checkpoint(tmp_path / "best.pt", VARIANTS[name], num_classes=classes, ema="ema" in name)
    metadata, parity = onnx_export.export_checkpoint(checkpoint, tmp_path / "model.onnx")
    worst = max(diff for _, diff in parity)
    assert worst < 1e-4 and len(parity) == 11 and any("garbage" in what for what, _ in parity), parity
    print(f"{name}: max |onnxruntime - torch| = {worst:.1e}")

    proto, stored = onnx_metadata(tmp_path / "model.onnx")
    assert stored == json.loads(json.dumps(metadata))
    modality = "hybrid" if "hybrid" in name else "gemma" if "gemma" in name else "landmarks"
    names = {"hybrid": ["gemma", "landmarks", "mask"], "gemma": ["gemma", "mask"],
             "landmarks": ["landmarks", "mask"]}[modality]
    assert [i.name for i in proto.graph.input] == [i["name"] for i in stored["inputs"]] == names
    for graph_input in proto.graph.input:   # batch and time are dynamic; the width is fixed
        dims = graph_input.type.tensor_type.shape.dim
        assert [d.dim_param for d in dims[:2]] == ["batch", "time"] and not any(d.dim_param for d in dims[2:])
    assert stored["model"]["modality"] == modality and stored["model"]["model"] == name.split("-")[0]
    assert stored["model"]["positional_encoding"] == ("learned" if "legacy" in name else "sinusoidal")
    assert stored["checkpoint"]["ema"] == ("ema" in name) and stored["num_frames"] == 16
    assert stored["model"]["members"] == (2 if "ensemble" in name else 1)
    assert [c["gloss"] for c in stored["classes"]] == [f"gloss{7 * i + 3}" for i in range(classes)]
    state = torch.load(checkpoint, weights_only=True)["landmark_normalization"]
    if state is None:
        assert "landmarks" not in stored["preprocessing"]
    else:
        landmarks = stored["preprocessing"]["landmarks"]
        assert landmarks["normalize"] == ("raw" not in name) and landmarks["hand_shape"] == ("hand-shape" in name)
        assert landmarks["hand_frame"] == ("frame" in name) and landmarks["mirror_left_handed"] == ("mirror" in name)
        assert landmarks["channels"] == (162 if "raw" in name else 641 if "hand-shape" in name else 453)
        assert landmarks["standardized"] == (state["mean"] is not None)
        if state["mean"] is not None:
            assert np.array_equal(np.float32(landmarks["standardization"]["mean"]), state["mean"].numpy())
            assert np.array_equal(np.float32(landmarks["standardization"]["std"]), state["std"].numpy())


def test_parity_holds_on_real_landmarks_and_long_clips(tmp_path):
    """Real MediaPipe clips (missing hands, one-sided detections), every other one padded, and clips up to the
    positional table's 512 frames."""
    from hybrid_asl.clips import resample_indices
    clips = [np.load(p).astype(np.float32) for p in
             sorted((SHARED / "videos" / "reference_landmarks_mediapipe_0.10.21").glob("*.npy"))]
    if not clips:
        pytest.skip("../shared/data/videos absent")
    T = 16
    landmarks, lengths = torch.zeros(len(clips), T, 162), []
    for i, clip in enumerate(clips):
        length = T if i % 2 == 0 else 3 + i
        landmarks[i, :length] = torch.from_numpy(clip[resample_indices(len(clip), length)])
        lengths.append(length)
    mask = torch.arange(T)[None] < torch.tensor(lengths)[:, None]
    long = onnx_export.random_inputs(("landmarks", "mask"), None, batch=2, frames=512, seed=5)
    checkpoint = tiny_checkpoint(tmp_path / "best.pt", VARIANTS["simple-landmarks"])
    _, parity = onnx_export.export_checkpoint(checkpoint, tmp_path / "model.onnx", extra_cases=[
        ("real clips", (landmarks, mask)), ("512 frames", long)])
    assert [what for what, _ in parity[-2:]] == ["real clips", "512 frames"]
    assert max(diff for _, diff in parity) < 1e-4, parity
    print(f"real clips, 512 frames: max |onnxruntime - torch| = {max(d for _, d in parity[-2:]):.1e}")


def test_a_graph_that_differs_from_the_checkpoint_is_not_written(tmp_path, monkeypatch):
    """The parity check is real: an exported graph whose classifier bias is off by 1e-3 is refused, no file."""
    from onnx import numpy_helper
    real_export = onnx_export.export_graph

    def off_by_a_little(*args, **kwargs):
        proto = real_export(*args, **kwargs)
        bias = next(t for t in proto.graph.initializer if t.name.endswith("classifier.3.bias"))
        bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + 1e-3, bias.name))
        return proto

    monkeypatch.setattr(onnx_export, "export_graph", off_by_a_little)
    checkpoint = tiny_checkpoint(tmp_path / "best.pt", VARIANTS["simple-landmarks"])
    with pytest.raises(onnx_export.DataError, match="differs from the checkpoint by 0.001"):
        onnx_export.export_checkpoint(checkpoint, tmp_path / "model.onnx", exporter="torchscript")
    assert not (tmp_path / "model.onnx").exists()


def test_the_torchscript_exporter_is_a_working_fallback(tmp_path):
    checkpoint = tiny_checkpoint(tmp_path / "best.pt", VARIANTS["full-hybrid"])
    metadata, parity = onnx_export.export_checkpoint(checkpoint, tmp_path / "model.onnx", exporter="torchscript")
    assert max(d for _, d in parity) < 1e-4 and metadata["exporter"] == "torchscript"
    print(f"torchscript exporter: max |onnxruntime - torch| = {max(d for _, d in parity):.1e}")
    assert onnx_metadata(tmp_path / "model.onnx")[1]["exporter"] == "torchscript"


def test_export_cli_errors_are_one_line(tmp_path):
    checkpoint = tiny_checkpoint(tmp_path / "best.pt", VARIANTS["simple-landmarks"])

    def export(*flags):
        return subprocess.run([sys.executable, str(ROOT / "export_onnx.py"), *map(str, flags)], capture_output=True,
                              text=True, cwd=tmp_path, timeout=300)
    one_error_line(export("--checkpoint", checkpoint, "--output", tmp_path / "model.txt"), 2, "ending in .onnx")
    (tmp_path / "folder.onnx").mkdir()
    one_error_line(export("--checkpoint", checkpoint, "--output", tmp_path / "folder.onnx"), 2, "is a folder")
    one_error_line(export("--checkpoint", tmp_path / "missing.pt"), 2, "missing.pt not found")
    one_error_line(export("--checkpoint", checkpoint, "--opset", "9"), 2, "--opset")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "folder.onnx"], "nothing was written"


# ---------------------------------------------------------------------------------------------------------------
# The demo checkpoint: parity on its clips, predict.py from the .onnx file gives the checkpoint's top-5

@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """{modality: (checkpoint, .onnx)}: the demo trained for 2 epochs, hybrid and landmark-only, exported with the
    command line (default exporter, parity checked)."""
    root = tmp_path_factory.mktemp("demo_onnx")
    runs = {}
    for modality in ("hybrid", "landmarks"):
        run = root / modality
        assert train_run(["--demo", "--modality", modality, "--epochs", "2", "--output_dir", run, "--device", "cpu",
                          "--no_cache"]) == 0
        assert export_onnx.run(["--checkpoint", str(run / "best.pt")]) == 0  # default output: best.onnx beside it
        runs[modality] = (run / "best.pt", run / "best.onnx")
    return runs


def demo_clips(modality):
    """Every demo clip as (name, gemma array or None, landmarks array); every other one cut to 2-13 frames."""
    ids = sorted(p.name[:-len("_landmarks.npy")] for p in (DEMO / "landmarks").glob("*_landmarks.npy"))
    out = []
    for k, i in enumerate(ids):
        cut = None if k % 2 == 0 else 2 + (k // 2) % 12
        gemma = np.load(DEMO / "gemma_features" / f"{i}_gemma.npy")[:cut] if modality == "hybrid" else None
        out.append((i, gemma, np.load(DEMO / "landmarks" / f"{i}_landmarks.npy")[:cut]))
    return out


@pytest.mark.parametrize("modality", ["hybrid", "landmarks"])
def test_demo_checkpoint_parity_by_batch_size_and_clip_length(demo, modality, capsys):
    """Every demo clip, half of them short (padded): the logits of the product's torch path against the .onnx file
    on onnxruntime, batched 1 and 3 (24 clips), 8 and 174 at a time; and predict.py's probabilities from both."""
    checkpoint, onnx_path = demo[modality]
    torch_model = predict.CheckpointModel(checkpoint, torch.device("cpu"))
    onnx_model = OnnxModel(onnx_path)
    clips = [onnx_model.clip(gemma, landmarks) for _, gemma, landmarks in demo_clips(modality)]
    lengths, T = {len(l) for _, l in clips}, onnx_model.num_frames  # 16 frames hybrid, up to 64 landmarks alone
    assert set(range(2, 14)) <= lengths and 16 <= max(lengths) <= T
    worst = float(np.abs(onnx_model.predict(clips) - torch_model.predict(clips)).max())
    for batch in (1, 3, 8, len(clips)):
        some = clips[:24] if batch < 8 else clips  # the first 24 hold every cut length, 2 to 13 frames
        for start in range(0, len(some), batch):
            inputs = padded(some[start:start + batch], T)
            with torch.no_grad():
                reference = onnx_export.inference_logits(torch_model.model, torch_model.prepare, {
                    k: torch.from_numpy(v) for k, v in inputs.items() if v is not None}).numpy()
            got = onnx_model.logits(inputs["gemma"], inputs["landmarks"], inputs["mask"])
            worst = max(worst, float(np.abs(got - reference).max()))
    assert worst < 1e-4
    with capsys.disabled():
        print(f"\ndemo {modality}: max |onnxruntime - torch| = {worst:.1e} over {len(clips)} clips")


def padded(clips, T):
    from hybrid_asl.clips import pad_rows
    lengths = np.array([len(l) for _, l in clips])
    gemma = pad_rows([g for g, _ in clips], T, np.float16)
    return {"gemma": None if gemma is None else gemma.astype(np.float32),
            "landmarks": pad_rows([l for _, l in clips], T, np.float32),
            "mask": np.arange(T)[None] < lengths[:, None]}


def read_csv(path):
    with open(path, newline="") as f:
        return {row["input"]: row for row in csv.DictReader(f)}


@pytest.mark.parametrize("modality", ["hybrid", "landmarks"])
def test_predict_from_onnx_gives_the_checkpoints_top5(demo, modality, tmp_path, capsys):
    checkpoint, onnx_path = demo[modality]
    gemma = ["--gemma_dir", str(DEMO / "gemma_features")] if modality == "hybrid" else []
    for model, out in ((checkpoint, "pt.csv"), (onnx_path, "onnx.csv")):
        assert predict.run(["--checkpoint", str(model), "--input_dir", str(DEMO / "landmarks"), *gemma,
                            "--output_csv", str(tmp_path / out)]) == 0
    pt, ox = read_csv(tmp_path / "pt.csv"), read_csv(tmp_path / "onnx.csv")
    assert list(pt) == list(ox) and len(pt) == 174
    for name in pt:
        assert [pt[name][f"gloss_{r}"] for r in range(1, 6)] == [ox[name][f"gloss_{r}"] for r in range(1, 6)]
        assert [float(pt[name][f"prob_{r}"]) for r in range(1, 6)] == \
            pytest.approx([float(ox[name][f"prob_{r}"]) for r in range(1, 6)], abs=2e-5)
        assert pt[name]["frames"] == ox[name]["frames"]


def test_predict_from_onnx_runs_without_torch(demo):
    """`python predict.py --checkpoint model.onnx ...` in a fresh interpreter where torch cannot be imported at all:
    the same printed top-5 as from the checkpoint."""
    checkpoint, onnx_path = demo["hybrid"]
    clip = ["--landmarks", str(DEMO / "landmarks" / "90002_landmarks.npy"),
            "--gemma", str(DEMO / "gemma_features" / "90002_gemma.npy")]
    no_torch = "import sys; sys.modules['torch'] = None; import runpy; runpy.run_path('predict.py', run_name='__main__')"
    without = subprocess.run([sys.executable, "-c", no_torch, "--checkpoint", str(onnx_path), *clip],
                             capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert without.returncode == 0, without.stderr
    with_torch = subprocess.run([sys.executable, "predict.py", "--checkpoint", str(checkpoint), *clip],
                                capture_output=True, text=True, cwd=ROOT, timeout=300)
    top5 = [[line.split()[1] for line in run.stdout.splitlines() if line.strip()[:2] in ("1.", "2.", "3.", "4.", "5.")]
            for run in (without, with_torch)]
    assert top5[0] == top5[1] and len(top5[0]) == 5


def test_onnx_metadata_of_the_demo(demo):
    checkpoint, onnx_path = demo["landmarks"]
    _, stored = onnx_metadata(onnx_path)
    mapping = json.loads((checkpoint.parent / "label_mapping.json").read_text())
    assert [c["gloss"] for c in stored["classes"]] == [m["gloss"] for m in mapping]
    assert stored["num_classes"] == len(mapping) == 10 and stored["gemma_dim"] is None
    assert stored["checkpoint"]["file"] == "best.pt" and len(stored["checkpoint"]["sha256"]) == 64
    assert stored["sampling"]["pad_to"] == stored["num_frames"] == 64  # landmarks alone: up to 64 frames a clip
    assert stored["extraction"]["landmarks"]["num_frames"] is None  # every frame, tracked (the extractor's default)
    model = OnnxModel(onnx_path)
    assert model.modality == "landmarks" and model.label_mapping == stored["classes"] and model.num_frames == 64


def test_onnx_prediction_errors_are_one_line(demo, tmp_path, capsys):
    import onnx
    _, hybrid = demo["hybrid"]
    landmarks = str(DEMO / "landmarks" / "90002_landmarks.npy")

    def error(*flags):
        assert predict.run(["--checkpoint", *map(str, flags)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("error: "), err
        return err

    assert "also needs Gemma features" in error(hybrid, "--landmarks", landmarks)
    assert "not part of the .onnx file" in error(hybrid, "--video", str(ROOT / "README.md"))
    assert "--device cuda" in error(hybrid, "--landmarks", landmarks, "--gemma", landmarks, "--device", "cuda")
    assert "are --landmarks and --gemma swapped?" in error(hybrid, "--landmarks", DEMO / "gemma_features" /
                                                           "90002_gemma.npy", "--gemma", landmarks)
    (tmp_path / "x.onnx").write_bytes(b"not a model")
    assert "not a readable ONNX model" in error(tmp_path / "x.onnx", "--landmarks", landmarks)
    proto = onnx.load(str(hybrid))
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "bare.onnx"))
    assert "no 'hybrid_asl' metadata" in error(tmp_path / "bare.onnx", "--landmarks", landmarks)
    proto.metadata_props.add(key=METADATA_KEY, value=json.dumps({"format": "hybrid-asl-onnx/9"}))
    onnx.save(proto, str(tmp_path / "future.onnx"))
    assert "hybrid-asl-onnx/9" in error(tmp_path / "future.onnx", "--landmarks", landmarks)
