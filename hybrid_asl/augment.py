"""Training-only augmentation of a batch of landmarks (+ optional Gemma features), batched on the device.

    python train_simple.py --modality landmarks --augment light             # default recipe
    python train_simple.py --modality landmarks --augment strong --aug_mirror_p 0.5
    python train_simple.py --augment none --no_landmark_norm                 # plain legacy behaviour
    python -m pytest tests/test_augment.py -q

Every augmentation makes ONE random draw per clip from a torch.Generator (no Python loop over clips or
frames), so a fixed generator seed gives the same batch on any device. Works on raw coordinates, i.e.
before landmarks.LandmarkPreprocessor. Landmark layout: see landmarks.py.

  rotate / scale / shear / translate   one 2-D affine per clip, around the clip's shoulder centre, applied to
                                       x,y of DETECTED points only (zeros stay zeros); scale also scales z
  speed                                temporal resampling 0.7-1.3x (nearest frame: interpolating between a
                                       detected and an undetected frame would invent positions)
  crop                                 keep a random contiguous part of the real frames
  frame_mask                           zero the content of random real frames, in both streams (mask kept)
  hand_drop                            zero one whole hand block for the clip (detector misses)
  jitter                               gaussian noise on every detected point (tracker noise), in shoulder widths
  mirror                               x -> 1 - x, swap left/right hand blocks and pose pairs 11<->12, ...
                                       OPT-IN (default 0): some signs change meaning with the dominant hand
  mixup (mix_clips, --mixup)           a clip mixed with another of its batch, labels mixed alike; runs on
                                       the prepared model inputs, in the training step (engine.py)
  gemma_noise / gemma_drop             gaussian noise relative to the clip's feature RMS / channel dropout
Temporal operations rewrite frames AND mask so the real frames stay left-aligned; padding stays zero.
"""
import math

import torch

from hybrid_asl.cli import probability
from hybrid_asl.landmarks import NUM_POINTS, clip_centre_scale, mirrored_points, point_presence

# Probabilities are per clip; magnitudes live in the preset only (flags exist for probabilities).
_OFF = dict(rotate_p=0.0, scale_p=0.0, shear_p=0.0, translate_p=0.0, speed_p=0.0, crop_p=0.0,
            frame_mask_p=0.0, hand_drop_p=0.0, mirror_p=0.0, gemma_noise_p=0.0, gemma_drop_p=0.0, jitter_p=0.0)
_MAGNITUDES = dict(rotate_deg=15.0, scale_range=0.15, aspect_range=0.1, shear_range=0.15,
                   translate_range=0.25,               # in shoulder widths
                   speed_min=0.7, speed_max=1.3, crop_min=0.8, frame_mask_ratio=0.1,
                   gemma_noise_std=0.1, gemma_drop_ratio=0.1, jitter_std=0.02)
AUGMENT_PRESETS = {
    "none": {**_OFF, **_MAGNITUDES},
    "light": {**_MAGNITUDES, **dict(
        rotate_p=0.5, scale_p=0.5, shear_p=0.3, translate_p=0.5, speed_p=0.5, crop_p=0.2,
        frame_mask_p=0.2, hand_drop_p=0.05, mirror_p=0.0, gemma_noise_p=0.5, gemma_drop_p=0.2, jitter_p=0.0)},
    "strong": {**_MAGNITUDES, **dict(
        rotate_p=0.8, scale_p=0.8, shear_p=0.5, translate_p=0.8, speed_p=0.8, crop_p=0.5,
        frame_mask_p=0.5, hand_drop_p=0.1, mirror_p=0.0, gemma_noise_p=0.8, gemma_drop_p=0.5, jitter_p=0.0,
        rotate_deg=25.0, scale_range=0.25, aspect_range=0.15, shear_range=0.25, translate_range=0.5,
        crop_min=0.6, frame_mask_ratio=0.2, gemma_noise_std=0.2, gemma_drop_ratio=0.2)},
}
PROB_KEYS = tuple(_OFF)
_FLAG_HELP = {
    "rotate_p": "probability of a random in-plane rotation per clip",
    "scale_p": "probability of a random (slightly anisotropic) scale per clip",
    "shear_p": "probability of a random shear per clip",
    "translate_p": "probability of a random translation per clip",
    "speed_p": "probability of temporal resampling (speed 0.7-1.3x) per clip",
    "crop_p": "probability of a random temporal crop per clip",
    "frame_mask_p": "probability of zeroing random frames (both streams) per clip",
    "hand_drop_p": "probability of zeroing one whole hand for the clip",
    "mirror_p": "probability of mirroring (flip x, swap hands); opt-in, can change a sign's meaning",
    "gemma_noise_p": "probability of gaussian noise on the Gemma features per clip",
    "gemma_drop_p": "probability of Gemma feature-channel dropout per clip",
    "jitter_p": "probability of gaussian noise on every detected landmark of the clip",
}
# Flags of the project this one replaces, and what each sets: (help, {setting: value or "value"})
FAMILIAR = {
    "temporal_jitter": ("probability of temporal resampling per clip (= --aug_speed_p)", {"speed_p": "value"}),
    "temporal_mask_prob": ("probability of zeroing random frames per clip (= --aug_frame_mask_p)",
                           {"frame_mask_p": "value"}),
    "feature_dropout": ("fraction of Gemma feature channels dropped in every clip (0 = off)",
                        {"gemma_drop_p": "on", "gemma_drop_ratio": "value"}),
    "feature_noise": ("std of gaussian noise on the Gemma features of every clip, relative to the clip's RMS "
                      "(0 = off)", {"gemma_noise_p": "on", "gemma_noise_std": "value"}),
    "landmark_jitter": ("std of gaussian noise on every detected landmark, in shoulder widths (0 = off)",
                        {"jitter_p": "on", "jitter_std": "value"}),
}


def draw(shape, generator, device, sampler=torch.rand):
    """Random numbers (torch.rand, or torch.randn) made on the generator's device (the default generator of `device`
    when None), then moved to `device`: the numbers do not depend on where the batch lives."""
    gen_device = device if generator is None else generator.device
    return sampler(*shape, generator=generator, device=gen_device).to(device)


def mix_clips(gemma, landmarks, mask, weight, p, generator):
    """Mixup on sequences (--mixup p), on the model's prepared inputs: with probability p a clip is mixed with the
    next clip of the (shuffled) batch, own share lam ~ U(0.5, 1), the partner resampled in time to the clip's own
    length and mask (nearest frame), so that both signs span the clip. Rows that only pad the batch (weight 0) are
    never mixed. -> (gemma, landmarks, partner index (B,), lam (B,)); the loss mixes the labels with the same lam."""
    B, T = mask.shape
    dev = mask.device
    u = draw((B, 2), generator, dev)
    partner = torch.arange(B, device=dev).roll(-1)
    on = (u[:, 0] < p) & (weight > 0) & (weight[partner] > 0)
    lam = torch.where(on, 1 - 0.5 * u[:, 1], torch.ones_like(u[:, 1]))
    length = mask.sum(1)
    other_length = length[partner]
    src = (torch.arange(T, device=dev)[None] * other_length[:, None]) // length.clamp(min=1)[:, None]
    src = torch.minimum(src, (other_length - 1).clamp(min=0)[:, None])
    mixed = (on[:, None] & mask)[..., None]

    def mix(x):
        if x is None:
            return None
        other = x[partner].gather(1, src[..., None].expand(-1, -1, x.shape[-1]))
        w = lam[:, None, None].to(x.dtype)
        return torch.where(mixed, w * x + (1 - w) * other, x)

    return mix(gemma), mix(landmarks), partner, lam


def add_augment_args(parser):
    """Add the 'augmentation' argparse group: --augment preset, one probability flag per augmentation, and the
    familiar flags of the project this one replaces (--no_augmentation, --temporal_jitter, ...)."""
    g = parser.add_argument_group("augmentation")
    g.add_argument("--augment", choices=sorted(AUGMENT_PRESETS), default=None,
                   help="training augmentation preset (none = plain legacy behaviour; default: strong for "
                        "--modality landmarks, light for the streams with Gemma features)")
    g.add_argument("--no_augmentation", dest="augment", action="store_const", const="none",
                   help="same as --augment none")
    for key in PROB_KEYS:
        g.add_argument(f"--aug_{key}", type=probability, default=None,
                       help=f"{_FLAG_HELP[key]} (default: the preset's value)")
    for name, (text, _) in FAMILIAR.items():
        g.add_argument(f"--{name}", type=probability, default=None, help=f"{text} (default: the preset's)")
    g.add_argument("--mixup", type=probability, default=0.0,
                   help="probability that a training clip is mixed with another clip of its batch (mixup on "
                        "sequences: own share 0.5-1, the labels mixed the same way); 0 = off")
    return g


def default_preset(modality):
    """Landmarks alone won with strong augmentation on 112 classes of real signers (BENCHMARKS.md, Protocol 4);
    the streams with Gemma features keep light."""
    return "strong" if modality == "landmarks" else "light"


def augment_config_from_args(args) -> dict:
    """The --augment preset with the familiar flags, then every explicitly given --aug_*_p flag, merged over it."""
    cfg = dict(AUGMENT_PRESETS[args.augment or default_preset(getattr(args, "modality", "hybrid"))])
    for name, (_, settings) in FAMILIAR.items():
        value = getattr(args, name, None)
        if value is not None:
            for key, what in settings.items():
                cfg[key] = float(value) if what == "value" else float(value > 0)
    for key in PROB_KEYS:
        value = getattr(args, f"aug_{key}", None)
        if value is not None:
            cfg[key] = float(value)
    return cfg


def _temporal_indices(lengths, T, u, cfg):
    """Source frame index (B,T) and new lengths (B,) for speed resampling then cropping."""
    L = lengths.to(torch.long)
    Lf = L.float()
    speed = torch.where(u["speed"] < cfg["speed_p"],
                        cfg["speed_min"] + u["speed_val"] * (cfg["speed_max"] - cfg["speed_min"]),
                        torch.ones_like(Lf))
    stretched = torch.where(L > 0, torch.round(Lf / speed).clamp(min=1), torch.zeros_like(Lf)).long()
    length1 = stretched.clamp(max=T)
    # a slowed-down clip longer than T: show a random window of it, not always its start
    offset = (u["speed_off"] * (stretched - T + 1).clamp(min=1).float()).long()
    j = torch.arange(T, device=L.device)[None, :]
    src1 = ((j + offset[:, None]) * L[:, None]) // stretched.clamp(min=1)[:, None]
    src1 = torch.minimum(src1, (L - 1).clamp(min=0)[:, None])

    crop = u["crop"] < cfg["crop_p"]
    keep = torch.round((cfg["crop_min"] + u["crop_val"] * (1 - cfg["crop_min"])) * length1.float()).long()
    length2 = torch.where(crop & (length1 > 0), keep.clamp(min=1), length1).minimum(length1)
    start = (u["crop_off"] * (length1 - length2 + 1).float()).long().minimum(length1 - length2)
    idx2 = (start[:, None] + j).clamp(max=T - 1)
    src = src1.gather(1, idx2)
    return src, length2


def _augment_landmarks(landmarks, src, new_mask, u, cfg):
    """The landmark part of augment_batch: the temporal gather, then affine, mirror and hand dropout."""
    B, T, _ = landmarks.shape
    dev = landmarks.device
    lm = landmarks.float().gather(1, src[..., None].expand(-1, -1, landmarks.shape[-1]))
    lm = lm * new_mask[..., None]

    # --- space: one affine per clip around the shoulder centre, detected points only -----------------
    pts = lm.reshape(B, T, NUM_POINTS, 3)
    present = point_presence(lm) & new_mask[..., None]
    centre, scale = clip_centre_scale(lm, new_mask)
    ones = torch.ones(B, device=dev)
    theta = torch.where(u["rotate"] < cfg["rotate_p"],
                        (2 * u["rotate_val"] - 1) * math.radians(cfg["rotate_deg"]), 0 * ones)
    s = torch.where(u["scale"] < cfg["scale_p"], 1 + (2 * u["scale_val"] - 1) * cfg["scale_range"], ones)
    a = torch.where(u["scale"] < cfg["scale_p"], (2 * u["aspect_val"] - 1) * cfg["aspect_range"], 0 * ones)
    shear = u["shear"] < cfg["shear_p"]
    kx = torch.where(shear, (2 * u["shear_x"] - 1) * cfg["shear_range"], 0 * ones)
    ky = torch.where(shear, (2 * u["shear_y"] - 1) * cfg["shear_range"], 0 * ones)
    move = u["translate"] < cfg["translate_p"]
    t = torch.stack([torch.where(move, (2 * u[k] - 1) * cfg["translate_range"], 0 * ones) for k in ("tx", "ty")], 1)
    t = t * scale[:, None]                                       # in shoulder widths: resolution-free
    c, sn = torch.cos(theta), torch.sin(theta)
    rot = torch.stack([torch.stack([c, -sn], -1), torch.stack([sn, c], -1)], -2)           # (B,2,2)
    shr = torch.stack([torch.stack([ones, kx], -1), torch.stack([ky, ones], -1)], -2)
    scl = torch.diag_embed(torch.stack([s * (1 + a), s * (1 - a)], -1))
    M = rot @ shr @ scl
    if any(cfg[k] > 0 for k in ("rotate_p", "scale_p", "shear_p", "translate_p")):
        xy = pts[..., :2] - centre[:, None, None, :2]
        xy = torch.einsum("bij,btpj->btpi", M, xy) + centre[:, None, None, :2] + t[:, None, None]
        z = pts[..., 2:] * s[:, None, None, None]
        pts = torch.where(present[..., None], torch.cat([xy, z], -1), torch.zeros_like(pts))

    # --- mirror: flip x in image coordinates and swap the left/right blocks (opt-in: 0 in every preset) -----
    if cfg["mirror_p"] > 0:
        mirror = (u["mirror"] < cfg["mirror_p"])[:, None, None]
        pts = torch.where(mirror[..., None], mirrored_points(pts, present), pts)

    # --- hand dropout: one whole hand block for the clip --------------------------------------------
    drop = u["hand_drop"] < cfg["hand_drop_p"]
    point_idx = torch.arange(NUM_POINTS, device=dev)[None, :]
    left = (u["hand_which"] < 0.5)[:, None]
    hand_pts = torch.where(left, point_idx < 21, (point_idx >= 21) & (point_idx < 42))     # (B,54)
    pts = pts * ~(drop[:, None] & hand_pts)[:, None, :, None]
    return pts.reshape(B, T, -1)


def augment_batch(gemma, landmarks, mask, cfg: dict, generator: torch.Generator):
    """Augment one training batch. Returns new (gemma, landmarks, mask); the inputs are never modified.

    gemma (B,T,D) or None, landmarks (B,T,162) raw coords, mask (B,T) bool left-aligned. With every
    probability 0 (the "none" preset) the inputs are returned as they are. generator None draws from the
    default generator of the batch's device (what a captured CUDA graph needs)."""
    if not any(cfg[k] > 0 for k in PROB_KEYS):
        return gemma, landmarks, mask
    B, T = mask.shape
    dev = mask.device

    # every draw is made whether or not its stream is present, so both streams see the same random numbers
    names = ["speed", "speed_val", "speed_off", "crop", "crop_val", "crop_off", "rotate", "rotate_val",
             "scale", "scale_val", "aspect_val", "shear", "shear_x", "shear_y", "translate", "tx", "ty",
             "mirror", "hand_drop", "hand_which", "frame_mask", "gemma_noise", "gemma_drop"]
    draws = draw((B, len(names)), generator, dev)
    u = {n: draws[:, i] for i, n in enumerate(names)}
    frame_u = draw((B, T), generator, dev)

    # --- time: resample + crop, one gather for both streams -----------------------------------------
    mask = mask.bool()
    src, new_len = _temporal_indices(mask.sum(1), T, u, cfg)
    new_mask = torch.arange(T, device=dev)[None, :] < new_len[:, None]
    lm = None if landmarks is None else _augment_landmarks(landmarks, src, new_mask, u, cfg)
    if gemma is not None:
        g = gemma.gather(1, src[..., None].expand(-1, -1, gemma.shape[-1])) * new_mask[..., None]

    # --- frame masking: zero content of random real frames in both streams; never all of them --------
    fm = (u["frame_mask"] < cfg["frame_mask_p"])[:, None] & (frame_u < cfg["frame_mask_ratio"]) & new_mask
    fm = fm & ~(fm.sum(1) >= new_len)[:, None]
    if lm is not None:
        lm = lm * ~fm[..., None]

    if gemma is not None:
        g = g * ~fm[..., None]
        real = new_mask[..., None].to(g.dtype)
        noise_on = (u["gemma_noise"] < cfg["gemma_noise_p"])
        if cfg["gemma_noise_p"] > 0:
            # noise relative to the clip's own feature RMS: features may come from any extractor scale
            rms = ((g.float() ** 2 * real).sum((1, 2)) / (real.sum((1, 2)) * g.shape[-1]).clamp(min=1)).sqrt()
            n = draw(g.shape, generator, dev, torch.randn)
            sigma = (cfg["gemma_noise_std"] * rms * noise_on)[:, None, None]
            g = g + (n * sigma).to(g.dtype) * real * ~fm[..., None]
        if cfg["gemma_drop_p"] > 0:
            ch = draw((B, g.shape[-1]), generator, dev) < cfg["gemma_drop_ratio"]
            on = (u["gemma_drop"] < cfg["gemma_drop_p"])[:, None]
            keep_scale = 1.0 / (1.0 - cfg["gemma_drop_ratio"]) if cfg["gemma_drop_ratio"] < 1 else 0.0
            factor = torch.where(on, (~ch).to(g.dtype) * keep_scale, torch.ones_like(ch, dtype=g.dtype))
            g = g * factor[:, None, :]
    else:
        g = None
    if lm is not None and cfg["jitter_p"] > 0:  # drawn last, and only when on: the other draws stay as they were
        on = (draw((B,), generator, dev) < cfg["jitter_p"]).float()
        pts = lm.reshape(B, T, NUM_POINTS, 3)
        _, scale = clip_centre_scale(lm, new_mask)
        noise = draw(pts.shape, generator, dev, torch.randn)
        sigma = (cfg["jitter_std"] * scale * on)[:, None, None, None]
        pts = torch.where(point_presence(lm)[..., None], pts + noise * sigma, pts)  # undetected stays 0
        lm = pts.reshape(B, T, -1) * new_mask[..., None]
    return g, None if lm is None else lm.to(landmarks.dtype), new_mask
