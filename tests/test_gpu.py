"""GPU correctness: CUDA-graph replay matches the eager path, bf16 autocast trains (and fp16 with the GradScaler, as on
GPUs without bf16), splits in host memory train as GPU-resident ones do, memory stays small.
Skipped without CUDA (CI has no GPU); run on a GPU machine with `python -m pytest tests/test_gpu.py`."""
import csv
import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

import hybrid_asl.engine
from helpers import ROOT, train_main, train_run, train_script
from hybrid_asl.engine import CudaGraphStep, make_eval_step, make_train_step
from hybrid_asl.landmarks import LandmarkPreprocessor
from test_nslt1000_fixes import make_wlasl_layout

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
# Deterministic model: no dropout, no stochastic depth, no augmentation, so eager and replay compute the same thing.
DETERMINISTIC = ["--dropout", "0", "--encoder_dropout", "0", "--drop_path", "0", "--augment", "none",
                 "--hidden_dim", "64", "--num_heads", "4", "--batch_size", "8", "--lr", "1e-3", "--warmup_epochs", "1",
                 "--device", "cuda", "--seed", "3"]


def summary(run_dir):
    return list(csv.DictReader(open(run_dir / "summary.csv")))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    # 4 classes x 9 train clips = 36: the last batch of 8 is partial, so the padded fixed-size batch is exercised.
    return make_wlasl_layout(tmp_path_factory.mktemp("gpu"), clips_per_class=(9, 3, 3))


def test_captured_steps_match_eager_steps():
    """Step by step, from the same weights: the replayed training step gives the eager losses, and a captured
    eval graph sees weight updates made after capture (no stale weights)."""
    from hybrid_asl_model_simple import SimpleHybridASLModel
    from hybrid_asl.batches import BatchLoader
    from hybrid_asl.packing import PackedSplit
    import numpy as np
    rng = np.random.default_rng(0)
    n, T = 64, 16
    split = PackedSplit("train", [str(i) for i in range(n)], rng.integers(0, 5, n), rng.integers(4, T + 1, n),
                        gemma=rng.standard_normal((n, T, 24)).astype(np.float16),
                        landmarks=rng.random((n, T, 162)).astype(np.float32), listed=n)
    args = SimpleNamespace(label_smoothing=0.1, grad_clip=1.0)
    prepare = LandmarkPreprocessor(normalize=False).cuda()

    def setup(use_graphs):
        torch.manual_seed(0)
        model = SimpleHybridASLModel(5, gemma_feature_dim=24, hidden_dim=64, num_heads=4, dropout=0.0,
                                     encoder_dropout=0.0).cuda()
        optimizer = torch.optim.AdamW(model.parameters(), lr=torch.tensor(1e-3, device="cuda"), fused=True,
                                      capturable=use_graphs)
        amp = torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=not use_graphs)
        loader = BatchLoader(split, 16, "cuda", on_device=True, fixed_size=True)
        found_inf, skip_all = torch.zeros((), device="cuda"), torch.zeros((), device="cuda")
        step = make_train_step(model, prepare, optimizer, args, torch.ones(5, device="cuda"), amp, None,
                               torch.amp.GradScaler("cuda", enabled=False), None, found_inf, skip_all)
        return model, optimizer, amp, loader, step, skip_all

    model, optimizer, amp, loader, step, _ = setup(False)
    eager_losses = []
    for step_input in list(loader.plan(shuffle=True, seed=1)) * 4:
        optimizer.zero_grad(set_to_none=True)
        eager_losses.append(step(loader.materialize(step_input))[0].item())

    model, optimizer, amp, loader, step, skip_all = setup(True)
    skip_all.fill_(1.0)
    graph = CudaGraphStep(lambda x: step(loader.materialize(x)), next(loader.plan()),
                          before_capture=lambda: optimizer.zero_grad(set_to_none=True))
    skip_all.fill_(0.0)
    eval_graph = CudaGraphStep(make_eval_step(model.eval(), prepare, loader, amp), next(loader.plan()))
    model.train()
    graph_losses = [graph(x)[0].item() for x in list(loader.plan(shuffle=True, seed=1)) * 4]
    # Same kernels in the same order: 16 steps agree to well within bf16 rounding (a replayed backward that
    # accumulated into stale gradients would drift by far more).
    assert graph_losses == pytest.approx(eager_losses, rel=2e-3), (graph_losses, eager_losses)
    assert graph_losses[-1] < graph_losses[0]
    # The eval graph reads the weights as they are now, after 16 replayed optimizer steps.
    model.eval()
    eager_eval = make_eval_step(model, prepare, loader, amp)
    for x in loader.plan():
        assert torch.allclose(eval_graph(x)[0], eager_eval(x)[0], rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("extra", [["--no_compile"], ["--no_compile", "--model", "full", "--ema"], [],
                                   ["--no_compile", "--ensemble", "2", "--hand_shape", "--hand_frame",
                                    "--mirror_left_handed"]],
                         ids=["simple", "full+ema", "compiled", "ensemble+hands"])
def test_cuda_graph_replay_matches_eager(data, tmp_path, extra):
    data_dir, subset = data
    common = ["--data_dir", str(data_dir), "--subset", subset, "--epochs", "5", *DETERMINISTIC, *extra]
    assert train_run(common + ["--output_dir", str(tmp_path / "eager"), "--no_cuda_graphs"]) == 0
    assert train_run(common + ["--output_dir", str(tmp_path / "graph")]) == 0
    eager, graph = summary(tmp_path / "eager"), summary(tmp_path / "graph")
    for a, b in zip(eager, graph, strict=True):
        # bf16 tolerance: the two paths run the same kernels, but reductions may be ordered differently.
        # torch.compile fuses bf16 ops differently from eager: a looser bound for the compiled run.
        assert float(a["train_loss"]) == pytest.approx(float(b["train_loss"]), rel=5e-2 if not extra else 2e-2)
        # Whole runs drift apart slowly in bf16 (reductions may be ordered differently); step-level agreement is
        # tested tightly above.
        assert float(a["val_loss"]) == pytest.approx(float(b["val_loss"]), rel=5e-2)
    assert float(graph[-1]["train_loss"]) < 0.8 * float(graph[0]["train_loss"]), "the replayed step must learn"
    m_eager = json.loads((tmp_path / "eager" / "metrics.json").read_text())
    m_graph = json.loads((tmp_path / "graph" / "metrics.json").read_text())
    assert m_graph["test"]["n"] == m_eager["test"]["n"] == 12, "padding rows must not be counted"
    assert abs(m_graph["test"]["top1"] - m_eager["test"]["top1"]) <= 1 / 12 + 1e-9


def test_graphs_with_augmentation_and_gpu_resident_data_train(data, tmp_path):
    data_dir, subset = data
    out = tmp_path / "run"
    assert train_run(["--data_dir", str(data_dir), "--subset", subset, "--epochs", "6", "--augment", "strong",
                      "--hidden_dim", "64", "--num_heads", "4", "--batch_size", "8", "--lr", "1e-3",
                      "--warmup_epochs", "1", "--device", "cuda", "--output_dir", str(out)]) == 0
    rows = summary(out)
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert json.loads((out / "metrics.json").read_text())["test"]["n"] == 12


@pytest.mark.parametrize("compile_flag", [["--no_compile"], []], ids=["graphs", "compiled"])
def test_graphs_with_mixup_conv_encoder_and_flip_averaging_train(data, tmp_path, compile_flag):
    """Protocol 5's options inside captured (and compiled) steps: mixup draws on the device, the conv encoder, the
    mirror augmentation and the flip-averaged evaluation step."""
    data_dir, subset = data
    out = tmp_path / "run"
    # its own process: what torch.compile caches for this run stays out of the runs of the other tests
    done = subprocess.run([sys.executable, str(ROOT / "train_simple.py"), "--data_dir", data_dir, "--subset", subset,
                           "--epochs", "6", "--mixup", "0.5", "--encoder", "conv", "--aug_mirror_p", "0.5",
                           "--tta_flip", "--hidden_dim", "64", "--num_heads", "4", "--batch_size", "8", "--lr", "1e-3",
                           "--warmup_epochs", "1", "--device", "cuda", "--output_dir", out, *compile_flag],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = summary(out)
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert json.loads((out / "metrics.json").read_text())["test"]["n"] == 12


def test_captured_step_keeps_the_tensors_only_its_closure_holds():
    """A graph replays fixed addresses: a tensor that only the step's closure holds (like the training step's
    skip_all flag) must live as long as the graph, or its memory goes to the next tensor allocated while every replay
    still reads it (this once fed learning rates and clip lengths into the skip flag of host-resident runs)."""
    def make_step():
        offset = torch.full((), 1.0, device="cuda")  # held by the closure alone

        def step(inputs):
            return inputs[0] + offset
        return step

    captured = CudaGraphStep(make_step(), (torch.zeros(256, device="cuda"),))
    fillers = [torch.full((), 1e6, device="cuda") for _ in range(64)]  # reuse whatever small blocks are free
    out = captured((torch.arange(256, dtype=torch.float32, device="cuda"),))
    assert torch.equal(out, torch.arange(256, dtype=torch.float32, device="cuda") + 1.0)
    del fillers


def test_graphs_with_host_resident_splits_train(data, tmp_path):
    """--gpu_cache_gb 0 keeps every split in host memory: the captured steps copy whole batches into their static
    inputs instead of gathering on the device (the path of splits too big for the GPU, e.g. nslt_2000's val)."""
    data_dir, subset = data
    out = tmp_path / "host"
    assert train_main(["--data_dir", str(data_dir), "--subset", subset, "--epochs", "2", *DETERMINISTIC,
                       "--gpu_cache_gb", "0", "--output_dir", str(out)]) == 0
    rows = summary(out)
    assert len(rows) == 2 and all(float(r["train_loss"]) < 1e9 for r in rows)  # finite: nan fails every comparison


def test_nonfinite_loss_is_skipped_on_the_device(data, tmp_path, monkeypatch):
    """A step whose loss is NaN (here: every third step, counted on the device, so it also happens inside a
    replayed graph) is skipped by the fused AdamW on the GPU; the run goes on (a run stops only when most steps
    of an epoch are lost: 2 of 5 here)."""
    data_dir, subset = data
    real = hybrid_asl.engine.weighted_loss
    step = torch.zeros((), dtype=torch.int64, device="cuda")

    def poisoned(*args):
        loss = real(*args)
        step.add_(1)  # in place: recorded into a captured graph and replayed with it
        return loss * torch.where(step % 3 == 0, torch.tensor(float("nan"), device=loss.device), 1.0)
    monkeypatch.setattr(hybrid_asl.engine, "weighted_loss", poisoned)
    torch.cuda.reset_peak_memory_stats()
    out = tmp_path / "run"
    assert train_main(["--data_dir", str(data_dir), "--subset", subset, "--epochs", "2", *DETERMINISTIC,
                       "--output_dir", str(out)]) == 0
    checkpoint = torch.load(out / "last.pt", weights_only=True)
    assert all(torch.isfinite(t).all() for t in checkpoint["model"].values()), "weights never become non-finite"
    assert sum(int(row["skipped_steps"]) for row in summary(out)) > 0, "some steps were poisoned and skipped"


# ---------------------------------------------------------------------------------------------------------------
# GPUs without bf16 (Pascal, Turing: most 4 GB cards) take fp16 autocast with the GradScaler and no CUDA graphs;
# this GPU has bf16, so the tests make it look older.

@pytest.fixture
def fp16_gpu(monkeypatch):
    no_bf16 = lambda device: False  # noqa: E731
    monkeypatch.setattr(hybrid_asl.engine, "uses_bf16", no_bf16)  # amp_context
    monkeypatch.setitem(train_script()["main"].__globals__, "uses_bf16", no_bf16)  # the script's graphs and scaler
    return train_script()["main"].__globals__


def test_fp16_gpus_train_with_the_grad_scaler(data, tmp_path, fp16_gpu, capsys):
    data_dir, subset = data
    out = tmp_path / "fp16"
    assert train_main(["--data_dir", str(data_dir), "--subset", subset, "--epochs", "3", *DETERMINISTIC,
                       "--output_dir", str(out)]) == 0
    assert "fp16 autocast, CUDA graphs off" in capsys.readouterr().out
    losses = [float(r["train_loss"]) for r in summary(out)]
    assert len(losses) == 3 and losses[-1] < losses[0], losses  # finite (nan fails <) and learning
    scaler = torch.load(out / "last.pt", weights_only=True)["scaler"]
    assert scaler and 0 < scaler["scale"] < float("inf"), "an enabled scaler's state is kept for resuming"
    assert json.loads((out / "metrics.json").read_text())["test"]["n"] == 12


def test_fp16_gpus_skip_nonfinite_steps_and_resume(data, tmp_path, fp16_gpu, monkeypatch):
    """A NaN loss every third step: the GradScaler skips those updates and lowers its scale, the weights stay
    finite; a run stopped after its first epoch resumes with the scaler's state and finishes."""
    data_dir, subset = data
    real = hybrid_asl.engine.weighted_loss
    calls = [0]

    def poisoned(*args):
        calls[0] += 1
        loss = real(*args)
        return loss * float("nan") if calls[0] % 3 == 0 else loss
    monkeypatch.setattr(hybrid_asl.engine, "weighted_loss", poisoned)
    real_summary = fp16_gpu["write_summary"]

    def stop_after_first_epoch(path, history):
        real_summary(path, history)
        raise KeyboardInterrupt
    monkeypatch.setitem(fp16_gpu, "write_summary", stop_after_first_epoch)
    out = tmp_path / "run"
    assert train_main(["--data_dir", str(data_dir), "--subset", subset, "--epochs", "2", *DETERMINISTIC,
                       "--output_dir", str(out)]) == 130
    first = torch.load(out / "last.pt", weights_only=True)
    assert first["epoch"] == 1 and first["scaler"]["scale"] < 65536.0, "poisoned steps lowered the initial scale"
    monkeypatch.setitem(fp16_gpu, "write_summary", real_summary)
    assert train_main(["--resume", str(out / "last.pt")]) == 0
    rows = summary(out)
    assert [int(r["epoch"]) for r in rows] == [1, 2] and sum(int(r["skipped_steps"]) for r in rows) > 0
    last = torch.load(out / "last.pt", weights_only=True)
    assert all(torch.isfinite(t).all() for t in last["model"].values()), "weights never become non-finite"
