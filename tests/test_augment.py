"""Behaviour of the batched training augmentation.  python -m pytest tests/test_augment.py -q"""
import argparse
from pathlib import Path

import numpy as np
import pytest
import torch

from hybrid_asl.augment import (AUGMENT_PRESETS, FAMILIAR, PROB_KEYS, add_augment_args, augment_batch,
                                augment_config_from_args)
from hybrid_asl.landmarks import clip_centre_scale, make_landmark_features

LANDMARKS = Path(__file__).resolve().parents[2] / "shared" / "data" / "landmarks"


def only(**kw):
    """The 'none' preset with just the given settings switched on."""
    return {**AUGMENT_PRESETS["none"], **kw}


def batch(B=6, T=16, D=8, seed=0):
    """Clips with lengths T, T-3, ..., plausible bodies, a missing left hand in clip 1; padding zero."""
    g = torch.Generator().manual_seed(seed)
    pts = torch.zeros(B, T, 54, 3)
    pts[..., :2] = 0.3 + 0.4 * torch.rand(B, T, 54, 2, generator=g)
    pts[..., 2] = -0.1 * torch.rand(B, T, 54, generator=g)
    pts[:, :, 42, :2] = torch.tensor([0.65, 0.4])
    pts[:, :, 43, :2] = torch.tensor([0.35, 0.4])
    pts[1, :, 0:21] = 0
    lengths = torch.tensor([max(1, T - 3 * i) for i in range(B)])
    mask = torch.arange(T)[None] < lengths[:, None]
    lm = pts.reshape(B, T, 162) * mask[..., None]
    gemma = torch.randn(B, T, D, generator=g) * mask[..., None]
    return gemma, lm, mask


def frame_ids(T, B=6, seed=0):
    """Landmarks whose x encodes the source frame number (t+1) so the time warp can be read back."""
    g, lm, mask = batch(B, T, seed=seed)
    lm = lm.reshape(B, T, 54, 3).clone()
    lm[..., 0] = (torch.arange(T, dtype=torch.float32) + 1)[None, :, None]
    lm = lm.reshape(B, T, 162) * mask[..., None]
    lm.reshape(B, T, 54, 3)[1, :, 0:21] = 0
    return g, lm, mask


def left_aligned(mask):
    return torch.equal(mask, torch.arange(mask.shape[1])[None] < mask.sum(1, keepdim=True))


def test_none_is_identity_and_presets_complete():
    g, lm, m = batch()
    out = augment_batch(g, lm, m, AUGMENT_PRESETS["none"], torch.Generator().manual_seed(0))
    assert out[0] is g and out[1] is lm and out[2] is m
    assert set(AUGMENT_PRESETS) == {"none", "light", "strong"}
    for name, cfg in AUGMENT_PRESETS.items():
        assert set(PROB_KEYS) <= set(cfg)
        assert cfg["mirror_p"] == 0.0, name                         # opt-in only
    assert all(AUGMENT_PRESETS["strong"][k] >= AUGMENT_PRESETS["light"][k] for k in PROB_KEYS)


def test_inputs_not_modified_and_deterministic():
    g, lm, m = batch()
    copies = [t.clone() for t in (g, lm, m)]
    cfg = {**AUGMENT_PRESETS["strong"], "mirror_p": 0.5}
    a = augment_batch(g, lm, m, cfg, torch.Generator().manual_seed(7))
    b = augment_batch(g, lm, m, cfg, torch.Generator().manual_seed(7))
    c = augment_batch(g, lm, m, cfg, torch.Generator().manual_seed(8))
    for orig, now in zip(copies, (g, lm, m)):
        assert torch.equal(orig, now)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert not torch.equal(a[1], c[1])
    assert not torch.equal(a[1], lm[:, :, :]) and a[1].shape == lm.shape and a[0].shape == g.shape


def test_speed_resampling_keeps_masks_left_aligned_with_right_lengths():
    T = 16
    g, lm, m = frame_ids(T)
    cfg = only(speed_p=1.0)
    seen_fast = seen_slow = False
    for seed in range(20):
        g2, lm2, m2 = augment_batch(g, lm, m, cfg, torch.Generator().manual_seed(seed))
        assert left_aligned(m2)
        L, L2 = m.sum(1), m2.sum(1)
        assert (L2 >= torch.round(L / 1.3)).all() and (L2 <= torch.clamp(torch.round(L / 0.7), max=T)).all()
        assert (lm2[~m2] == 0).all() and (g2[~m2] == 0).all()
        ids = lm2.reshape(*lm2.shape[:2], 54, 3)[:, :, 30, 0]        # right-hand point: present everywhere
        for b in range(lm.shape[0]):
            n = int(L2[b])
            src = ids[b, :n]
            assert (src >= 1).all() and (src <= L[b]).all()          # only real frames of the same clip
            assert (src[1:] >= src[:-1]).all()                       # time never runs backwards
            # gemma frames follow the same time warp as the landmarks
            assert torch.equal(g2[b, :n], g[b, src.long() - 1])
        seen_fast |= bool((L2 < L).any())
        seen_slow |= bool((L2 > L).any())
    assert seen_fast and seen_slow


def test_crop_is_contiguous_and_left_aligned():
    T = 16
    g, lm, m = frame_ids(T)
    _, lm2, m2 = augment_batch(g, lm, m, only(crop_p=1.0, crop_min=0.5), torch.Generator().manual_seed(3))
    assert left_aligned(m2)
    L, L2 = m.sum(1), m2.sum(1)
    assert (L2 <= L).all() and (L2 >= torch.round(0.5 * L).clamp(min=1)).all() and (L2 < L).any()
    ids = lm2.reshape(*lm2.shape[:2], 54, 3)[:, :, 30, 0]
    for b in range(len(L)):
        src = ids[b, :int(L2[b])]
        assert torch.equal(src[1:] - src[:-1], torch.ones(len(src) - 1))
        assert src[-1] <= L[b]
    assert (ids[:, 0] > 1).any()                                       # the window does not always start at 0


def test_mirror_swaps_hands_and_pose_and_twice_is_identity():
    g, lm, m = batch()
    cfg = only(mirror_p=1.0)
    _, lm2, m2 = augment_batch(g, lm, m, cfg, torch.Generator().manual_seed(0))
    p, q = lm.reshape(*lm.shape[:2], 54, 3), lm2.reshape(*lm.shape[:2], 54, 3)
    assert torch.equal(m2, m)
    assert torch.allclose(q[m][:, 0:21, 0], 1 - p[m][:, 21:42, 0])       # new left = flipped old right
    assert torch.equal(q[..., 0:21, 1:], p[..., 21:42, 1:])
    assert (q[1, :, 21:42] == 0).all()                                 # clip 1 had no left hand
    assert torch.allclose(q[m][:, 42, 0], 1 - p[m][:, 43, 0])          # pose 11 <-> 12
    assert torch.equal(q[..., 44, 1:], p[..., 45, 1:])                 # pose 13 <-> 14 (elbows)
    assert (q[~m] == 0).all()
    _, lm3, _ = augment_batch(g, lm2, m2, cfg, torch.Generator().manual_seed(1))
    assert torch.allclose(lm3, lm, atol=1e-6)
    assert torch.equal(lm3 == 0, lm == 0)


def test_spatial_transforms_touch_detected_points_only():
    g, lm, m = batch()
    pres = lm.reshape(*lm.shape[:2], 54, 3).ne(0).any(-1)
    _, rot, _ = augment_batch(g, lm, m, only(rotate_p=1.0, rotate_deg=30.0), torch.Generator().manual_seed(0))
    r = rot.reshape(*rot.shape[:2], 54, 3)
    assert torch.equal(r.ne(0).any(-1), pres)                          # zeros stay zeros, nothing vanishes
    p = lm.reshape(*lm.shape[:2], 54, 3)
    d0 = (p[..., 0:1, :2] - p[..., 5:6, :2]).norm(dim=-1)
    d1 = (r[..., 0:1, :2] - r[..., 5:6, :2]).norm(dim=-1)
    assert torch.allclose(d0, d1, atol=1e-5)                           # rotation keeps distances
    assert not torch.allclose(p, r, atol=1e-3)
    c0, _ = clip_centre_scale(lm, m)
    c1, _ = clip_centre_scale(rot, m)
    assert torch.allclose(c0[:, :2], c1[:, :2], atol=1e-5)             # around the shoulder centre
    _, sc, _ = augment_batch(g, lm, m, only(scale_p=1.0, scale_range=0.3, aspect_range=0.0),
                             torch.Generator().manual_seed(0))
    _, s0 = clip_centre_scale(lm, m)
    _, s1 = clip_centre_scale(sc, m)
    assert ((s1 / s0 - 1).abs() <= 0.3 + 1e-5).all() and ((s1 / s0 - 1).abs() > 1e-3).any()
    # normalization removes pure scale + translation: the model sees the same channels
    _, st, _ = augment_batch(g, lm, m, only(scale_p=1.0, aspect_range=0.0, translate_p=1.0),
                             torch.Generator().manual_seed(2))
    assert torch.allclose(make_landmark_features(st, m, True), make_landmark_features(lm, m, True), atol=1e-4)


def test_hand_dropout_zeroes_exactly_one_hand():
    g, lm, m = batch()
    _, lm2, m2 = augment_batch(g, lm, m, only(hand_drop_p=1.0), torch.Generator().manual_seed(0))
    p, q = lm.reshape(*lm.shape[:2], 54, 3), lm2.reshape(*lm.shape[:2], 54, 3)
    left = (q[:, :, 0:21] == 0).all(-1).all(-1).all(-1)
    right = (q[:, :, 21:42] == 0).all(-1).all(-1).all(-1)
    assert ((left | right)).all() and torch.equal(m2, m)
    for b in range(len(m)):
        keep = slice(21, 54) if left[b] and b != 1 else slice(0, 21)
        if b == 1 and not right[b]:                                    # clip 1 has no left hand anyway
            keep = slice(21, 54)
        assert torch.equal(q[b, :, keep], p[b, :, keep])
        assert torch.equal(q[b, :, 42:], p[b, :, 42:])


def test_frame_masking_same_frames_both_streams_mask_kept():
    g, lm, m = batch(B=8)
    g2, lm2, m2 = augment_batch(g, lm, m, only(frame_mask_p=1.0, frame_mask_ratio=0.5),
                                torch.Generator().manual_seed(0))
    assert torch.equal(m2, m)
    zl = (lm2 == 0).all(-1) & m
    zg = (g2 == 0).all(-1) & m
    assert torch.equal(zl, zg) and zl.any()
    assert (zl.sum(1) < m.sum(1)).all()                                # never all real frames
    kept = m & ~zl
    assert torch.equal(lm2[kept], lm[kept]) and torch.equal(g2[kept], g[kept])
    _, lm3, _ = augment_batch(g, lm, m, only(frame_mask_p=1.0, frame_mask_ratio=0.95),
                              torch.Generator().manual_seed(0))
    assert (((lm3 != 0).any(-1) & m).sum(1) >= 1).all()               # short clips keep at least one frame


def test_gemma_noise_and_dropout_real_frames_only_and_none_gemma():
    g, lm, m = batch(D=64)
    g2, lm2, m2 = augment_batch(g, lm, m, only(gemma_noise_p=1.0), torch.Generator().manual_seed(0))
    assert torch.equal(lm2, lm) and torch.equal(m2, m)
    assert (g2[~m] == 0).all() and not torch.allclose(g2[m], g[m])
    rel = ((g2 - g)[m].std() / g[m].std()).item()
    assert 0.05 < rel < 0.2                                            # gemma_noise_std=0.1 of the clip RMS
    g3, _, _ = augment_batch(g, lm, m, only(gemma_drop_p=1.0, gemma_drop_ratio=0.25),
                             torch.Generator().manual_seed(0))
    for b in range(len(m)):
        dropped = (g3[b][m[b]] == 0).all(0)                            # whole channels, for every frame
        assert 0 < dropped.sum() < 64
        assert torch.allclose(g3[b][m[b]][:, ~dropped] * 0.75, g[b][m[b]][:, ~dropped], atol=1e-6)
    out = augment_batch(None, lm, m, AUGMENT_PRESETS["strong"], torch.Generator().manual_seed(0))
    assert out[0] is None and out[1].shape == lm.shape


def test_args_presets_and_overrides():
    p = argparse.ArgumentParser()
    add_augment_args(p)
    group = next(gr for gr in p._action_groups if gr.title == "augmentation")
    flags = {a.dest for a in group._group_actions}
    # normalization is not augmentation; the familiar flags of the replaced project live here too
    assert {"augment", "mixup"} | {f"aug_{k}" for k in PROB_KEYS} | set(FAMILIAR) == flags
    assert all(a.help for a in group._group_actions)
    a = p.parse_args([])
    assert a.augment is None  # the preset follows the modality (Protocol 4 chose strong for landmarks alone)
    assert augment_config_from_args(a) == AUGMENT_PRESETS["light"]
    a.modality = "landmarks"
    assert augment_config_from_args(a) == AUGMENT_PRESETS["strong"]
    a = p.parse_args(["--augment", "strong", "--aug_mirror_p", "0.5", "--aug_rotate_p", "0"])
    cfg = augment_config_from_args(a)
    assert cfg["mirror_p"] == 0.5 and cfg["rotate_p"] == 0.0
    assert cfg["speed_p"] == AUGMENT_PRESETS["strong"]["speed_p"]
    for bad in (["--aug_mirror_p", "1.5"], ["--aug_rotate_p", "x"], ["--augment", "huge"]):
        with pytest.raises(SystemExit) as e:
            p.parse_args(bad)
        assert e.value.code == 2


def test_familiar_flags_map_to_settings():
    p = argparse.ArgumentParser()
    add_augment_args(p)
    assert augment_config_from_args(p.parse_args(["--no_augmentation"])) == AUGMENT_PRESETS["none"]
    cfg = augment_config_from_args(p.parse_args(
        ["--temporal_jitter", "0.3", "--temporal_mask_prob", "0.4", "--feature_dropout", "0.25",
         "--feature_noise", "0.05", "--landmark_jitter", "0.01"]))
    assert cfg["speed_p"] == 0.3 and cfg["frame_mask_p"] == 0.4
    assert cfg["gemma_drop_p"] == 1.0 and cfg["gemma_drop_ratio"] == 0.25
    assert cfg["gemma_noise_p"] == 1.0 and cfg["gemma_noise_std"] == 0.05
    assert cfg["jitter_p"] == 1.0 and cfg["jitter_std"] == 0.01
    off = augment_config_from_args(p.parse_args(["--feature_dropout", "0", "--landmark_jitter", "0"]))
    assert off["gemma_drop_p"] == 0.0 and off["jitter_p"] == 0.0
    # an explicit --aug_*_p flag wins over the familiar one
    assert augment_config_from_args(p.parse_args(["--temporal_jitter", "0.3", "--aug_speed_p", "0.9"]))["speed_p"] == 0.9


def test_landmark_jitter_moves_detected_points_only():
    B, T = 4, 8
    lm = torch.rand(B, T, 162) * 0.5 + 0.25
    lm[:, :, :63] = 0  # left hand undetected
    mask = torch.ones(B, T, dtype=torch.bool)
    cfg = dict(AUGMENT_PRESETS["none"], jitter_p=1.0, jitter_std=0.02)
    _, out, m = augment_batch(None, lm, mask, cfg, torch.Generator().manual_seed(0))
    assert torch.equal(m, mask)
    assert torch.all(out[:, :, :63] == 0)
    moved = (out[:, :, 63:] - lm[:, :, 63:]).abs()
    assert moved.max() > 0 and moved.mean() < 0.05
    _, same, _ = augment_batch(None, lm, mask, AUGMENT_PRESETS["none"], torch.Generator().manual_seed(0))
    assert torch.equal(same, lm)


def test_strong_on_real_landmarks_keeps_invariants():
    path = LANDMARKS / "wlasl_small_fullvideo_162.npz"
    if not path.exists():
        pytest.skip(f"{path} not present (only beside the project checkout)")
    d = np.load(path)
    T, B = 16, 48
    lm = torch.zeros(B, T, 162)
    m = torch.zeros(B, T, dtype=torch.bool)
    for i in range(B):
        j = i * 5
        n = int(d["lengths"][j])
        idx = np.linspace(0, n - 1, min(n, T)).round().astype(int) if n >= T else np.arange(n)
        lm[i, :len(idx)] = torch.from_numpy(d["frames"][d["offsets"][j] + idx])
        m[i, :len(idx)] = True
    cfg = {**AUGMENT_PRESETS["strong"], "mirror_p": 0.5}
    _, lm2, m2 = augment_batch(None, lm, m, cfg, torch.Generator().manual_seed(0))
    assert left_aligned(m2) and (m2.sum(1) >= 1).all()
    assert (lm2[~m2] == 0).all() and torch.isfinite(lm2).all()
    # no part appears out of nothing: a detected hand count can only drop (dropout, masking) or swap (mirror)
    hands = lambda x: (x.reshape(*x.shape[:2], 54, 3)[:, :, :42] != 0).any(-1).reshape(*x.shape[:2], 2, 21).any(-1)
    assert hands(lm2).sum() <= hands(lm).sum() * 1.5
    f = make_landmark_features(lm2, m2, True)
    assert torch.isfinite(f).all() and (f[~m2] == 0).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu_with_cpu_generator():
    g, lm, m = batch()
    cfg = {**AUGMENT_PRESETS["strong"], "mirror_p": 0.5}
    cpu = augment_batch(g, lm, m, cfg, torch.Generator().manual_seed(5))
    gpu = augment_batch(g.cuda(), lm.cuda(), m.cuda(), cfg, torch.Generator().manual_seed(5))
    assert gpu[1].device.type == "cuda"
    assert torch.equal(cpu[2], gpu[2].cpu())
    assert torch.allclose(cpu[1], gpu[1].cpu(), atol=1e-5) and torch.allclose(cpu[0], gpu[0].cpu(), atol=1e-4)
    cuda_gen = torch.Generator(device="cuda").manual_seed(5)
    out = augment_batch(g.cuda(), lm.cuda(), m.cuda(), cfg, cuda_gen)
    assert out[1].device.type == "cuda" and torch.isfinite(out[1]).all()


def test_generator_none_uses_the_default_generator():
    g, lm, m = batch()
    cfg = {**AUGMENT_PRESETS["strong"], "mirror_p": 0.5}
    torch.manual_seed(3)
    a = augment_batch(g, lm, m, cfg, None)
    torch.manual_seed(3)
    b = augment_batch(g, lm, m, cfg, None)
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and not torch.equal(a[1], lm)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_augment_and_features_capture_in_a_cuda_graph():
    """train_simple replays the training step as a CUDA graph (generator None): no host sync or host copy."""
    g, lm, m = (t.cuda() for t in batch())
    cfg = {**AUGMENT_PRESETS["strong"], "mirror_p": 0.5}
    static = [t.clone() for t in (g, lm, m)]

    def step():
        g2, lm2, m2 = augment_batch(static[0], static[1], static[2], cfg, None)
        return g2, make_landmark_features(lm2, m2, True), m2

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = step()
    graph.replay()
    first = [t.clone() for t in out]
    graph.replay()
    assert torch.isfinite(out[1]).all() and (out[1][~out[2]] == 0).all()
    assert not torch.equal(first[1], out[1])                            # fresh random draws on every replay
