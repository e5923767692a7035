"""--ensemble N: N independently initialised copies of the model, trained side by side on the same batches, each on
its own loss, predicting with the mean of their class probabilities."""
import json
import subprocess
import sys
from contextlib import nullcontext
from types import SimpleNamespace

import torch

import evaluate
import predict
from helpers import ROOT, one_error_line, train_run, train_script
from hybrid_asl.batches import Batch
from hybrid_asl.engine import make_train_step, weighted_loss
from hybrid_asl.landmarks import LandmarkPreprocessor
from hybrid_asl.recipe import build_model, model_config
from hybrid_asl_model import Ensemble
from hybrid_asl_model_simple import SimpleHybridASLModel

DEMO = ROOT / "data" / "demo"


def tiny(members):
    args = train_script()["build_parser"]().parse_args(
        ["--modality", "landmarks", "--hidden_dim", "16", "--num_heads", "2", "--num_layers", "1",
         "--no_landmark_norm", "--ensemble", str(members)])
    return build_model(model_config(args, 4, None))


def clips(B=5, T=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.arange(T)[None] < torch.tensor([T, T, 4, 2, 1][:B])[:, None]
    return torch.rand(B, T, 162, generator=g) * mask[..., None], mask


def test_members_start_apart_and_predict_with_their_mean_probability():
    torch.manual_seed(0)
    model = tiny(3).eval()
    assert isinstance(model, Ensemble) and len(model.members) == 3
    heads = [m.classifier[-1].weight for m in model.members]
    assert not torch.allclose(heads[0], heads[1]) and not torch.allclose(heads[1], heads[2])
    x, mask = clips()
    with torch.no_grad():
        mean = torch.stack([m(None, x, mask).softmax(-1) for m in model.members]).mean(0)
        out = model(None, x, mask)
    assert torch.allclose(out.exp(), mean, atol=1e-6)   # softmax(out) is the mean; out is already its log
    # one member (and every checkpoint from before --ensemble, which has no "members") is the plain model
    one = tiny(1)
    assert type(one) is SimpleHybridASLModel
    config = model_config(SimpleNamespace(**vars(train_script()["build_parser"]().parse_args([]))), 4, 8)
    del config["members"]
    assert type(build_model(config)) is SimpleHybridASLModel


def test_each_member_learns_from_its_own_loss():
    torch.manual_seed(0)
    model = tiny(2).eval()   # no dropout: the step and the reference below see the same numbers
    with torch.no_grad():    # members that disagree, so their mean's loss differs from the mean of their losses
        for member in model.members:
            member.classifier[-1].weight.normal_(0, 1.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=torch.tensor(0.0), fused=True)  # the CLI's optimizer
    step = make_train_step(model, LandmarkPreprocessor(False), optimizer,
                           SimpleNamespace(label_smoothing=0.1, grad_clip=1e9), torch.ones(4), nullcontext(), None,
                           torch.amp.GradScaler("cuda", enabled=False), None, torch.zeros(()), torch.zeros(()))
    x, mask = clips()
    batch = Batch(None, x, mask, torch.tensor([0, 1, 2, 3, 0]), torch.ones(5))
    loss = step(batch)[0]
    own = [weighted_loss(m(None, x, mask), batch.labels, batch.weight, torch.ones(4), 0.1) for m in model.members]
    assert torch.allclose(loss, (own[0] + own[1]) / 2, atol=1e-6)
    joint = weighted_loss(model(None, x, mask), batch.labels, batch.weight, torch.ones(4), 0.1)
    assert not torch.allclose(loss, joint, atol=1e-3)   # not one loss of the members' mean
    # a member's gradient is its own loss's (over the number of members): the other member does not enter it
    for member, member_loss in zip(model.members, own):
        reference = torch.autograd.grad(member_loss / 2, list(member.parameters()))
        for p, g in zip(member.parameters(), reference):
            assert torch.allclose(p.grad, g, atol=1e-6)


def test_an_ensemble_run_trains_evaluates_and_predicts(tmp_path, capsys):
    out = tmp_path / "run"
    assert train_run(["--demo", "--modality", "landmarks", "--ensemble", "2", "--epochs", "3",
                      "--output_dir", out]) == 0
    checkpoint = torch.load(out / "best.pt", weights_only=True)
    assert checkpoint["model_config"]["members"] == 2
    assert any(name.startswith("members.1.") for name in checkpoint["model"])
    test = json.loads((out / "metrics.json").read_text())["test"]
    assert evaluate.run(["--checkpoint", str(out / "best.pt"), "--split", "test", "--device", "cpu"]) == 0
    again = json.loads((out / "eval_test" / "metrics.json").read_text())["test"]
    assert again["n"] == test["n"] > 0
    assert abs(again["top1"] - test["top1"]) < 1e-9 and abs(again["loss"] - test["loss"]) < 1e-4
    clip = next(iter(sorted((DEMO / "landmarks").glob("*_landmarks.npy"))))
    capsys.readouterr()
    assert predict.run(["--checkpoint", str(out / "best.pt"), "--landmarks", str(clip), "--device", "cpu"]) == 0
    assert "1." in capsys.readouterr().out

    # a resumed ensemble continues with all its members; another member count is refused in one line
    assert train_run(["--resume", out / "last.pt", "--epochs", "4"]) == 0
    resumed = torch.load(out / "last.pt", weights_only=True)
    assert resumed["epoch"] == 4 and resumed["model_config"]["members"] == 2
    refused = subprocess.run([sys.executable, str(ROOT / "train_simple.py"), "--resume", str(out / "last.pt"),
                              "--epochs", "5", "--ensemble", "3"], capture_output=True, text=True)
    one_error_line(refused, 2, "--ensemble", "drop those flags")
