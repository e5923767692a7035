"""Behaviour of the signer-invariant landmark channels.  python -m pytest tests/test_landmark_features.py -q"""
from pathlib import Path

import numpy as np
import pytest
import torch

from hybrid_asl.landmarks import (LANDMARK_DIM, NORMALIZED_DIM, channel_statistics, clip_centre_scale,
                                  landmark_feature_dim, make_landmark_features)

LANDMARKS = Path(__file__).resolve().parents[2] / "shared" / "data" / "landmarks"
BODY, LHAND, RHAND, VEL, PRES = slice(0, 162), slice(162, 225), slice(225, 288), slice(288, 450), slice(450, 453)


def synthetic_clip(T=12, seed=0, left=True, right=True, pose=True):
    """One plausible clip: shoulders ~0.3 apart, hands near the chest, small motion; (T,162)."""
    g = np.random.default_rng(seed)
    pts = np.zeros((T, 54, 3), np.float32)
    base = np.zeros((54, 3), np.float32)
    base[42:54, :2] = g.uniform(0.3, 0.7, (12, 2))
    base[42, :2], base[43, :2] = (0.65, 0.4), (0.35, 0.42)      # MediaPipe 11 (left) / 12 (right)
    base[42:54, 2] = g.uniform(-0.5, 0.0, 12)
    for h, cx in ((0, 0.6), (21, 0.4)):
        base[h:h + 21, :2] = np.array([cx, 0.7]) + g.normal(0, 0.04, (21, 2))
        base[h + 1:h + 21, 2] = g.normal(0, 0.02, 20)
    for t in range(T):
        pts[t] = base + g.normal(0, 0.01, (54, 3)) * np.array([1, 1, 0.2]) + 0.005 * t
        pts[t, [0, 21], 2] = 0.0                                   # MediaPipe hand z is wrist-relative
    if not left:
        pts[:, 0:21] = 0
    if not right:
        pts[:, 21:42] = 0
    if not pose:
        pts[:, 42:54] = 0
    return torch.from_numpy(pts.reshape(T, 162))


def move(clip, s=1.0, dx=0.0, dy=0.0):
    """Scale (x,y,z) by s and translate x,y, detected points only (what a different camera distance does)."""
    pts = clip.reshape(*clip.shape[:-1], 54, 3).clone()
    det = (pts != 0).any(-1, keepdim=True)
    pts = pts * s + torch.tensor([dx, dy, 0.0])
    return torch.where(det, pts, torch.zeros_like(pts)).reshape(clip.shape)


def test_dims_and_raw_passthrough():
    x = synthetic_clip()[None]
    m = torch.ones(1, x.shape[1], dtype=torch.bool)
    assert landmark_feature_dim(False) == LANDMARK_DIM == 162
    assert landmark_feature_dim(True) == NORMALIZED_DIM == 453
    assert make_landmark_features(x, m, normalize=True).shape == (1, x.shape[1], 453)
    assert torch.equal(make_landmark_features(x, m, normalize=False), x)


def test_invariant_to_translation_and_scale_but_raw_is_not():
    x = torch.stack([synthetic_clip(seed=1), synthetic_clip(seed=2, left=False)])
    m = torch.ones(2, x.shape[1], dtype=torch.bool)
    y = move(x, s=1.7, dx=0.21, dy=-0.13)
    a, b = make_landmark_features(x, m, True), make_landmark_features(y, m, True)
    assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()
    assert not torch.allclose(make_landmark_features(x, m, False), make_landmark_features(y, m, False), atol=1e-2)


def test_pose_depth_is_centred_on_the_shoulders():
    x = synthetic_clip(seed=11)[None]
    m = torch.ones(1, x.shape[1], dtype=torch.bool)
    y = x.clone()
    y[..., 128:162:3] += 0.4                                        # MediaPipe pose z offset (relative to hips)
    assert torch.allclose(make_landmark_features(x, m, True), make_landmark_features(y, m, True), atol=1e-5)


def test_invariance_without_shoulders_uses_fallback():
    x = synthetic_clip(seed=3, pose=False)[None]                  # hands only: no shoulder in any frame
    m = torch.ones(1, x.shape[1], dtype=torch.bool)
    a = make_landmark_features(x, m, True)
    b = make_landmark_features(move(x, s=0.6, dx=-0.2, dy=0.3), m, True)
    assert torch.allclose(a, b, atol=1e-4)
    assert a.abs().max() < 20                                      # scaled by the spread, not by ~0
    assert (a[0, :, PRES] == torch.tensor([1.0, 1.0, 0.0])).all()


def test_missing_shoulders_in_some_frames_keep_clip_centre():
    x = synthetic_clip(seed=4)
    x[:, 42 * 3:] = x[0, 42 * 3:]                                   # static pose: every frame has the same centre
    m = torch.ones(1, x.shape[0], dtype=torch.bool)
    y = x.clone()
    y[::2, 42 * 3:] = 0                                             # pose lost in half of the frames
    a, b = make_landmark_features(x[None], m, True), make_landmark_features(y[None], m, True)
    assert torch.allclose(a[0, :, :126], b[0, :, :126], atol=1e-5)  # hands placed exactly as before
    assert (b[0, ::2, 126:162] == 0).all() and (b[0, ::2, 452] == 0).all()


def test_undetected_parts_stay_exactly_zero():
    x = synthetic_clip(seed=5)
    x[3:7, 0:63] = 0                                                # left hand lost for 4 frames
    m = torch.ones(1, x.shape[0], dtype=torch.bool)
    f = make_landmark_features(x[None], m, True)[0]
    assert (f[3:7, 0:63] == 0).all()                                # body channels of the left hand
    assert (f[3:7, LHAND] == 0).all()                               # wrist-relative channels
    assert (f[3:8, VEL][:, 0:63] == 0).all()                        # no velocity into or out of a gap
    assert (f[3:7, 450] == 0).all() and (f[:3, 450] == 1).all() and (f[7:, 450] == 1).all()
    assert (f[3:7, 63:126] != 0).any()                              # the right hand is still there
    assert (f[8:, VEL][:, 0:63] != 0).any()


def test_padding_is_zero_and_does_not_leak():
    T = 12
    x = synthetic_clip(T, seed=6)[None]
    m = torch.zeros(1, T, dtype=torch.bool)
    m[0, :7] = True
    junk = x.clone()
    junk[0, 7:] = torch.rand(T - 7, 162) * 5                        # garbage where the mask says padding
    a = make_landmark_features(junk, m, True)
    b = make_landmark_features(x[:, :7], m[:, :7], True)
    assert (a[0, 7:] == 0).all()
    assert torch.allclose(a[0, :7], b[0], atol=1e-6)


def test_batch_equals_one_clip_at_a_time():
    clips = [synthetic_clip(10, seed=s, left=s % 2 == 0, pose=s != 3) for s in range(5)]
    x = torch.stack(clips)
    m = torch.ones(5, 10, dtype=torch.bool)
    m[1, 6:] = False
    x[1, 6:] = 0
    batched = make_landmark_features(x, m, True)
    for i in range(5):
        assert torch.allclose(batched[i], make_landmark_features(x[i:i + 1], m[i:i + 1], True)[0], atol=1e-6)


def test_known_velocity_and_hand_scale():
    x = synthetic_clip(6, seed=7)
    x[:, 42 * 3:] = x[0, 42 * 3:]
    pts = x.reshape(6, 54, 3)
    pts[:, 0:21] = pts[0, 0:21]
    pts[:, 0:21, 0] += 0.01 * torch.arange(6)[:, None]              # left hand moves right 0.01 per frame
    m = torch.ones(1, 6, dtype=torch.bool)
    f = make_landmark_features(pts.reshape(1, 6, 162), m, True)[0]
    _, scale = clip_centre_scale(pts.reshape(1, 6, 162), m)
    assert torch.allclose(f[1:, 288:288 + 63:3], torch.full((5, 21), 0.01 / scale.item()), atol=1e-5)
    assert (f[0, VEL] == 0).all()
    local = f[:, LHAND].reshape(6, 21, 3)
    assert (local[:, 0] == 0).all()                                 # wrist at the origin
    assert torch.allclose(local[0], local[5], atol=1e-5)            # pure translation: same hand shape
    assert 0.99 <= local.norm(dim=-1)[:, [5, 9, 17]].amax().item() <= 1.0 + 1e-5


def test_finite_on_degenerate_input():
    T = 8
    x = torch.zeros(4, T, 162)
    x[1] = synthetic_clip(T, seed=8)
    x[1, :, 126:132] = torch.tensor([0.5, 0.5, 0.0, 0.5, 0.5, 0.0])  # both shoulders on the same spot
    x[2, :, 0:3] = 0.3                                              # one lonely point
    x[3] = 1e6 * synthetic_clip(T, seed=9)
    m = torch.ones(4, T, dtype=torch.bool)
    m[0, 3:] = False
    f = make_landmark_features(x, m, True)
    assert torch.isfinite(f).all()
    assert (f[0] == 0).all()                                        # all-zero clip stays all zero
    # a single point is its own centre (x,y -> 0), spread 0 -> scale 1 (hand z is never centred)
    assert (f[2, :, 3:450] == 0).all() and torch.allclose(f[2, :, 0:3], torch.tensor([0.0, 0.0, 0.3]))
    assert (f[2, :, 450:] == torch.tensor([1.0, 0.0, 0.0])).all()
    assert torch.allclose(f[3], make_landmark_features(x[3:4] / 1e6, m[3:4], True)[0], atol=1e-3)
    nan = x.clone()
    nan[1, 2, 5] = float("nan")
    assert torch.isfinite(make_landmark_features(nan, m, True)).all()


def _real_sets():
    if not LANDMARKS.is_dir():
        pytest.skip(f"{LANDMARKS} not present (only beside the project checkout)")
    out = {}
    for name in ("bsl16_162.npz", "isl13_162.npz"):
        d = np.load(LANDMARKS / name)
        out[name] = (torch.from_numpy(d["X"][:64]), torch.ones(min(64, len(d["X"])), d["X"].shape[1], dtype=torch.bool))
    d = np.load(LANDMARKS / "wlasl_small_fullvideo_162.npz")
    T = 48
    x = torch.zeros(64, T, 162)
    m = torch.zeros(64, T, dtype=torch.bool)
    for i in range(64):
        n = min(T, int(d["lengths"][i]))
        x[i, :n] = torch.from_numpy(d["frames"][d["offsets"][i]:d["offsets"][i] + n])
        m[i, :n] = True
    out["wlasl_small_fullvideo_162.npz"] = (x, m)
    return out


def test_real_landmarks_invariance_presence_and_range():
    for name, (x, m) in _real_sets().items():
        f = make_landmark_features(x, m, True)
        assert torch.isfinite(f).all(), name
        assert (f[~m] == 0).all(), name
        pts = x.reshape(*x.shape[:2], 54, 3)
        lh = (pts[:, :, :21] != 0).any(-1).any(-1) & m
        assert torch.equal(f[..., 450].bool(), lh), name
        assert (f[..., 162:225][~lh] == 0).all(), name
        # shoulder-normalized body coordinates of real upper bodies stay within a few shoulder widths
        body_xy = f[..., BODY].reshape(*f.shape[:2], 54, 3)[..., :2]
        assert body_xy.abs().quantile(0.99) < 5, name
        g = make_landmark_features(move(x, s=0.5, dx=0.3, dy=0.1), m, True)
        assert torch.allclose(f, g, atol=1e-3), (name, (f - g).abs().max())


def test_real_wlasl_ahmed_pose_bug_does_not_break_centre():
    """ahmed clips lose the pose whenever the left hand is missing (NOTES.md): the clip centre must come from
    the frames that have it, so the right hand is placed consistently in frames with and without pose."""
    x, m = _real_sets()["wlasl_small_fullvideo_162.npz"]
    f = make_landmark_features(x, m, True)
    pose = f[..., 452].bool()
    partial = (pose.sum(1) > 0) & ((~pose & m).sum(1) > 0)
    assert partial.any()
    rh = f[..., 63:126].reshape(*f.shape[:2], 21, 3)[..., 0, :2]
    seen = (x[..., 63:66] != 0).any(-1) & m
    for i in torch.nonzero(partial).flatten().tolist():
        a, b = rh[i][seen[i] & pose[i]], rh[i][seen[i] & ~pose[i]]
        if len(a) and len(b):
            assert (a.mean(0) - b.mean(0)).abs().max() < 2.0        # same body frame, not a jump of 1/scale


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    x = torch.stack([synthetic_clip(seed=s, pose=s != 1, right=s != 0) for s in range(3)])   # clip 0: left-handed
    m = torch.ones(3, x.shape[1], dtype=torch.bool)
    m[2, 5:] = False
    cpu = make_landmark_features(x, m, True, hand_shape=True, hand_frame=True, mirror_left_handed=True)
    gpu = make_landmark_features(x.cuda(), m.cuda(), True, hand_shape=True, hand_frame=True, mirror_left_handed=True)
    assert gpu.device.type == "cuda"
    assert torch.allclose(cpu, gpu.cpu(), atol=1e-5)


def test_channel_statistics_count_real_frames_only():
    clips = torch.stack([synthetic_clip(T=12, seed=s) for s in range(5)])
    lengths = np.array([12, 7, 12, 3, 9])
    padded = clips.clone()
    for i, n in enumerate(lengths):
        padded[i, n:] = 1e3                                   # padding must not count, whatever it holds
    mean, std = channel_statistics(padded.numpy(), lengths, normalize=True, chunk=2)
    mask = torch.arange(12)[None] < torch.as_tensor(lengths)[:, None]
    real = make_landmark_features(clips, mask, True)[mask].double()
    assert torch.allclose(mean.double(), real.mean(0), atol=1e-5)
    assert torch.allclose(std.double(), real.std(0, unbiased=False).clamp(min=1e-2), atol=1e-5)
    assert (std >= 1e-2).all() and mean.shape == (NORMALIZED_DIM,)


def test_channel_statistics_leave_out_broken_frames():
    """A clip with values near the float32 limit (a broken tracker) must not decide every channel's scale."""
    clips = torch.stack([synthetic_clip(T=10, seed=s) for s in range(4)])
    lengths = np.full(4, 10)
    clean = channel_statistics(clips.numpy(), lengths)
    broken = torch.cat([clips, torch.full((1, 10, LANDMARK_DIM), 3e38)]).numpy()
    robust = channel_statistics(broken, np.full(5, 10))
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(clean, robust))
    mean, std = channel_statistics(torch.full((2, 4, LANDMARK_DIM), 3e38), np.full(2, 4))
    assert (mean == 0).all() and (std == 1).all()           # nothing sane: identity


# ---------------------------------------------------------------------------------------------------------------
# --hand_shape: joint-bend cosines and fingertip distances (channels 453..503)

LSHAPE, RSHAPE = slice(453, 478), slice(478, 503)


def rotation(angles):
    """The 3-D rotation matrix that turns about x, then y, then z by `angles` (radians)."""
    rot = torch.eye(3)
    for axis, a in enumerate(angles):
        c, s_ = np.cos(a), np.sin(a)
        i, j = [k for k in range(3) if k != axis]
        r = torch.eye(3)
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s_, s_, c
        rot = r @ rot
    return rot


def rotate_hand(clip, hand, angles, s=1.0, shift=(0.0, 0.0, 0.0)):
    """The clip with one hand (0 left, 1 right) turned in 3-D about its wrist by `angles` (x, y, z, radians),
    scaled by s and moved: what another signer holding the same handshape at another angle does."""
    rot = rotation(angles)
    pts = clip.reshape(clip.shape[0], 54, 3).clone()
    block = pts[:, 21 * hand:21 * hand + 21]
    wrist = block[:, :1]
    pts[:, 21 * hand:21 * hand + 21] = (block - wrist) @ rot.T * s + wrist + torch.tensor(shift)
    return pts.reshape(clip.shape)


def test_hand_shape_ignores_the_hands_rotation_size_and_place_but_sees_a_bent_finger():
    clip = synthetic_clip()
    mask = torch.ones(1, clip.shape[0], dtype=torch.bool)
    features = lambda c: make_landmark_features(c[None], mask, hand_shape=True)[0]  # noqa: E731
    plain = features(clip)
    assert plain.shape[-1] == landmark_feature_dim(True, hand_shape=True) == NORMALIZED_DIM + 50 == 503
    assert torch.equal(plain[:, :NORMALIZED_DIM], make_landmark_features(clip[None], mask)[0])  # appended only
    turned = features(rotate_hand(clip, 1, (0.4, -0.3, 1.1), s=1.3, shift=(0.05, -0.02, 0.0)))
    assert torch.allclose(turned[:, RSHAPE], plain[:, RSHAPE], atol=1e-4)
    assert torch.equal(turned[:, LSHAPE], plain[:, LSHAPE])
    assert not torch.allclose(turned[:, RHAND], plain[:, RHAND], atol=1e-2)  # the hand-local points do change

    straight = clip.reshape(-1, 54, 3).clone()
    straight[:, 21 + 5:21 + 9] = straight[:, 21:22] + torch.tensor([0.0, -0.02, 0.0]) * torch.arange(1, 5)[:, None]
    bent = straight.clone()
    bent[:, 21 + 8] = bent[:, 21 + 7] + torch.tensor([0.02, 0.0, 0.0])   # the index fingertip folded by 90 degrees
    straight_shape, bent_shape = (features(c.reshape(-1, 162))[:, RSHAPE] for c in (straight, bent))
    index_joints = slice(3, 6)  # the index finger's knuckle, middle and last joint
    assert torch.allclose(straight_shape[:, index_joints], torch.full_like(straight_shape[:, index_joints], -1.0),
                          atol=1e-5)                                       # a straight finger: cos 180 degrees
    assert torch.allclose(bent_shape[:, 5], torch.zeros_like(bent_shape[:, 5]), atol=1e-5)  # a right angle
    assert torch.equal(bent_shape[:, :5], straight_shape[:, :5])


def test_hand_shape_of_an_unseen_hand_is_zero_and_its_statistics_are_kept():
    from hybrid_asl.landmarks import LandmarkPreprocessor
    clip = synthetic_clip(left=False)
    mask = torch.ones(1, clip.shape[0], dtype=torch.bool)
    shape = make_landmark_features(clip[None], mask, hand_shape=True)[0]
    assert (shape[:, LSHAPE] == 0).all() and (shape[:, RSHAPE] != 0).any()
    mean, std = channel_statistics(clip[None], [clip.shape[0]], hand_shape=True)
    assert mean.shape == std.shape == (503,)
    prepare = LandmarkPreprocessor(True, mean, std, hand_shape=True)
    again = LandmarkPreprocessor.from_state(prepare.state())
    assert again.hand_shape and torch.equal(again(clip[None], mask), prepare(clip[None], mask))
    older = {k: v for k, v in prepare.state().items() if k != "hand_shape"}   # a checkpoint from before the flag
    older.update(mean=mean[:NORMALIZED_DIM], std=std[:NORMALIZED_DIM])
    assert LandmarkPreprocessor.from_state(older)(clip[None], mask).shape[-1] == NORMALIZED_DIM


# ---------------------------------------------------------------------------------------------------------------
# --hand_frame: each hand in its own frame (63) and its orientation (6); channels 453..591 without --hand_shape

LFRAME, RFRAME = slice(453, 522), slice(522, 591)


def test_hand_frame_keeps_the_shape_whatever_the_rotation_and_turns_the_orientation_with_the_hand():
    clip = synthetic_clip()
    mask = torch.ones(1, clip.shape[0], dtype=torch.bool)
    features = lambda c: make_landmark_features(c[None], mask, hand_frame=True)[0]  # noqa: E731
    plain = features(clip)
    assert plain.shape[-1] == landmark_feature_dim(True, hand_frame=True) == NORMALIZED_DIM + 138
    assert landmark_feature_dim(True, True, True) == NORMALIZED_DIM + 50 + 138
    assert torch.equal(plain[:, :NORMALIZED_DIM], make_landmark_features(clip[None], mask)[0])  # appended only
    angles = (0.4, -0.3, 1.1)
    turned = features(rotate_hand(clip, 1, angles, s=1.3, shift=(0.05, -0.02, 0.0)))
    right, right_turned = plain[:, RFRAME], turned[:, RFRAME]
    assert torch.allclose(right_turned[:, :63], right[:, :63], atol=1e-4)      # the shape: unchanged
    assert torch.equal(turned[:, LFRAME], plain[:, LFRAME])
    for axis in (slice(63, 66), slice(66, 69)):                                 # pointing direction, palm normal
        assert torch.allclose(right_turned[:, axis], right[:, axis] @ rotation(angles).T, atol=1e-4)
        assert torch.allclose(right[:, axis].norm(dim=-1), torch.ones(len(right)), atol=1e-5)
    assert not torch.allclose(right_turned[:, 63:], right[:, 63:], atol=1e-2)  # the orientation did change

    bent = clip.reshape(-1, 54, 3).clone()
    bent[:, 21 + 8] = bent[:, 21 + 7] + (bent[:, 21 + 7] - bent[:, 21 + 6]).flip(-1)   # the index tip moved
    assert not torch.allclose(features(bent.reshape(-1, 162))[:, RFRAME][:, 24:27], right[:, 24:27], atol=1e-3)


def test_hand_frame_of_an_unseen_hand_is_zero_and_the_flag_is_kept_in_the_state():
    from hybrid_asl.landmarks import LandmarkPreprocessor
    clip = synthetic_clip(left=False)
    mask = torch.ones(1, clip.shape[0], dtype=torch.bool)
    frame = make_landmark_features(clip[None], mask, hand_frame=True)[0]
    assert (frame[:, LFRAME] == 0).all() and (frame[:, RFRAME] != 0).any() and torch.isfinite(frame).all()
    mean, std = channel_statistics(clip[None], [clip.shape[0]], hand_shape=True, hand_frame=True)
    prepare = LandmarkPreprocessor(True, mean, std, hand_shape=True, hand_frame=True)
    again = LandmarkPreprocessor.from_state(prepare.state())
    assert again.hand_frame and torch.equal(again(clip[None], mask), prepare(clip[None], mask))
    assert again(clip[None], mask).shape[-1] == NORMALIZED_DIM + 50 + 138
    older = {k: v for k, v in prepare.state().items() if k != "hand_frame"}    # a checkpoint from before the flag
    older.update(mean=mean[:NORMALIZED_DIM + 50], std=std[:NORMALIZED_DIM + 50])
    assert LandmarkPreprocessor.from_state(older)(clip[None], mask).shape[-1] == NORMALIZED_DIM + 50


# ---------------------------------------------------------------------------------------------------------------
# --mirror_left_handed: a clip signed with the left hand becomes its right-handed mirror image

def with_hands(clip, left_frames, right_frames):
    """The clip with its left hand seen in the first left_frames frames only, its right hand in right_frames."""
    out = clip.clone()
    out[left_frames:, 0:63] = 0
    out[right_frames:, 63:126] = 0
    return out


def test_mirror_left_handed_turns_a_left_handed_clip_into_its_right_handed_twin():
    from hybrid_asl.landmarks import left_handed, mirror_landmarks
    right = synthetic_clip(T=12, left=False)[None]                     # a one-handed sign, right hand
    mask = torch.ones(1, 12, dtype=torch.bool)
    left = mirror_landmarks(right, mask)                               # the same sign, left hand: a mirror image
    assert (left[..., 63:126] == 0).all() and (left[..., 0:63] != 0).any()
    for normalize in (True, False):
        on = lambda c: make_landmark_features(c, mask, normalize, hand_shape=normalize,  # noqa: E731
                                              mirror_left_handed=True)
        assert torch.allclose(on(left), on(right), atol=1e-5)        # the left-handed clip now reads as the right
        assert torch.equal(on(right), make_landmark_features(right, mask, normalize, hand_shape=normalize))
        assert not torch.allclose(make_landmark_features(left, mask, normalize),
                                  make_landmark_features(right, mask, normalize), atol=1e-2)   # off: they differ

    both = synthetic_clip(T=12)
    cases = {(12, 12): False, (12, 6): False, (12, 5): True, (3, 0): True, (0, 0): False, (0, 12): False}
    clips = torch.stack([with_hands(both, lf, rf) for lf, rf in cases])
    assert left_handed(clips, torch.ones(len(cases), 12, dtype=torch.bool)).tolist() == list(cases.values())
    # only real frames count: a left hand seen in the padding is no left hand
    padded = torch.ones(1, 12, dtype=torch.bool)
    padded[0, 4:] = False
    assert not left_handed(with_hands(both, 12, 2)[None], padded).item()
    assert left_handed(with_hands(both, 12, 2)[None], torch.ones(1, 12, dtype=torch.bool)).item()
    # a two-handed clip is left as it is
    assert torch.equal(make_landmark_features(both[None], mask, mirror_left_handed=True),
                       make_landmark_features(both[None], mask))


def test_mirror_left_handed_is_in_the_statistics_and_the_state():
    from hybrid_asl.landmarks import LandmarkPreprocessor, mirror_landmarks
    right = torch.stack([synthetic_clip(T=12, seed=s, left=False) for s in range(3)])
    mask = torch.ones(3, 12, dtype=torch.bool)
    left = mirror_landmarks(right, mask)
    lengths = [12, 12, 12]
    on = channel_statistics(left, lengths, mirror_left_handed=True)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(on, channel_statistics(right, lengths)))
    assert not torch.allclose(channel_statistics(left, lengths)[0], on[0], atol=1e-2)
    prepare = LandmarkPreprocessor(True, *on, mirror_left_handed=True)
    again = LandmarkPreprocessor.from_state(prepare.state())
    assert again.mirror_left_handed and torch.equal(again(left, mask), prepare(left, mask))
    older = {k: v for k, v in prepare.state().items() if k != "mirror_left_handed"}   # from before the flag
    assert not LandmarkPreprocessor.from_state(older).mirror_left_handed
    assert LandmarkPreprocessor(False, mirror_left_handed=True).state()["mirror_left_handed"]   # raw input too


def test_the_count_of_mirrored_training_clips_reads_real_frames_of_a_packed_split():
    """The run's log says how many training clips --mirror_left_handed mirrors: counted over a packed (numpy, padded)
    split in chunks, real frames only."""
    from hybrid_asl.landmarks import LandmarkPreprocessor, left_handed_count
    both = synthetic_clip(T=12)
    # left-handed: left seen in 12 frames, right in 0 / 5; two-handed; and a left hand that is only in the padding
    packed = torch.stack([with_hands(both, 12, 0), with_hands(both, 12, 5), both, with_hands(both, 12, 0)]).numpy()
    lengths = np.array([12, 12, 12, 12])
    assert left_handed_count(packed, lengths, chunk=3) == 3
    packed[3, :, 63:126] = 0
    packed[3, :4, 0:63] = 0                                       # left hand from frame 4 on, right hand never
    assert left_handed_count(packed, np.array([12, 12, 12, 4]), chunk=2) == 2   # 4 real frames: no hand seen
    assert left_handed_count(packed, lengths, chunk=2) == 3
    line = LandmarkPreprocessor(True, torch.zeros(641), torch.ones(641), True, True, True).describe()
    assert line == "641 channels per frame (shoulder-normalized, standardized, hand shapes, hand frames)"
    assert LandmarkPreprocessor(False).describe() == "162 channels per frame (raw coordinates)"
