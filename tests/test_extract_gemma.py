"""Gemma 3 feature extraction with a tiny random Gemma 3 checkpoint built offline, on real clips.

    python -m pytest tests/test_extract_gemma.py -q

Needs transformers + safetensors (pip install -r requirements-extract.txt), OpenCV and ../shared; skips without them.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
WLASL_RAW = ROOT.parent / "shared" / "data" / "videos" / "wlasl_raw"
WLASL = ROOT.parent / "shared" / "data" / "wlasl"

pytestmark = pytest.mark.skipif(not WLASL_RAW.is_dir(), reason="../shared/data/videos not present")
pytest.importorskip("cv2", reason="extras not installed: pip install -r requirements-extract.txt")
transformers = pytest.importorskip("transformers", reason="extras not installed: pip install -r requirements-extract.txt")
pytest.importorskip("safetensors")
os.environ["HF_HUB_OFFLINE"] = "1"  # nothing may be downloaded

import extract_gemma_features as eg  # noqa: E402
from hybrid_asl.errors import DataError  # noqa: E402
from hybrid_asl.gemma_vision import preprocess, resolve_model_dir  # noqa: E402
from hybrid_asl.video import read_clip_frames  # noqa: E402

VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=56,
              patch_size=14)
TEXT = dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
            head_dim=24, vocab_size=4000)  # a big embedding table: the language model fills shards of its own
WINDOWS = {"00335": (10, 30), "00336": (1, 56), "00338": (1, 61), "00339": (1, -1)}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A random Gemma3ForConditionalGeneration saved as several safetensors shards: (folder, full model)."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration
    torch.manual_seed(0)
    config = Gemma3Config(vision_config=dict(model_type="siglip_vision_model", **VISION), text_config=TEXT,
                          mm_tokens_per_image=4)
    model = Gemma3ForConditionalGeneration(config).eval()
    with torch.no_grad():  # initialised to zeros: random values make the projector output worth comparing
        model.model.multi_modal_projector.mm_input_projection_weight.normal_()
        model.model.multi_modal_projector.mm_soft_emb_norm.weight.normal_()
    folder = tmp_path_factory.mktemp("tiny_gemma3")
    model.save_pretrained(folder, max_shard_size="300KB", safe_serialization=True)
    return folder, model


@pytest.fixture
def split_file(tmp_path):
    split = {v: {"subset": "train", "action": [1283, s, e]} for v, (s, e) in WINDOWS.items()}
    split["00000"] = {"subset": "train", "action": [1283, 1, -1]}  # listed but no video: reported
    split["corrupt"] = {"subset": "train", "action": [1283, 1, -1]}
    path = tmp_path / "split.json"
    path.write_text(json.dumps(split))
    videos = tmp_path / "videos"
    videos.mkdir()
    for v in WINDOWS:
        os.symlink(WLASL_RAW / f"{v}.mp4", videos / f"{v}.mp4")
    (videos / "corrupt.mp4").write_bytes(os.urandom(10000))
    return path, videos


def reference_features(model, frames, layer):
    """What transformers' own Gemma 3 computes for these frames (same pixel values), mean over image tokens."""
    spec = {"image_size": VISION["image_size"], "rescale_factor": 1 / 255, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}
    pixels = preprocess(torch.from_numpy(frames), spec, torch.float32)
    with torch.no_grad():
        if layer == "vision":
            return model.model.vision_tower(pixel_values=pixels).last_hidden_state.mean(1).numpy()
        return model.model.get_image_features(pixel_values=pixels).pooler_output.mean(1).numpy()


def test_preprocessing_matches_the_gemma3_image_processor():
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil
    frames, _ = read_clip_frames(WLASL_RAW / "00336.mp4", num_frames=3)
    spec = {"image_size": 896, "rescale_factor": 1 / 255, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}
    ours = preprocess(torch.from_numpy(frames), spec, torch.float32)
    theirs = Gemma3ImageProcessorPil(size={"height": 896, "width": 896})(images=list(frames), return_tensors="pt")
    theirs = theirs["pixel_values"]
    assert ours.shape == theirs.shape == (3, 3, 896, 896)
    diff = (ours - theirs).abs()
    # PIL and torch bilinear differ by at most one uint8 level here (1/127.5 after scaling to [-1, 1])
    assert diff.max() <= 1 / 127.5 + 1e-6 and diff.mean() < 2e-3


def test_end_to_end_shapes_values_metadata_and_resume(tiny_model, split_file, tmp_path, monkeypatch, capsys):
    folder, model = tiny_model
    split, videos = split_file
    # selective loading: the language model is never constructed, only vision/projector tensors are read
    import safetensors
    from transformers.models.gemma3 import modeling_gemma3

    def forbidden(self, *a, **k):
        raise AssertionError(f"{type(self).__name__} was constructed")
    for name in ("Gemma3ForConditionalGeneration", "Gemma3Model", "Gemma3TextModel", "Gemma3ForCausalLM"):
        monkeypatch.setattr(getattr(modeling_gemma3, name), "__init__", forbidden)
    opened, read = [], []
    real_safe_open = safetensors.safe_open

    class Recording:
        def __init__(self, path, *a, **k):
            opened.append(os.path.basename(path))
            self.f = real_safe_open(path, *a, **k)

        def __enter__(self):
            self.f.__enter__()
            return self

        def __exit__(self, *exc):
            return self.f.__exit__(*exc)

        def keys(self):
            return self.f.keys()

        def get_tensor(self, key):
            read.append(key)
            return self.f.get_tensor(key)
    monkeypatch.setattr(safetensors, "safe_open", Recording)

    out = tmp_path / "gemma"
    argv = ["--videos_dir", str(videos), "--subset", str(split), "--model_name", str(folder), "--output_dir", str(out),
            "--device", "cpu", "--batch_size", "5", "--no_progress"]  # batch 5: clips straddle batches
    meta = eg.main(argv)

    weight_map = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    vision_keys = {k for k in weight_map if "vision_tower." in k or "multi_modal_projector." in k}
    assert set(read) == vision_keys
    assert set(opened) == {weight_map[k] for k in vision_keys}
    assert len(set(weight_map.values())) > len(set(opened))  # shards holding only the language model stayed shut

    lengths = {"00335": 16, "00336": 16, "00338": 16, "00339": 16}
    for video_id, (start, end) in WINDOWS.items():
        got = np.load(out / f"{video_id}_gemma.npy")
        assert got.shape == (lengths[video_id], TEXT["hidden_size"]) and got.dtype == np.float16
        frames, _ = read_clip_frames(WLASL_RAW / f"{video_id}.mp4", start, end, 16)
        np.testing.assert_allclose(got, reference_features(model, frames, "projector"), rtol=2e-3, atol=2e-3)
    assert np.abs(np.load(out / "00335_gemma.npy")).mean() > 0.1  # not a zero projector

    on_disk = json.loads((out / "extraction_metadata.json").read_text())
    for m in (meta, on_disk):
        assert m["feature_dim"] == TEXT["hidden_size"] and m["layer"] == "projector" and m["num_frames"] == 16
        assert m["dtype"] == "float16" and "mean" in m["pooling"] and m["model"] == str(folder)
        assert m["counts"] == {"clips": 6, "extracted": 4, "skipped_existing": 0, "missing": 1, "refused": 0,
                               "failed": 1, "with_notes": 0, "frames_extracted": 64, "outputs_present": 4}
        assert m["missing"] == ["00000"]  # no video: listed, not a failure
        assert [f["video_id"] for f in m["failed"]] == ["corrupt"]
    printed = capsys.readouterr()
    assert printed.err.strip().splitlines() == [f"warning: corrupt skipped: {meta['failed'][0]['reason']}"]
    assert f"missing 1 (no video with that id, e.g. 00000; all listed in {out / 'extraction_metadata.json'}), " \
           "refused 0, failed 1;" in printed.out

    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*_gemma.npy")}
    again = eg.main(argv)
    assert again["counts"]["skipped_existing"] == 4 and again["counts"]["extracted"] == 0
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*_gemma.npy")} == stamps

    # a folder of projector features is not silently topped up with 32-d tower features
    with pytest.raises(DataError, match="--layer projector"):
        eg.main(argv + ["--layer", "vision"])


def test_vision_layer_float32_and_whole_clips(tiny_model, tmp_path):
    folder, model = tiny_model
    out = tmp_path / "vision"
    meta = eg.main(["--videos_dir", str(WLASL_RAW), "--model_name", str(folder), "--output_dir", str(out),
                    "--layer", "vision", "--dtype", "float32", "--num_frames", "4", "--device", "cpu", "--no_progress"])
    assert meta["feature_dim"] == VISION["hidden_size"] and meta["counts"]["extracted"] == 4
    got = np.load(out / "00338_gemma.npy")
    frames, _ = read_clip_frames(WLASL_RAW / "00338.mp4", num_frames=4)
    assert got.shape == (4, VISION["hidden_size"]) and got.dtype == np.float32
    np.testing.assert_allclose(got, reference_features(model, frames, "vision"), rtol=1e-4, atol=1e-5)


def test_real_split_with_few_videos_counts_missing_not_failed(tiny_model, tmp_path, capsys):
    """nslt_2000 (21,095 clips) with 4 of its videos on disk: 4 extracted, the rest missing (counted, listed in the
    metadata, one summary line), none failed and no warning per absent video."""
    folder, _ = tiny_model
    split = json.loads((WLASL / "nslt_2000.json").read_text())
    out = tmp_path / "gemma"
    meta = eg.main(["--videos_dir", str(WLASL_RAW), "--data_dir", str(WLASL), "--subset", "nslt_2000.json",
                    "--model_name", str(folder), "--output_dir", str(out), "--num_frames", "2", "--device", "cpu",
                    "--no_progress"])
    absent = sorted(set(split) - set(WINDOWS))
    assert meta["counts"]["extracted"] == 4 and meta["counts"]["failed"] == 0 and meta["failed"] == []
    assert meta["counts"]["missing"] == len(absent) == len(split) - 4
    assert json.loads((out / "extraction_metadata.json").read_text())["missing"] == absent
    printed = capsys.readouterr()
    assert printed.err == ""
    assert f"missing {len(absent)} (no video with that id, e.g. {', '.join(absent[:3])}, ...; all listed in " in printed.out


@pytest.mark.parametrize("name", ["/nope/model", "./nope", "../nope/gemma", "~/nope-gemma-3", "models/nope/gemma"])
def test_missing_local_model_folder_says_so_without_a_hub_hint(name):
    with pytest.raises(DataError) as e:
        resolve_model_dir(name)
    message = str(e.value)
    assert message.startswith(f"--model_name {name}: local folder does not exist")
    assert "config.json" in message and "safetensors" in message and "hf download" not in message


def model_error_line(model_name, tmp_path):
    """The CLI with a --model_name that is not on this machine, offline: exit 2 and one stderr line (returned)."""
    r = subprocess.run([sys.executable, str(ROOT / "extract_gemma_features.py"), "--videos_dir", str(WLASL_RAW),
                        "--model_name", model_name, "--output_dir", str(tmp_path), "--device", "cpu"],
                       capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1",
                                                                HF_HOME=str(tmp_path / "hf")))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_missing_local_model_folder_cli_is_one_line(tmp_path):
    line = model_error_line("/nope/model", tmp_path)
    assert line.startswith("error: --model_name /nope/model: local folder does not exist")
    assert "hf download" not in line


def test_model_folder_given_with_tilde_is_found(tiny_model, monkeypatch):
    folder, _ = tiny_model
    monkeypatch.setenv("HOME", str(folder.parent))
    assert resolve_model_dir(f"~/{folder.name}") == str(folder)


def test_missing_model_is_one_line_and_downloads_nothing(tmp_path):
    line = model_error_line("nobody/not-a-gemma-model", tmp_path)
    assert line.startswith("error: model nobody/not-a-gemma-model is not on this machine")
    assert "hf download" in line


def test_torchrun_two_cpu_ranks_split_disjointly_and_merge(tiny_model, tmp_path):
    folder, _ = tiny_model
    out = tmp_path / "ranks"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531",
           str(ROOT / "extract_gemma_features.py"), "--videos_dir", str(WLASL_RAW), "--model_name", str(folder),
           "--output_dir", str(out), "--num_frames", "2", "--device", "cpu", "--no_progress"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stderr[-2000:]
    shards = [json.loads((out / f"extraction_metadata.shard-{k}-of-2.json").read_text()) for k in range(2)]
    assert [s["counts"]["clips"] for s in shards] == [2, 2]  # 2 + 2 clips and all 4 outputs: disjoint and complete
    assert sorted(p.stem for p in out.glob("*_gemma.npy")) == [f"{v}_gemma" for v in sorted(WINDOWS)]
    merged = json.loads((out / "extraction_metadata.json").read_text())
    assert merged["counts"]["clips"] == 4 and merged["counts"]["extracted"] == 4
    assert merged["counts"]["outputs_present"] == 4 and merged["feature_dim"] == TEXT["hidden_size"]

    # resumable under torchrun as well: a second launch skips everything
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stderr[-2000:]
    merged = json.loads((out / "extraction_metadata.json").read_text())
    assert merged["counts"]["skipped_existing"] == 4 and merged["counts"]["extracted"] == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_torchrun_one_gpu_rank_matches_cpu_extraction(tiny_model, tmp_path):
    """torchrun with one CUDA rank: every clip extracted in bf16 on the GPU, metadata merged, and the features
    agree with a float32 CPU extraction of the same clips to bf16 tolerance."""
    folder, _ = tiny_model
    common = ["--videos_dir", str(WLASL_RAW), "--model_name", str(folder), "--num_frames", "4", "--no_progress",
              "--dtype", "float32"]
    gpu = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_port", "29533",
           str(ROOT / "extract_gemma_features.py"), *common, "--output_dir", str(tmp_path / "gpu"), "--device", "cuda"]
    cpu = [sys.executable, str(ROOT / "extract_gemma_features.py"), *common, "--output_dir", str(tmp_path / "cpu"),
           "--device", "cpu"]
    for cmd in (gpu, cpu):
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        assert r.returncode == 0, r.stderr[-2000:]
    merged = json.loads((tmp_path / "gpu" / "extraction_metadata.json").read_text())
    assert merged["counts"]["extracted"] == len(WINDOWS)
    for v in WINDOWS:
        a, b = np.load(tmp_path / "gpu" / f"{v}_gemma.npy"), np.load(tmp_path / "cpu" / f"{v}_gemma.npy")
        assert a.shape == b.shape == (4, TEXT["hidden_size"])
        assert np.linalg.norm(a - b) / np.linalg.norm(b) < 3e-2
