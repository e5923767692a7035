"""Landmark normalization, in one place: signer-invariant channels of the 162-dim MediaPipe layout, standardized
with training-split statistics. LandmarkPreprocessor prepares the landmarks of every clip in training,
evaluation, prediction and the exported ONNX graph; its statistics are saved in the checkpoint beside the model.

    from hybrid_asl.landmarks import LandmarkPreprocessor, make_landmark_features, landmark_feature_dim
    x = make_landmark_features(landmarks, mask, normalize=True)   # (B,T,162) -> (B,T,453)
    model_input_dim = landmark_feature_dim(normalize=True)       # 453
    prepare = LandmarkPreprocessor(normalize=True, mean=mean, std=std)   # statistics from channel_statistics
    model_input = prepare(landmarks, mask)                        # the channels, standardized

Input layout per frame (see clips.LANDMARK_DIM): 54 points x (x, y, z) =
[left hand 21 pts | right hand 21 pts | MediaPipe pose 11..22 (12 pts)], normalized image coordinates,
an undetected part is all zeros. Everything runs on the batch's device; there is no loop over clips.

normalize=False: the raw 162 channels are returned unchanged (the plain legacy input, C = 162).

normalize=True: C = 453 channels per frame, in this order:
    [  0:162) body   54 pts x (x,y,z): (p - centre) / scale. centre = clip-level shoulder midpoint
                     (median over frames where both shoulders, pose 11 and 12, are detected), scale =
                     clip-level median shoulder width (2-D). z is centred on the shoulders for pose points
                     only (MediaPipe hand z is already relative to the wrist). Fallback when shoulders are
                     never detected in the clip: centre = mean of all detected points, scale = their RMS
                     spread around it, or 1 if that is degenerate.
    [162:225) lhand  21 pts x (x,y,z) of the left hand relative to its wrist (point 0), divided by the
                     hand size (largest 3-D palm distance among wrist-index MCP, wrist-middle MCP,
                     wrist-pinky MCP, index MCP-pinky MCP) of the same frame
    [225:288) rhand  the same for the right hand
    [288:450) vel    frame-to-frame difference of the body channels; 0 at the first frame and wherever the
                     point is undetected in either of the two frames
    [450:453) pres   1.0/0.0 per frame: left hand detected, right hand detected, pose detected
hand_shape=True (--hand_shape) appends 50 channels, C = 503: how each hand is formed, whatever its position, size and
in-plane or 3-D rotation (signers hold the same handshape at different angles):
    [453:478) lshape the cosine of the bend at each finger's three joints (15: thumb, index, middle, ring, pinky,
                     from the knuckle out), then the distances between the five fingertips over the hand size (10)
    [478:503) rshape the same for the right hand
hand_frame=True (--hand_frame) appends 138 more channels (after the hand shapes when both are on): each hand in its own
frame, i.e. its shape and its orientation apart. The frame's axes: u from the wrist to the middle finger's knuckle
(where the hand points), w across the palm (pinky knuckle to index knuckle, made orthogonal to u), n = w x u (the
palm's normal); a rotation of the hand turns all three with it.
    lframe   21 pts x (w, u, n) coordinates of the left hand relative to its wrist, over the hand size (63: the
             same whatever the hand's rotation, position and size), then u and n in image axes (6: the orientation)
    rframe   the same for the right hand
mirror_left_handed=True (--mirror_left_handed) changes no channel count: before anything else, a clip whose left hand
is seen in more than LEFT_HANDED_RATIO times as many real frames as its right hand is mirrored (x -> 1 - x, left and
right swapped), so a sign made with the left hand alone looks like the same sign made with the right. Two-handed clips,
where both hands are seen about as often, are left alone.
A point that was not detected is exactly 0 in every channel (never -centre/scale), so together with the
presence channels a zero is never mistaken for a position. Padding frames (mask False) are all zeros.
The output is finite for any finite input (all-zero clips included); NaN input is treated as undetected.
"""
import numpy as np
import torch
import torch.nn as nn

from hybrid_asl.clips import LANDMARK_DIM

NUM_POINTS = 54                      # 21 + 21 + 12
LEFT_HAND = slice(0, 21)
RIGHT_HAND = slice(21, 42)
POSE = slice(42, 54)
L_SHOULDER, R_SHOULDER = 42, 43      # MediaPipe pose 11 and 12 = first two points of the pose block
PALM_PAIRS = ((0, 5), (0, 9), (0, 17), (5, 17))  # wrist/MCP distances: stable under finger motion
MIN_SCALE = 1e-4                     # below this a width/size is degenerate (coincident points)
NORMALIZED_DIM = 162 + 63 + 63 + 162 + 3
MAX_SANE = 1e3                      # |channel| beyond this is a tracker failure, not a position
HAND_FLAGS = ("hand_shape", "hand_frame")   # the options that append hand channels, in their order
PREPARE_FLAGS = HAND_FLAGS + ("mirror_left_handed",)  # every option the preprocessor is built with
LEFT_HANDED_RATIO = 2  # left seen > 2x as often as right: left-handed (a plain > would flip two-handed clips at random)
SHAPE_DIM = 5 * 3 + 10   # per hand: three joint bends per finger, the 10 fingertip pairs
FRAME_DIM = 21 * 3 + 6   # per hand: its points in its own frame, its pointing direction and palm normal


def landmark_feature_dim(normalize: bool, hand_shape: bool = False, hand_frame: bool = False) -> int:
    """Channels per frame produced by make_landmark_features."""
    if not normalize:
        return LANDMARK_DIM
    return NORMALIZED_DIM + (2 * SHAPE_DIM if hand_shape else 0) + (2 * FRAME_DIM if hand_frame else 0)


def point_presence(landmarks):
    """(B,T,162) -> (B,T,54) bool: a point is detected when any of its coordinates is non-zero."""
    pts = landmarks.reshape(*landmarks.shape[:-1], NUM_POINTS, 3)
    return (pts != 0).any(-1)


def _mirror_perm(device):
    """Point order after mirroring: left<->right hand, pose 11<->12, 13<->14, ..., 21<->22.
    Built with device ops (no host copy), so it can be captured in a CUDA graph."""
    i = torch.arange(NUM_POINTS, device=device)
    return torch.where(i < 21, i + 21, torch.where(i < 42, i - 21, 42 + ((i - 42) ^ 1)))


def mirrored_points(pts, present):
    """(B,T,54,3) points, (B,T,54) detected -> the mirror image: x -> 1 - x, left/right blocks swapped; undetected
    points stay 0."""
    perm = _mirror_perm(pts.device)
    flipped = pts[:, :, perm]
    flipped = torch.cat([1 - flipped[..., :1], flipped[..., 1:]], -1)
    return torch.where(present[:, :, perm][..., None], flipped, torch.zeros_like(flipped))


def mirror_landmarks(landmarks, mask):
    """Raw landmarks (B,T,162) + mask -> the mirror image of every clip (what --aug_mirror_p trains on; test-time
    flip averaging, --tta_flip, scores both)."""
    B, T, _ = landmarks.shape
    present = point_presence(landmarks) & mask.bool()[..., None]
    return mirrored_points(landmarks.reshape(B, T, NUM_POINTS, 3), present).reshape(B, T, -1).to(landmarks.dtype)


def left_handed(landmarks, mask):
    """(B,T,162), (B,T) -> (B,) bool: the clip's left hand is seen in more than LEFT_HANDED_RATIO times as many real
    frames as its right hand (a left hand alone counts; no hand at all does not)."""
    seen = point_presence(landmarks) & mask.bool()[..., None]
    left, right = seen[:, :, LEFT_HAND].any(-1).sum(1), seen[:, :, RIGHT_HAND].any(-1).sum(1)
    return left > LEFT_HANDED_RATIO * right


def as_right_handed(landmarks, mask):
    """--mirror_left_handed: every left_handed clip of the batch mirrored, the others as they are."""
    flip = left_handed(landmarks, mask)[:, None, None]
    return torch.where(flip, mirror_landmarks(landmarks, mask), landmarks)


def masked_lower_median(values, valid, dim):
    """torch.nanmedian(torch.where(valid, values, nan), dim).values, in a form that exports to ONNX (nanmedian has no
    ONNX form): the element at sorted position (n - 1) // 2 of the n valid entries (nanmedian's lower median), NaN
    where none is valid. Sorting and gathering move elements and compute nothing, so the result is nanmedian's bit
    for bit (a zero may differ in sign: which of the tied 0.0 and -0.0 either one picks is unspecified).
    values (..., N, ...) float; valid broadcastable to it."""
    valid = valid.expand_as(values)
    inf = torch.full((), float("inf"), device=values.device, dtype=values.dtype)  # no host copy: CUDA-graph safe
    ordered = torch.where(valid, values, inf).sort(dim=dim).values                  # invalid entries sort last
    n = valid.sum(dim, keepdim=True)
    picked = ordered.gather(dim, (n - 1).clamp(min=0) // 2).squeeze(dim)
    nan = torch.full((), float("nan"), device=values.device, dtype=values.dtype)
    return torch.where(n.squeeze(dim) > 0, picked, nan)


def clip_centre_scale(landmarks, mask):
    """Per clip body centre (B,3) and scale (B,) from real frames (mask True) and detected points.

    Shoulder midpoint / shoulder width (median over frames with both shoulders) when available,
    else the mean / RMS spread of all detected points, else scale 1. z of the centre is the shoulder
    midpoint depth (0 in the fallback)."""
    B, T, _ = landmarks.shape
    pts = landmarks.reshape(B, T, NUM_POINTS, 3)
    present = point_presence(landmarks) & mask[:, :, None]

    l_sh, r_sh = pts[:, :, L_SHOULDER], pts[:, :, R_SHOULDER]
    width = (l_sh[..., :2] - r_sh[..., :2]).norm(dim=-1)                        # (B,T)
    sh_ok = present[:, :, L_SHOULDER] & present[:, :, R_SHOULDER] & (width > MIN_SCALE)
    # median, not mean: robust to the odd frame where the pose jumps to a wrong person/pose
    sh_centre = masked_lower_median((l_sh + r_sh) / 2, sh_ok[..., None], dim=1)
    sh_width = masked_lower_median(width, sh_ok, dim=1)
    has_sh = sh_ok.any(1)

    w = present.to(pts.dtype)                                                   # (B,T,54)
    n = w.sum((1, 2)).clamp(min=1)
    mean_xy = (pts[..., :2] * w[..., None]).sum((1, 2)) / n[:, None]            # (B,2)
    sq = ((pts[..., :2] - mean_xy[:, None, None]) ** 2).sum(-1)
    spread = ((sq * w).sum((1, 2)) / n).sqrt()
    spread = torch.where(spread > MIN_SCALE, spread, torch.ones_like(spread))
    fb_centre = torch.cat([mean_xy, torch.zeros_like(mean_xy[:, :1])], dim=1)

    centre = torch.where(has_sh[:, None], torch.nan_to_num(sh_centre), fb_centre)
    scale = torch.where(has_sh, torch.nan_to_num(sh_width, nan=1.0), spread)
    return centre, scale


def _hand_size(hand):
    """hand (B,T,21,3) -> (B,T): the largest palm distance of the frame."""
    return torch.stack([(hand[:, :, a] - hand[:, :, b]).norm(dim=-1) for a, b in PALM_PAIRS], -1).amax(-1)


def _hand_local(rel, ok, size):
    """rel (B,T,21,3) points relative to the wrist, ok (B,T,21), size (B,T) -> (B,T,63) rel / hand size."""
    ok = ok & ok[:, :, :1] & (size > MIN_SCALE)[..., None]   # needs a wrist and a real palm this frame
    local = torch.where(ok[..., None], rel / size.clamp(min=MIN_SCALE)[..., None, None], torch.zeros_like(rel))
    return local.flatten(2)


def _hand_shape(hand, seen, size):
    """hand (B,T,21,3), seen (B,T), size (B,T) -> (B,T,25): joint-bend cosines and fingertip distances / hand size;
    0 where the hand is not seen (all of its points and a real palm) in the frame."""
    B, T = hand.shape[:2]
    # each finger as a chain wrist, knuckle, ..., tip (MediaPipe: thumb 1-4, index 5-8, ..., pinky 17-20); the bend
    # at a joint is the angle between the bones to the points before and after it (slices only: no index copies,
    # which a CUDA-graph capture forbids)
    chain = torch.cat([hand[:, :, None, :1].expand(B, T, 5, 1, 3), hand[:, :, 1:].reshape(B, T, 5, 4, 3)], 3)
    joint = chain[:, :, :, 1:4]
    before, after = chain[:, :, :, 0:3] - joint, chain[:, :, :, 2:5] - joint
    lengths = before.norm(dim=-1) * after.norm(dim=-1)
    bend = ((before * after).sum(-1) / lengths.clamp(min=MIN_SCALE ** 2)).clamp(-1, 1).flatten(2)
    tips = chain[:, :, :, 4]
    gaps = torch.cat([(tips[:, :, i + 1:] - tips[:, :, i:i + 1]).norm(dim=-1) for i in range(4)], -1)  # 10 pairs
    shape = torch.cat([bend, gaps / size.clamp(min=MIN_SCALE)[..., None]], -1)
    return torch.where(seen[..., None], shape, torch.zeros_like(shape))


def _unit(v):
    """(..., 3) -> the unit vectors and (...) whether each vector is long enough to have a direction."""
    length = v.norm(dim=-1, keepdim=True)
    return v / length.clamp(min=MIN_SCALE), length[..., 0] > MIN_SCALE


def _hand_frame(rel, seen, size):
    """rel (B,T,21,3) points relative to the wrist, seen (B,T), size (B,T) -> (B,T,69): the 21 points in the hand's own
    (w, u, n) frame over the hand size, then u and n; 0 where the hand is not seen or its frame is degenerate."""
    u, u_ok = _unit(rel[:, :, 9])                            # wrist -> middle knuckle: where the hand points
    across = rel[:, :, 5] - rel[:, :, 17]                    # pinky knuckle -> index knuckle
    w, w_ok = _unit(across - (across * u).sum(-1, keepdim=True) * u)
    (wx, wy, wz), (ux, uy, uz) = w.unbind(-1), u.unbind(-1)
    n = torch.stack([wy * uz - wz * uy, wz * ux - wx * uz, wx * uy - wy * ux], -1)   # w x u, a unit vector
    axes = torch.stack([w, u, n], -2)                                               # (B,T,3,3), rows w, u, n
    local = (rel @ axes.transpose(-1, -2)) / size.clamp(min=MIN_SCALE)[..., None, None]
    frame = torch.cat([local.flatten(2), u, n], -1)
    return torch.where((seen & u_ok & w_ok)[..., None], frame, torch.zeros_like(frame))


def make_landmark_features(landmarks, mask, normalize: bool = True, hand_shape: bool = False,
                           hand_frame: bool = False, mirror_left_handed: bool = False):
    """(B,T,162) raw landmarks + (B,T) bool mask -> (B,T,C) model input; layout in the module docstring."""
    if not normalize and not mirror_left_handed:
        return landmarks
    B, T, D = landmarks.shape
    assert D == LANDMARK_DIM, f"expected {LANDMARK_DIM} landmark channels, got {D}"
    mask = mask.bool()
    x = torch.nan_to_num(landmarks.float(), nan=0.0, posinf=0.0, neginf=0.0)
    x = x * mask[..., None]                                                      # padding never counts
    if mirror_left_handed:
        x = as_right_handed(x, mask)
    if not normalize:
        return x
    pts = x.reshape(B, T, NUM_POINTS, 3)
    present = point_presence(x) & mask[..., None]                               # (B,T,54)

    centre, scale = clip_centre_scale(x, mask)
    # hand z is wrist-relative in MediaPipe, so only pose z is centred on the shoulders
    point_centre = centre[:, None, None, :].expand(B, 1, NUM_POINTS, 3).clone()
    point_centre[:, :, :42, 2] = 0
    body = (pts - point_centre) / scale[:, None, None, None]
    body = torch.where(present[..., None], body, torch.zeros_like(body))        # undetected stays 0

    # what every hand channel needs, computed once per hand: its points, which are detected, its points relative to
    # the wrist, its size, and whether all of it (with a real palm) is seen in the frame
    hands = []
    for part in (LEFT_HAND, RIGHT_HAND):
        hand, ok = pts[:, :, part], present[:, :, part]
        size = _hand_size(hand)
        hands.append((hand, ok, hand - hand[:, :, :1], size, ok.all(-1) & (size > MIN_SCALE)))
    lhand, rhand = (_hand_local(rel, ok, size) for _, ok, rel, size, _ in hands)

    # motion only where the point is seen in both frames: appear/disappear is not a velocity
    both = present[:, 1:] & present[:, :-1]
    vel = torch.where(both[..., None], body[:, 1:] - body[:, :-1], torch.zeros_like(body[:, 1:]))
    vel = torch.cat([torch.zeros_like(body[:, :1]), vel], dim=1)

    pres = torch.stack([present[:, :, LEFT_HAND].any(-1), present[:, :, RIGHT_HAND].any(-1),
                        present[:, :, POSE].any(-1)], dim=-1).float()

    parts = [body.flatten(2), lhand, rhand, vel.flatten(2), pres]
    if hand_shape:
        parts += [_hand_shape(hand, seen, size) for hand, _, _, size, seen in hands]
    if hand_frame:
        parts += [_hand_frame(rel, seen, size) for _, _, rel, size, seen in hands]
    return torch.cat(parts, dim=-1) * mask[..., None]


def _packed_chunks(landmarks, lengths, chunk):
    """(x (b,T,162) float, mask (b,T)) over a packed split's landmarks (N,T,162) (numpy or torch) and lengths (N,)."""
    for start in range(0, len(landmarks), chunk):
        x = torch.as_tensor(np.array(landmarks[start:start + chunk], dtype=np.float32)
                            if isinstance(landmarks, np.ndarray) else landmarks[start:start + chunk]).float()
        n = torch.as_tensor(np.array(lengths[start:start + chunk], dtype=np.int64), device=x.device)
        yield x, torch.arange(x.shape[1], device=x.device)[None] < n[:, None]


def left_handed_count(landmarks, lengths, chunk=1024):
    """How many clips of a packed split --mirror_left_handed mirrors (for the run's log)."""
    return sum(int(left_handed(x, mask).sum()) for x, mask in _packed_chunks(landmarks, lengths, chunk))


def channel_statistics(landmarks, lengths, normalize=True, chunk=1024, hand_shape=False, hand_frame=False,
                       mirror_left_handed=False):
    """Mean and std (C,) of each model input channel over the real frames of a packed split: landmarks (N,T,162)
    (numpy or torch), lengths (N,).

    A frame with a value beyond MAX_SANE (a broken tracker; sane normalized channels are within a few units) is
    left out, so one bad clip cannot squash every channel of the run. The std is floored at 1e-2 so that a channel
    that is (nearly) constant in training, e.g. a hand never detected, is not blown up when it moves at test time.
    """
    total, total_sq, count = 0.0, 0.0, 0
    for x, mask in _packed_chunks(landmarks, lengths, chunk):
        f = make_landmark_features(x, mask, normalize, hand_shape, hand_frame, mirror_left_handed)[mask]  # real frames
        f = f[(f.abs() <= MAX_SANE).all(dim=1)].double()                       # NaN fails the test too
        total, total_sq, count = total + f.sum(0), total_sq + (f * f).sum(0), count + len(f)
    if count == 0:  # nothing sane to measure: leave the input as it is
        dim = landmark_feature_dim(normalize, hand_shape, hand_frame)
        return torch.zeros(dim), torch.ones(dim)
    mean = total / count
    std = (total_sq / count - mean * mean).clamp(min=0).sqrt()
    return mean.float(), std.clamp(min=1e-2).float()


class LandmarkPreprocessor(nn.Module):
    """Raw landmarks (B,T,162) + mask -> the model's landmark input: make_landmark_features' channels (the raw 162
    with normalize=False), standardized per channel when statistics are given ((x - mean) / std, as the ridge
    baseline's StandardScaler does: channels differ in scale by 100x, positions against frame-to-frame motion).

    state() / from_state() are what a checkpoint keeps: {"normalize", "mean", "std", *PREPARE_FLAGS} (mean/std None:
    not standardized; a missing flag: a checkpoint from before that flag, made without it).
    """

    def __init__(self, normalize=True, mean=None, std=None, hand_shape=False, hand_frame=False,
                 mirror_left_handed=False):
        super().__init__()
        self.normalize = bool(normalize)
        self.hand_shape = bool(hand_shape) and self.normalize
        self.hand_frame = bool(hand_frame) and self.normalize
        self.mirror_left_handed = bool(mirror_left_handed)
        self.standardize = mean is not None
        dim = landmark_feature_dim(self.normalize, self.hand_shape, self.hand_frame)
        self.register_buffer("mean", torch.zeros(dim) if mean is None else torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.ones(dim) if std is None else torch.as_tensor(std, dtype=torch.float32))

    def forward(self, landmarks, mask):
        x = make_landmark_features(landmarks, mask, self.normalize, **self.options())
        return (x - self.mean) / self.std if self.standardize else x

    def describe(self):
        """One line for a run's log: what the model's landmark input is."""
        kinds = (["shoulder-normalized", "standardized" * self.standardize, "hand shapes" * self.hand_shape,
                  "hand frames" * self.hand_frame] if self.normalize else ["raw coordinates"])
        return f"{self.mean.numel()} channels per frame ({', '.join(k for k in kinds if k)})"

    def options(self):
        """{flag: bool} of PREPARE_FLAGS, as this preprocessor applies them."""
        return {flag: getattr(self, flag) for flag in PREPARE_FLAGS}

    def state(self):
        return {"normalize": self.normalize, "mean": self.mean.cpu() if self.standardize else None,
                "std": self.std.cpu() if self.standardize else None, **self.options()}

    @classmethod
    def from_state(cls, state):
        return cls(state["normalize"], state.get("mean"), state.get("std"),
                   **{flag: state.get(flag, False) for flag in PREPARE_FLAGS})


def prepare_options(args):
    """{flag: bool} of PREPARE_FLAGS from a run's flags (False when a hand-built namespace lacks one)."""
    return {flag: bool(getattr(args, flag, False)) for flag in PREPARE_FLAGS}


def hand_channels(args):
    """{flag: bool} of HAND_FLAGS, the options that change the channel count, from a run's flags."""
    return {flag: bool(getattr(args, flag, False)) for flag in HAND_FLAGS}


def landmark_preprocessor(args, train_split, resume=None):
    """The normalization a run uses: a resumed run's own; else the training split's channel statistics
    (standardized normalized channels, the default since Protocol 3 in BENCHMARKS.md); --no_landmark_standardize
    keeps the normalized channels unstandardized, --no_landmark_norm the raw coordinates."""
    if resume is not None:
        return LandmarkPreprocessor.from_state(resume["landmark_normalization"])
    options = prepare_options(args)
    if not args.no_landmark_norm and not args.no_landmark_standardize:
        mean, std = channel_statistics(train_split.landmarks, train_split.lengths, **options)  # as packed, un-augmented
        return LandmarkPreprocessor(True, mean, std, **options)
    return LandmarkPreprocessor(not args.no_landmark_norm, **options)
