"""Protocol 5's options (BENCHMARKS.md): mixup on sequences, the conv encoder, test-time flip averaging."""
import subprocess
import sys

import torch

from helpers import ROOT
from hybrid_asl.augment import mix_clips
from hybrid_asl.batches import Batch
from hybrid_asl.engine import inference_logits, weighted_loss
from hybrid_asl.landmarks import LandmarkPreprocessor, mirror_landmarks
from hybrid_asl_model_simple import SimpleHybridASLModel


def clips(B=4, T=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([T, T - 3, 5, 1][:B])
    mask = torch.arange(T)[None] < lengths[:, None]
    landmarks = torch.rand(B, T, 162, generator=g) * mask[..., None]
    landmarks[:, :, :63] = 0  # the left hand undetected: zeros must stay zeros
    return landmarks, mask


def test_conv_encoder_gives_a_padded_clip_the_logits_of_the_unpadded_clip():
    torch.manual_seed(0)
    model = SimpleHybridASLModel(5, hidden_dim=32, num_heads=4, modality="landmarks", encoder="conv").eval()
    assert sum(type(m).__name__ == "ConvBlock" for m in model.modules()) == 6  # 3 before each of 2 layers
    x = torch.randn(1, 7, 162)
    padded = torch.cat([x, torch.randn(1, 5, 162)], 1)  # garbage in the padding: the mask must hide it
    mask = torch.arange(12)[None] < 7
    with torch.no_grad():
        assert torch.allclose(model(None, x, None), model(None, padded, mask), atol=1e-5)


def test_mix_clips_off_changes_nothing_and_on_mixes_real_frames_only():
    x, mask = clips()
    weight = torch.tensor([1.0, 1.0, 1.0, 0.0])  # the last row only pads the batch
    _, same, _, lam = mix_clips(None, x, mask, weight, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(same, x) and torch.equal(lam, torch.ones(4))
    _, mixed, partner, lam = mix_clips(None, x, mask, weight, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(partner, torch.tensor([1, 2, 3, 0]))
    assert lam[2] == 1 and lam[3] == 1            # never mixed with, or as, a padding row
    assert ((lam[:2] >= 0.5) & (lam[:2] < 1)).all()
    assert torch.equal(mixed[~mask], x[~mask])     # padding frames untouched
    # row 0 (12 frames) with row 1 (9 frames) time-resampled to 12: frame j takes the partner's frame j * 9 // 12
    src = torch.arange(12) * 9 // 12
    assert torch.allclose(mixed[0], lam[0] * x[0] + (1 - lam[0]) * x[1, src])


def test_mixed_loss_is_the_plain_loss_at_lam_1_and_mixes_both_labels():
    logits = torch.randn(4, 3)
    labels, weight = torch.tensor([0, 1, 2, 1]), torch.ones(4)
    cw = torch.tensor([1.0, 2.0, 0.5])
    plain = weighted_loss(logits, labels, weight, cw, 0.1)
    partner = torch.tensor([1, 2, 3, 0])
    assert torch.allclose(weighted_loss(logits, labels, weight, cw, 0.1, partner, torch.ones(4)), plain)
    swapped = weighted_loss(logits, labels[partner], weight, cw, 0.1)
    assert torch.allclose(weighted_loss(logits, labels, weight, cw, 0.1, partner, torch.zeros(4)), swapped)


def test_flip_averaging_scores_a_clip_and_its_mirror_image_alike():
    x, mask = clips()
    twice = mirror_landmarks(mirror_landmarks(x, mask), mask)
    assert torch.allclose(twice, x)
    assert (mirror_landmarks(x, mask)[:, :, 63:126] == 0).all()  # the undetected left hand is now the right hand
    torch.manual_seed(0)
    model = SimpleHybridASLModel(5, hidden_dim=32, num_heads=4, modality="landmarks", landmark_dim=453).eval()
    prepare = LandmarkPreprocessor(True)
    batch = Batch(None, x, mask, None, None)
    flipped = Batch(None, mirror_landmarks(x, mask), mask, None, None)
    with torch.no_grad():
        tta, tta_of_mirror = (inference_logits(model, prepare, b, tta_flip=True) for b in (batch, flipped))
        plain = inference_logits(model, prepare, batch)
    assert torch.allclose(tta, tta_of_mirror, atol=1e-5)          # the average is mirror-invariant
    assert torch.allclose(tta.exp().sum(1), torch.ones(4), atol=1e-5)  # log of averaged probabilities
    assert not torch.allclose(tta, plain.log_softmax(1), atol=1e-3)


def test_option_combinations_that_cannot_work_are_refused_in_one_line():
    for flags, named in ((["--modality", "gemma", "--tta_flip"], "--tta_flip"),
                         (["--model", "full", "--encoder", "conv"], "--encoder conv"),
                         (["--modality", "landmarks", "--hand_shape", "--no_landmark_norm"], "--hand_shape"),
                         (["--modality", "gemma", "--hand_frame"], "--hand_frame"),
                         (["--modality", "gemma", "--mirror_left_handed"], "--mirror_left_handed")):
        done = subprocess.run([sys.executable, str(ROOT / "train_simple.py"), *flags], capture_output=True, text=True)
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert named in done.stderr.strip().splitlines()[-1]
