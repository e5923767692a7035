"""
Generate the small demo dataset in data/demo/ (WLASL layout, synthetic, committed).

    python data/make_demo.py                  # (re)writes data/demo/
    python data/make_demo.py --out /tmp/demo  # writes elsewhere (tests use this)
    python train_simple.py --demo             # trains on data/demo/

What the data is: 10 real WLASL glosses with their real global class ids (0 book ... 999 suggest, deliberately
non-contiguous so the id -> index mapping is exercised), 15-20 clips each (train 8..13 / val 3 / test 4).
Every clip is a made-up "signer" built from a simple body model, not real footage:
- landmarks/{vid}_landmarks.npy, float32 (T, 162), T = 12..40: [left hand 21x3 | right hand 21x3 |
  MediaPipe pose 11..22 (shoulders, elbows, wrists, pinkies, index fingers, thumbs) x3] in MediaPipe
  normalized image coordinates (640x480 framing, shoulders near y=0.55). Each class has its own hand path and
  handshape (circle at the chin, nod at the chest, two-handed twist, ...); each clip gets its own signer
  position/scale, speed, lead-in/out, noise and missed detections (an undetected hand is all zeros).
  One of the 12 made-up signers is left-handed and mirrors every sign. No NaN anywhere.
- gemma_features/{vid}_gemma.npy, float32 (16, 64): stand-ins for per-frame Gemma vision features: a weak
  class prototype buried under signer appearance, per-clip noise and per-frame drift, so they help but the
  landmarks carry most of the signal.
Fixed seed, numpy only: running it twice gives byte-identical files.
"""
import argparse
import json
import os

import numpy as np

# ----------------------------------------------------------------------------------------------------------
# config

CLASSES = [(0, "book"), (7, "who"), (17, "yes"), (42, "kiss"), (69, "play"),
           (101, "wait"), (134, "week"), (256, "always"), (512, "demand"), (999, "suggest")]
N_TRAIN = [12, 8, 13, 9, 11, 8, 12, 10, 13, 8]  # a little imbalanced, like WLASL
N_VAL, N_TEST = 3, 4
N_SIGNERS = 12           # clips of one signer share position, scale and (for gemma) appearance
LEFT_HANDED = {0}        # signer 0 mirrors every sign (the left hand leads), as some WLASL signers do
GEMMA_FRAMES, GEMMA_DIM = 16, 64
ASPECT = 640 / 480       # normalized y units are shorter than x units on a 4:3 frame
FIRST_VIDEO_ID = 90001   # 5-digit ids like WLASL, outside the range real WLASL uses

# ----------------------------------------------------------------------------------------------------------
# the hand: 21 MediaPipe points built from per-finger curls, in "palm units" (wrist -> middle MCP = 1),
# right hand, palm towards the camera, fingers up (-y), thumb towards +x; z < 0 is towards the camera.

FINGER_MCP = np.array([[0.30, -0.95], [0.05, -1.00], [-0.17, -0.93], [-0.37, -0.80]])  # index, middle, ring, pinky
FINGER_ANGLE = np.array([0.12, 0.0, -0.12, -0.25])  # fan-out of the fingers (radians from vertical)
FINGER_LEN = np.array([[0.45, 0.27, 0.22], [0.50, 0.30, 0.23], [0.45, 0.28, 0.22], [0.35, 0.22, 0.20]])
JOINT_BEND = np.array([1.4, 1.7, 1.1])  # radians at MCP, PIP, DIP for curl = 1 (a fist)


def hand_points(curl, spread, roll, yaw, mirror):
    """curl (T, 5) thumb..pinky in [0, 1]; spread, roll, yaw (T,) -> (T, 21, 3) palm units, wrist at 0."""
    T = curl.shape[0]
    pts = np.zeros((T, 21, 3))
    # thumb: CMC, MCP, IP, tip; curling swings it across the palm and towards the camera
    th = 0.9 - 1.2 * curl[:, 0]
    bend = 0.7 * curl[:, 0]
    p = np.zeros((T, 3))
    p[:, 0], p[:, 1] = 0.22, -0.18
    pts[:, 1] = p
    for k, L in enumerate([0.38, 0.30, 0.25]):
        p = p + L * np.stack([np.sin(th) * np.cos(bend * k), -np.cos(th) * np.cos(bend * k), -np.sin(bend * k)], 1)
        pts[:, 2 + k] = p
    # fingers: MCP then three segments that bend towards the camera as the curl grows
    for f in range(4):
        theta = FINGER_ANGLE[f] * spread
        p = np.zeros((T, 3))
        p[:, :2] = FINGER_MCP[f]
        pts[:, 5 + 4 * f] = p
        phi = np.zeros(T)
        for k in range(3):
            phi = phi + JOINT_BEND[k] * curl[:, 1 + f]
            d = np.stack([np.sin(theta) * np.cos(phi), -np.cos(theta) * np.cos(phi), -np.sin(phi)], 1)
            p = p + FINGER_LEN[f, k] * d
            pts[:, 6 + 4 * f + k] = p
    if mirror:  # the left hand is the mirror image of the right
        pts[..., 0] *= -1
        roll = -roll
    # yaw turns the palm away from the camera (about the vertical axis), roll turns it in the image plane
    cy, sy = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
    x, z = pts[..., 0] * cy + pts[..., 2] * sy, -pts[..., 0] * sy + pts[..., 2] * cy
    cr, sr = np.cos(roll)[:, None], np.sin(roll)[:, None]
    pts[..., 0], pts[..., 1] = x * cr - pts[..., 1] * sr, x * sr + pts[..., 1] * cr
    pts[..., 2] = z
    return pts


# handshapes: curls thumb, index, middle, ring, pinky
FLAT = [0.10, 0.05, 0.05, 0.05, 0.05]
INDEX = [0.75, 0.05, 0.92, 0.95, 0.95]
FIST = [0.60, 0.95, 0.95, 0.95, 0.95]
FLAT_O = [0.50, 0.45, 0.45, 0.45, 0.45]
Y_HAND = [0.00, 0.95, 0.95, 0.95, 0.05]
L_HAND = [0.00, 0.05, 0.92, 0.95, 0.95]
RELAXED = [0.30, 0.30, 0.35, 0.40, 0.45]

# ----------------------------------------------------------------------------------------------------------
# the signs: for sign-time s in [0, 1] each returns the pose of both hands in "body units"
# (shoulder width = 1, origin between the shoulders, +v down). Dominant = the signer's right hand (image left).
# None for the left hand means it hangs at rest (usually out of frame, so undetected).


def hand(s, u, v, shape, roll=0.0, yaw=0.0, spread=1.0):
    """Pose of one hand over the frames of s; every argument is a constant or one value per frame."""
    n = len(s)
    full = lambda a, shape=(): np.broadcast_to(np.asarray(a, float), (n,) + shape).copy()
    return dict(u=full(u), v=full(v), curl=full(shape, (5,)), roll=full(roll), yaw=full(yaw), spread=full(spread))


def lerp(a, b, s):
    return a + (b - a) * s


def sign_book(s, q):  # two flat hands, palms together at the chest, open like a book
    o = np.clip(1.6 * s, 0, 1)
    return (hand(s, lerp(-0.06, -0.30 * q, o), 0.30, FLAT, -0.2, lerp(1.45, 0.3, o), 0.6),
            hand(s, lerp(0.06, 0.30 * q, o), 0.30, FLAT, -0.2, lerp(1.45, 0.3, o), 0.6))


def sign_who(s, q):  # L-hand at the chin, small circles
    a = 2 * np.pi * 2 * s
    return hand(s, -0.10 + 0.07 * q * np.cos(a), -0.15 + 0.07 * q * np.sin(a), L_HAND, 0.3, 0.5), None


def sign_yes(s, q):  # fist nodding at the chest
    w = np.sin(2 * np.pi * 3 * s)
    return hand(s, -0.30, 0.25 + 0.06 * q * w, FIST, 0.2 + 0.5 * q * w, 0.3), None


def sign_kiss(s, q):  # flat-O from the mouth to the cheek, holding at both
    m = np.clip((s - 0.3) / 0.4, 0, 1)
    return hand(s, lerp(-0.05, -0.30 * q, m), lerp(-0.25, -0.15, m), FLAT_O, 0.5, 0.8, 0.3), None


def sign_play(s, q):  # two Y-hands twisting
    w = np.sin(2 * np.pi * 3 * s)
    return (hand(s, -0.35 + 0.04 * w, 0.30, Y_HAND, 0.3 + 0.6 * q * w, 0.2),
            hand(s, 0.35 - 0.04 * w, 0.30, Y_HAND, 0.3 + 0.6 * q * w, 0.2))


def sign_wait(s, q):  # two open hands held to the dominant side, fingers wiggling
    wig = np.stack([0.15 + 0.25 * q * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * s + 0.9 * f)) for f in range(5)], 1)
    wig[:, 0] = 0.1
    sway = 0.03 * np.sin(2 * np.pi * s)
    return (hand(s, -0.65 + sway, 0.35, wig, -1.0, 1.1, 1.3),
            hand(s, -0.05 + sway, 0.30, wig, -1.0, 1.1, 1.3))


def sign_week(s, q):  # index slides across the flat, palm-up left hand
    return (hand(s, lerp(-0.05, 0.30 * q, s), 0.28, INDEX, -1.3, 0.2),
            hand(s, 0.35, 0.40, FLAT, 1.3, 1.3))


def sign_always(s, q):  # index pointing up, big circles in front of the right shoulder
    a = 2 * np.pi * 2 * s
    return hand(s, -0.30 + 0.13 * q * np.cos(a), -0.05 - 0.13 * q * np.sin(a), INDEX, 0.0, 0.2), None


def sign_demand(s, q):  # index pokes the left palm, then pulls back towards the body and down
    a, b = np.clip(2.5 * s, 0, 1), np.clip((s - 0.5) * 2, 0, 1)
    u = lerp(lerp(-0.30, 0.12, a), -0.35, b)
    v = lerp(lerp(0.15, 0.20, a), 0.50 * q, b)
    return hand(s, u, v, INDEX, -1.0, 0.2), hand(s, 0.30, 0.35, FLAT, 0.3, 1.4)


def sign_suggest(s, q):  # two flat palms up, rising forward and slightly apart
    r = np.sin(0.5 * np.pi * s)
    return (hand(s, lerp(-0.30, -0.42, r), lerp(0.50, 0.50 - 0.35 * q, r), FLAT, -0.3, 1.3),
            hand(s, lerp(0.30, 0.42, r), lerp(0.50, 0.50 - 0.35 * q, r), FLAT, -0.3, 1.3))


SIGNS = [sign_book, sign_who, sign_yes, sign_kiss, sign_play,
         sign_wait, sign_week, sign_always, sign_demand, sign_suggest]
BASE_FRAMES = [13, 16, 17, 13, 17, 17, 13, 17, 16, 13]  # signs with repeated movement take longer

# ----------------------------------------------------------------------------------------------------------
# one clip


def smoothstep(x):
    x = np.clip(x, 0, 1)
    return x * x * (3 - 2 * x)


def arm_elbow(shoulder, wrist, side, upper=0.62, fore=0.58):
    """2-link IK in the image plane, elbow bent outwards and down. Body units, (T, 2)."""
    d = wrist - shoulder
    dist = np.clip(np.linalg.norm(d, axis=1, keepdims=True), 1e-6, None)
    r = np.clip(dist, 0.05, upper + fore - 1e-3)
    cos_a = np.clip((upper ** 2 + r ** 2 - fore ** 2) / (2 * upper * r), -1, 1)
    a = np.arccos(cos_a)[:, 0] * -side  # side -1 right arm (bends towards -u), +1 left arm
    e = d / dist
    rot = np.stack([e[:, 0] * np.cos(a) - e[:, 1] * np.sin(a), e[:, 0] * np.sin(a) + e[:, 1] * np.cos(a)], 1)
    return shoulder + upper * rot


def make_clip(rng, c, signer, lefty):
    """-> landmarks (T, 162) float32 for one clip of class index c by signer (cx, cy, scale)."""
    slow = 2.0 if rng.random() < 0.06 else 1.0  # now and then a slow signer: long clips up to 40 frames
    T = int(np.clip(round(BASE_FRAMES[c] * slow * rng.uniform(0.8, 1.3)), 12, 40))
    t = np.linspace(0, 1, T)
    # the sign itself takes the middle of the clip: lead-in from rest, optional partial return at the end
    lead_in, lead_out = rng.uniform(0.05, 0.25), rng.uniform(0.0, 0.2)
    s = np.clip((t - lead_in) / (1 - lead_in - lead_out), 0, 1) ** rng.uniform(0.8, 1.25)
    q = rng.uniform(0.6, 1.4)  # how big this signer makes the movement
    right, left = SIGNS[c](s, q)
    shift = rng.normal(0, 0.1, 2)
    for h in (right, left):
        if h is not None:
            h["u"] += shift[0]
            h["v"] += shift[1]
            h["curl"] = np.clip(h["curl"] + rng.normal(0, 0.12, 5), 0, 1)
            h["roll"] += rng.normal(0, 0.2)
    rest_v = rng.uniform(1.25, 1.6)  # resting hands hang near the bottom edge, often out of frame
    if left is None:
        left = hand(t, 0.55, rest_v, RELAXED, 0.15, 0.6)
    if lefty:  # mirror the sign; roll needs no flip, the left hand is drawn mirrored anyway
        right, left = left, right
        right["u"], left["u"] = -right["u"], -left["u"]
    # blend from a resting pose into the sign (lead-in) and partly back out (lead-out)
    w = smoothstep(t / lead_in) * (1 - 0.6 * smoothstep((t - (1 - lead_out)) / max(lead_out, 1e-3)))
    for h, side in ((right, -1), (left, 1)):
        rest = hand(t, 0.55 * side, rest_v, RELAXED, 0.15 * side, 0.6)
        for k in ("u", "v", "roll", "yaw", "spread"):
            h[k] = lerp(rest[k], h[k], w)
        h["curl"] = lerp(rest["curl"], h["curl"], w[:, None])

    # body units -> MediaPipe normalized image coordinates
    cx, cy, scale = signer
    sw = 0.26 * scale  # shoulder width in x units
    to_img = lambda uv: np.stack([cx + sw * uv[..., 0], cy + sw * ASPECT * uv[..., 1]], -1)
    palm = 0.34  # wrist -> middle MCP in body units
    hands, pose = [], np.zeros((T, 12, 3))
    shoulders = {-1: np.array([-0.5, 0.0]), 1: np.array([0.5, 0.0])}
    for h, side in ((left, 1), (right, -1)):
        pts = hand_points(h["curl"], h["spread"], h["roll"], h["yaw"], mirror=side == 1) * palm
        wrist = np.stack([h["u"], h["v"]], 1)
        uv = wrist[:, None] + pts[..., :2]
        img = np.concatenate([to_img(uv), pts[..., 2:] * sw], -1)  # MediaPipe hand z: relative to the wrist
        img = img + rng.normal(0, 0.005, img.shape) + rng.normal(0, 0.005, (T, 1, 3))
        hands.append(img)
        # pose: shoulder, elbow, wrist, pinky, index, thumb of this side (even index = left, odd = right)
        o = 0 if side == 1 else 1
        sh = np.broadcast_to(shoulders[side], (T, 2))
        elbow = arm_elbow(sh, wrist, side)
        depth = -0.8 + 0.5 * np.clip(h["v"], -0.5, 1.5)  # raised hands are further in front of the body
        for j, (xy, z) in enumerate([(sh, np.full(T, -0.15)), (elbow, 0.5 * depth), (wrist, depth),
                                     (uv[:, 17], depth - 0.05), (uv[:, 5], depth - 0.08), (uv[:, 2], depth - 0.06)]):
            pose[:, 2 * j + o, :2] = to_img(xy)
            pose[:, 2 * j + o, 2] = z * scale
    pose += rng.normal(0, 0.004, pose.shape)

    # missed detections: a hand is undetected when it is out of frame, and now and then at random
    for k, img in enumerate(hands):
        missed = img[:, 0, 1] > 0.98
        p = rng.choice([0.0, 0.0, 0.05, 0.15]) if k == 1 else rng.choice([0.0, 0.1, 0.25])
        missed |= rng.random(T) < p
        if rng.random() < 0.15:  # a run of lost tracking
            a = rng.integers(0, T - 4)
            missed[a:a + rng.integers(3, 8)] = True
        img[missed] = 0.0
    out = np.concatenate([hands[0].reshape(T, 63), hands[1].reshape(T, 63), pose.reshape(T, 36)], 1)
    return out.astype(np.float32)


def make_gemma(rng, c, signer_id, prototypes, appearance):
    """-> (16, 64) float32 fake per-frame Gemma features: weak class signal, strong signer/clip nuisance."""
    clip = 0.45 * prototypes[c] + appearance[signer_id] + 0.8 * rng.normal(0, 1, GEMMA_DIM)
    drift = np.cumsum(rng.normal(0, 0.25, (GEMMA_FRAMES, GEMMA_DIM)), 0)
    feats = clip + drift + rng.normal(0, 0.5, (GEMMA_FRAMES, GEMMA_DIM))
    return feats.astype(np.float32)


# ----------------------------------------------------------------------------------------------------------
# writing (atomic, like every output of this project)


def save_npy(path, arr):
    with open(path + ".tmp", "wb") as f:
        np.save(f, arr)
    os.replace(path + ".tmp", path)


def save_text(path, text):
    with open(path + ".tmp", "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def main():
    parser = argparse.ArgumentParser(description="Generate the synthetic WLASL-layout demo dataset.")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo"),
                        help="output folder (default: data/demo next to this script)")
    parser.add_argument("--seed", type=int, default=1234,
                        help="random seed; keep the default so the committed files do not change")
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    os.makedirs(os.path.join(args.out, "landmarks"), exist_ok=True)
    os.makedirs(os.path.join(args.out, "gemma_features"), exist_ok=True)

    signers = np.stack([rng.uniform(0.42, 0.58, N_SIGNERS), rng.uniform(0.50, 0.60, N_SIGNERS),
                        rng.uniform(0.8, 1.2, N_SIGNERS)], 1)
    prototypes = rng.normal(0, 1, (len(CLASSES), GEMMA_DIM))
    appearance = rng.normal(0, 1, (N_SIGNERS, GEMMA_DIM))

    # shuffle the clips before numbering them so a video id says nothing about its class or split
    clips = [(c, subset) for c in range(len(CLASSES))
             for subset, n in (("train", N_TRAIN[c]), ("val", N_VAL), ("test", N_TEST)) for _ in range(n)]
    order = rng.permutation(len(clips))
    split = {}
    for i, k in enumerate(order):
        c, subset = clips[k]
        vid = str(FIRST_VIDEO_ID + i)
        signer_id = int(rng.integers(N_SIGNERS))
        jitter = signers[signer_id] + rng.normal(0, [0.01, 0.01, 0.02])  # the same signer never stands still
        lm = make_clip(rng, c, jitter, signer_id in LEFT_HANDED)
        save_npy(os.path.join(args.out, "landmarks", f"{vid}_landmarks.npy"), lm)
        save_npy(os.path.join(args.out, "gemma_features", f"{vid}_gemma.npy"),
                 make_gemma(rng, c, signer_id, prototypes, appearance))
        split[vid] = {"subset": subset, "action": [CLASSES[c][0], 1, int(lm.shape[0])]}

    lines = [f' "{vid}": {json.dumps(v)}' for vid, v in split.items()]  # one clip per line, easy to diff
    save_text(os.path.join(args.out, "nslt_demo.json"), "{\n" + ",\n".join(lines) + "\n}\n")
    save_text(os.path.join(args.out, "wlasl_class_list.txt"), "".join(f"{i}\t{g}\n" for i, g in CLASSES))
    meta = {"model": "demo (generated by data/make_demo.py)", "layer": "demo", "feature_dim": GEMMA_DIM,
            "pooling": "mean", "num_frames": GEMMA_FRAMES, "seed": args.seed, "num_videos": len(split)}
    save_text(os.path.join(args.out, "gemma_features", "extraction_metadata.json"), json.dumps(meta, indent=2) + "\n")
    counts = {s: sum(v["subset"] == s for v in split.values()) for s in ("train", "val", "test")}
    print(f"wrote {len(split)} clips ({counts['train']} train / {counts['val']} val / {counts['test']} test), "
          f"{len(CLASSES)} classes -> {args.out}")


if __name__ == "__main__":
    main()
