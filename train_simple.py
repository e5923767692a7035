"""
Train a word-level ASL recognizer on WLASL from frozen Gemma 3 features and MediaPipe landmarks.

    python train_simple.py --demo                                   # ~15 s on the bundled demo data (CPU)
    python train_simple.py --subset nslt_100.json --use_class_weights --warmup_epochs 5 --epochs 50 --verbose
    python train_simple.py --subset nslt_1000.json --use_class_weights --warmup_epochs 10 --epochs 100 \\
        --batch_size 32 --verbose
    python train_simple.py --resume runs/nslt_1000-20261124-120000/last.pt   # continue a stopped run

Data layout (README, 'WLASL data layout'): <data_dir>/nslt_*.json, <data_dir>/gemma_features/{id}_gemma.npy (T, D),
<data_dir>/landmarks/{id}_landmarks.npy (T, 162). Each run directory gets best.pt, last.pt, args.json,
label_mapping.json, summary.csv (one row per epoch) and metrics.json (val and test of the best-on-val checkpoint).
"""
import argparse
import contextlib
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from hybrid_asl import plots
from hybrid_asl.augment import add_augment_args, augment_config_from_args, default_preset
from hybrid_asl.batches import BatchLoader, place_splits_on_device
from hybrid_asl.checkpoint import (CHECKPOINT_FORMAT, detached_copy, load_checkpoint, restore_training,
                                   save_checkpoint)
from hybrid_asl.cli import (HelpFormatter, Refused, Terminated, exit_code, explicit_flags, float_range, int_range,
                            open_probability, resolve_device, run_cli)
from hybrid_asl.engine import EMA, build_steps, evaluate, uses_bf16
from hybrid_asl.errors import DataError
from hybrid_asl.files import atomic_write_bytes, check_output_path, make_folder, quote, write_json
from hybrid_asl.landmarks import HAND_FLAGS, PREPARE_FLAGS, landmark_preprocessor, left_handed_count
from hybrid_asl.packing import load_run_data
from hybrid_asl.recipe import (build_model, compute_class_weights, get_cosine_schedule_with_warmup,
                               model_config, model_memory_check, verify_feature_dimensions)  # noqa: F401 (seed API)
from hybrid_asl.run_folder import (RUN_FILES, ConsoleLog, check_output_dir, lock_run_folder, tensorboard_writer,
                                   write_summary)
from hybrid_asl.splits import MODALITIES
from hybrid_asl_model_simple import ENCODERS, FUSION_TYPES

ROOT = Path(__file__).resolve().parent
DEMO_SETTINGS = dict(data_dir=str(ROOT / "data" / "demo"), subset="nslt_demo.json", hidden_dim=128, num_heads=4,
                     epochs=30, batch_size=16, warmup_epochs=3, lr=1e-3, dropout=0.3, use_class_weights=True)
# The learning-rate schedule and its steps live in the checkpoint: a resumed run cannot change them; nor the model.
SCHEDULE_KEYS = ("lr", "warmup_epochs", "min_lr_ratio", "batch_size", "weight_decay")
# Protocol 4 (BENCHMARKS.md) chose these on 112 classes of real signers at 5 clips per class: small training splits
# need thousands of optimizer steps, and landmarks alone can keep every frame of a clip (they are cheap).
DEFAULT_EPOCHS, MIN_STEPS = 50, 4000
# Protocol 8 chose these for landmarks alone (+4.2 points on val, +9.8 over the ridge on test at k = 5): an ensemble
# of 3 on hand-shape channels; Protocol 11 added hand-frame channels and left-handed clips mirrored (+2.5 on val).
# The streams with Gemma features keep one model without them (3x nslt_1000's cost; Gemma frames are not mirrored).
LANDMARK_ENSEMBLE = 3
# last.pt is written about this many times per run at most: on a small split an epoch takes less time than writing
# the checkpoint (0.2 s for 83 MB), and a 223-epoch run spent more time saving than training (BENCHMARKS.md)
LAST_CHECKPOINTS = 50
LANDMARK_FRAMES = 64   # --modality landmarks: frames per clip when neither --landmark_frames nor --num_frames is given
MODEL_SHAPE_KEYS = ("model", "modality", "fusion_type", "hidden_dim", "num_layers", "num_heads", "num_frames",
                    "no_landmark_norm", "legacy_pos_encoding", "encoder", "ensemble", *PREPARE_FLAGS)


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--data_dir", default="data/wlasl", help="folder with the split files and class list")
    g.add_argument("--subset", default="nslt_100.json", help="split file, in --data_dir or a path")
    g.add_argument("--gemma_features_dir", default=None, help="{video_id}_gemma.npy files (default <data_dir>/gemma_features)")
    g.add_argument("--landmarks_dir", default=None, help="{video_id}_landmarks.npy files (default <data_dir>/landmarks)")
    g.add_argument("--modality", default="hybrid", choices=MODALITIES,
                   help="hybrid: both streams; landmarks or gemma: one stream, the other's files are not needed")
    g.add_argument("--num_frames", type=int_range(1, 4096), default=16, help="frames per clip after uniform sampling")
    g.add_argument("--landmark_frames", type=int_range(1, 4096), default=None,
                   help="frames per clip of --modality landmarks (landmarks are cheap: every frame of a clip up to "
                        f"this many; default {LANDMARK_FRAMES}, or --num_frames when that is given). The hybrid "
                        "models fuse both streams frame by frame and use --num_frames")
    g.add_argument("--gemma_feature_dim", type=int_range(1, 65536), default=2560,
                   help="Gemma feature width (2560 projector, 1152 vision tower); detected from the files")
    g.add_argument("--cache_dir", default=None, help="packed-split cache (default <data_dir>/.cache)")
    g.add_argument("--no_cache", action="store_true", help="pack the data in memory only, write no cache")
    g.add_argument("--demo", action="store_true", help="train on the bundled demo data with CPU-sized settings")

    g = p.add_argument_group("model")
    g.add_argument("--model", default="simple", choices=("simple", "full"),
                   help="simple: one encoder per stream, fused per clip; full: per-frame cross-attention fusion")
    g.add_argument("--fusion_type", default="concat", choices=FUSION_TYPES, help="how the simple model fuses streams")
    g.add_argument("--hidden_dim", type=int_range(1, 8192), default=512, help="model width")
    g.add_argument("--num_layers", type=int_range(1, 64), default=2, help="transformer layers per encoder")
    g.add_argument("--num_heads", type=int_range(1, 256), default=8, help="attention heads")
    g.add_argument("--encoder", default="transformer", choices=ENCODERS,
                   help="temporal encoder of the simple model: transformer layers, or conv: three depthwise "
                        "convolution blocks before each transformer layer (Kaggle ISLR 2023 style)")
    g.add_argument("--ensemble", type=int_range(1, 16), default=None,
                   help=f"train this many independently initialised copies of the model side by side, each on its own "
                        f"loss, and predict with the mean of their class probabilities (each copy costs a model's "
                        f"time and memory; default: {LANDMARK_ENSEMBLE} for --modality landmarks, else 1)")
    g.add_argument("--dropout", type=open_probability, default=0.5, help="dropout in the fusion and classifier")
    g.add_argument("--encoder_dropout", type=open_probability, default=0.1, help="dropout inside the transformers")
    g.add_argument("--drop_path", type=open_probability, default=0.1, help="stochastic depth rate of the top layer")
    g.add_argument("--no_landmark_norm", action="store_true",
                   help="feed raw MediaPipe coordinates instead of shoulder-normalized landmark channels")
    g.add_argument("--hand_shape", dest="hand_shape", action="store_true", default=None,
                   help="50 more landmark channels that describe each hand's shape whatever its position, size and "
                        "rotation: the bend of every finger joint and the distances between the fingertips "
                        "(default: on for --modality landmarks, off with Gemma features)")
    g.add_argument("--no_hand_shape", dest="hand_shape", action="store_false", default=None,
                   help="without the hand-shape channels (the landmark input of runs before 2026-12-04)")
    g.add_argument("--hand_frame", dest="hand_frame", action="store_true", default=None,
                   help="138 more landmark channels: each hand's points in the hand's own frame (the same whatever its "
                        "rotation, position and size) and its orientation (pointing direction, palm normal) "
                        "(default: on for --modality landmarks, off with Gemma features)")
    g.add_argument("--no_hand_frame", dest="hand_frame", action="store_false", default=None,
                   help="without the hand-frame channels (the landmark input of runs before 2026-12-05)")
    g.add_argument("--mirror_left_handed", dest="mirror_left_handed", action="store_true", default=None,
                   help="mirror every clip whose left hand is seen in more than twice as many frames as its right "
                        "hand, in training and at inference, so that a sign made with the left hand alone looks like "
                        "the same sign made with the right (default: on for --modality landmarks, off with Gemma "
                        "features)")
    g.add_argument("--no_mirror_left_handed", dest="mirror_left_handed", action="store_false", default=None,
                   help="leave left-handed clips as they are (runs before 2026-12-05)")
    g.add_argument("--no_landmark_standardize", action="store_true",
                   help="do not standardize the normalized landmark channels with the training split's mean and std "
                        "(raw coordinates, --no_landmark_norm, are never standardized)")
    g.add_argument("--legacy_pos_encoding", action="store_true",
                   help="learned positional encoding of the seed's old checkpoints instead of sinusoidal")
    g.add_argument("--tta_flip", action="store_true",
                   help="test-time flip averaging: score every evaluated clip and its mirror image (hands swapped) "
                        "and average; for models trained with --aug_mirror_p. Kept in the checkpoint: evaluation, "
                        "prediction and the ONNX export do the same")

    g = p.add_argument_group("optimization")
    g.add_argument("--epochs", type=int_range(1, 100000), default=None,
                   help=f"training epochs (default {DEFAULT_EPOCHS}, or more on a small training split: enough for "
                        "--min_steps optimizer steps). Given explicitly, it wins")
    g.add_argument("--min_steps", type=int_range(0, 10**8), default=MIN_STEPS,
                   help=f"when --epochs is not given: train at least this many optimizer steps (default {MIN_STEPS}; "
                        f"small splits otherwise get a few hundred); 0 = always {DEFAULT_EPOCHS} epochs")
    g.add_argument("--batch_size", type=int_range(1, 65536), default=32, help="clips per step")
    g.add_argument("--lr", type=float_range(0.0, 10.0, low_open=True), default=3e-4, help="peak learning rate (AdamW)")
    g.add_argument("--weight_decay", type=float_range(0.0, 100.0), default=0.05, help="AdamW weight decay")
    g.add_argument("--warmup_epochs", type=int_range(0, 100000), default=5, help="linear warmup epochs, then cosine")
    g.add_argument("--min_lr_ratio", type=float_range(0.0, 1.0), default=0.01,
                   help="final learning rate as a fraction of --lr")
    g.add_argument("--grad_clip", type=float_range(0.0, 1e6, low_open=True), default=1.0, help="max gradient norm")
    g.add_argument("--label_smoothing", type=open_probability, default=0.1, help="label smoothing of the loss")
    g.add_argument("--balanced_sampling", action="store_true",
                   help="draw training clips class-balanced (each class equally often in expectation, with "
                        "replacement) instead of one pass over every clip: an option for long-tailed WLASL")
    g.add_argument("--use_class_weights", dest="use_class_weights", action="store_true", default=False,
                   help="weight the loss by inverse class frequency (recommended for nslt_1000)")
    g.add_argument("--no_class_weights", dest="use_class_weights", action="store_false",
                   help="plain loss (overrides --use_class_weights)")
    g.add_argument("--ema", action="store_true", help="evaluate and save an exponential moving average of weights")
    g.add_argument("--ema_decay", type=open_probability, default=0.999,
                   help="EMA decay per step (warmed up as (1+n)/(10+n) over the first steps)")

    add_augment_args(p)

    g = p.add_argument_group("run")
    g.add_argument("--output_dir", "--checkpoint_dir", "--log_dir", default=None,
                   help="run folder: checkpoints, logs, results (default runs/<subset>-<timestamp>)")
    g.add_argument("--resume", default=None, help="continue the run saved in this last.pt")
    g.add_argument("--overwrite", action="store_true", help="train into an --output_dir that already holds a run")
    g.add_argument("--save_every", type=int_range(1, 100000), default=None,
                   help=f"write last.pt every N epochs (default: every epoch up to {LAST_CHECKPOINTS} epochs, else "
                        f"about {LAST_CHECKPOINTS} times in the run). Ctrl-C, SIGTERM and a failed epoch still save the "
                        "last finished epoch; only a hard kill loses the epochs since the last write")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    g.add_argument("--seed", type=int_range(0, 2**32 - 1), default=42,
                   help="random seed (same seed + data + CPU = same metrics)")
    g.add_argument("--gpu_cache_gb", type=float_range(0.0, 1e4), default=1.25,
                   help="GPU memory for keeping packed splits on the GPU (train first); 0 keeps them in host memory")
    g.add_argument("--no_cuda_graphs", action="store_true", help="run CUDA steps eagerly instead of graph replay")
    g.add_argument("--no_compile", action="store_true",
                   help="on CUDA, do not torch.compile the forward pass before graph capture (compiling fuses the "
                        "many small kernels of augmentation, normalization and the model; it costs ~1 minute once)")
    g.add_argument("--tensorboard", action="store_true",
                   help="also log to <output_dir>/tensorboard (scalars per epoch, lr per step); needs tensorboard")
    g.add_argument("-v", "--verbose", action="store_true", help="more detail in the log")
    g.add_argument("--val_split", action=Refused,
                   help="this trainer never splits at random: the split file's own 'subset' field (train/val/test) "
                        "decides, as in the WLASL release; edit the split file to change it")
    return p


def settings(argv):
    """(parser, args, the flags given, resume checkpoint or None): the flags, with --demo's settings or the resumed run's own under
    the flags given now (a resumed run keeps its settings; flags given now override, e.g. --epochs to go on)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    given = explicit_flags(parser, argv)
    for flag in ("output_dir", "cache_dir", "data_dir", "subset"):
        if getattr(args, flag) is not None and not str(getattr(args, flag)).strip():
            parser.error(f"--{flag} is empty; give a path")
    resume = None
    if args.resume:
        resume = load_checkpoint(args.resume)
        if "optimizer" not in resume:
            raise DataError(f"--resume {quote(args.resume)} holds the weights for inference only (a best.pt); resume "
                            f"from the run's last.pt: --resume {quote(Path(args.resume).parent / 'last.pt')}")
        saved = {"landmark_frames": resume["args"].get("num_frames"), "min_steps": 0,  # runs saved before these
                 "ensemble": 1, **dict.fromkeys(PREPARE_FLAGS, False),
                 **resume["args"], **{k: getattr(args, k) for k in given}, "resume": args.resume}
        if "output_dir" not in given:
            saved["output_dir"] = str(Path(args.resume).parent)
        args = argparse.Namespace(**{**vars(args), **saved})
        changed = [k for k in MODEL_SHAPE_KEYS + SCHEDULE_KEYS if k in given and resume["args"].get(k) != getattr(args, k)]
        if changed:
            parser.error(f"--resume {args.resume}: that run was trained with different "
                         f"{', '.join('--' + k for k in changed)}; drop those flags to continue it "
                         "(start a new run to change them)")
    elif args.demo:
        for key, value in DEMO_SETTINGS.items():
            if key not in given:
                setattr(args, key, value)
    if args.augment is None:  # recorded in args.json as chosen
        args.augment = default_preset(args.modality)
    if args.ensemble is None:
        args.ensemble = LANDMARK_ENSEMBLE if args.modality == "landmarks" else 1
    for flag in HAND_FLAGS:  # channels of the normalized landmarks: off with --no_landmark_norm
        if getattr(args, flag) is None:
            setattr(args, flag, args.modality == "landmarks" and not args.no_landmark_norm)
    if args.mirror_left_handed is None:
        args.mirror_left_handed = args.modality == "landmarks"
    if args.model == "full" and args.modality != "hybrid":
        parser.error("--model full fuses both streams; use --modality hybrid (or --model simple)")
    if args.model == "full" and args.encoder != "transformer":
        parser.error(f"--encoder {args.encoder} is an encoder of the simple model; drop it or use --model simple")
    for flag in HAND_FLAGS:
        if getattr(args, flag) and (args.no_landmark_norm or args.modality == "gemma"):
            parser.error(f"--{flag} adds channels to the normalized landmarks; drop it, or drop --no_landmark_norm"
                         if args.no_landmark_norm else f"--{flag} describes the hands of the landmark stream; "
                         f"--modality gemma has none (drop --{flag})")
    if args.mirror_left_handed and args.modality == "gemma":
        parser.error("--mirror_left_handed mirrors the landmarks; --modality gemma has none (drop --mirror_left_handed)")
    if args.tta_flip and args.modality == "gemma":
        parser.error("--tta_flip mirrors the landmarks; --modality gemma has none (drop --tta_flip)")
    if args.hidden_dim % args.num_heads:
        parser.error(f"--hidden_dim {args.hidden_dim} must be divisible by --num_heads {args.num_heads}")
    if resume is None:
        args.num_frames = clip_frames(parser, args, given)
    for key in ("data_dir", "gemma_features_dir", "landmarks_dir", "cache_dir"):  # recorded as absolute paths, so
        if getattr(args, key):                                                   # evaluate/predict work from any folder
            setattr(args, key, os.path.abspath(getattr(args, key)))
    if os.path.isfile(args.subset):
        args.subset = os.path.abspath(args.subset)
    return parser, args, given, resume


def clip_frames(parser, args, given):
    """Frames per clip: the landmark stream alone keeps up to --landmark_frames (cheap to keep), every model that
    sees Gemma features uses --num_frames (the fusion pairs the streams frame by frame)."""
    if args.modality == "landmarks":
        frames = args.landmark_frames or (args.num_frames if "num_frames" in given else LANDMARK_FRAMES)
    else:
        if args.landmark_frames is not None and args.landmark_frames != args.num_frames:
            parser.error(f"--landmark_frames {args.landmark_frames}: --modality {args.modality} pairs the landmark and "
                         f"Gemma frames one to one, so both use --num_frames {args.num_frames}; drop --landmark_frames "
                         "(or give --num_frames), or use --modality landmarks")
        frames = args.num_frames
    args.landmark_frames = frames if args.modality != "gemma" else None
    return frames


def training_epochs(args, train_clips):
    """--epochs when given; else DEFAULT_EPOCHS, raised so that the run makes at least --min_steps optimizer steps."""
    if args.epochs is not None:
        return args.epochs
    steps_per_epoch = -(-train_clips // args.batch_size)
    return max(DEFAULT_EPOCHS, -(-args.min_steps // max(1, steps_per_epoch)))


def main(argv=None):
    with contextlib.ExitStack() as cleanup:  # releases the run folder's lock and the log however the run ends
        log = cleanup.enter_context(ConsoleLog())  # the console, kept in <run>/train.log
        try:
            return train(sys.argv[1:] if argv is None else argv, cleanup, log)
        except DataError as e:
            log.write(f"error: {e}\n")  # printed on the console by run_cli
            raise


def train(argv, cleanup, log):
    parser, args, given, resume = settings(argv)
    device = resolve_device(parser, args.device)
    if resume is not None and resume["epoch"] >= args.epochs and \
            (Path(args.output_dir) / "metrics.json").is_file():  # a finished run: its results stay as they are
        print(f"{quote(args.resume)}: the run finished all {args.epochs} epochs; its results are in "
              f"{Path(args.output_dir) / 'metrics.json'}. To train it longer: --resume {quote(args.resume)} --epochs N")
        return 0
    if args.output_dir is not None and Path(args.output_dir).is_dir():
        lock_run_folder(args.output_dir, cleanup)  # before looking at what the folder holds: it may be in use
    if not args.overwrite:
        check_output_dir(args, resume, lambda path: load_checkpoint(path)["epoch"])

    # ---- data: the split file decides train/val/test; every clip packed once, then memory-mapped --------------
    data = load_run_data(args, "gemma_feature_dim" in given, hint=", or try --demo")
    if resume is not None and ([e["wlasl_id"] for e in resume["label_mapping"]] != list(data.label_of)
                               or resume["gemma_dim"] != data.gemma_dim):
        # Checked before anything is written: a refused resume must not overwrite the run's args.json.
        raise DataError(f"--resume {args.resume}: that run was trained on other classes or features "
                        f"({len(resume['label_mapping'])} classes, feature width {resume['gemma_dim']}) than this "
                        f"data ({data.num_classes} classes, feature width {data.gemma_dim}); resume with the run's "
                        "own --data_dir and --subset")
    splits, label_mapping, num_classes, gemma_dim = data.splits, data.label_mapping, data.num_classes, data.gemma_dim
    if args.epochs is None:
        args.epochs = training_epochs(args, len(splits["train"]))
        if args.epochs != DEFAULT_EPOCHS:
            print(f"epochs: {args.epochs} ({len(splits['train'])} training clips: at least --min_steps "
                  f"{args.min_steps} optimizer steps; --epochs N sets it)")
    if args.save_every is None:
        args.save_every = -(-args.epochs // LAST_CHECKPOINTS)
    if args.warmup_epochs >= args.epochs:
        print(f"warning: --warmup_epochs {args.warmup_epochs} >= --epochs {args.epochs}: the learning rate only "
              f"warms up and never decays; give fewer warmup epochs (e.g. --warmup_epochs {args.epochs // 10})")
    train_counts = np.bincount(splits["train"].labels, minlength=num_classes)

    # ---- run folder ------------------------------------------------------------------------------------------
    if args.output_dir is None:
        args.output_dir = str(Path("runs") / f"{data.split_path.stem}-{time.strftime('%Y%m%d-%H%M%S')}")
    out_dir = Path(args.output_dir)
    for name in RUN_FILES:  # the run writes these names: none of them may be one of its inputs
        check_output_path(out_dir / name, "--output_dir", [("--subset", data.split_path),
                                                           ("class list", data.data_dir / "wlasl_class_list.txt"),
                                                           ("class list", data.data_dir / "WLASL_v0.3.json")])
    config = model_config(args, num_classes, gemma_dim)
    model_memory_check(args, config, len(splits["train"]), device)
    if not out_dir.is_dir():
        make_folder(out_dir, "--output_dir")
        lock_run_folder(out_dir, cleanup)
    log.start(out_dir, resumed=resume is not None)
    source_best = Path(args.resume).parent / "best.pt" if args.resume else None
    if source_best is not None and source_best.is_file() and not (out_dir / "best.pt").is_file():
        # resuming into a new folder: it starts with the best checkpoint so far, so the branch is self-contained
        atomic_write_bytes(out_dir / "best.pt", source_best.read_bytes())
    write_json(out_dir / "args.json", vars(args))
    write_json(out_dir / "label_mapping.json", label_mapping)

    # ---- model, landmark normalization, optimizer, schedule ------------------------------------------------
    torch.manual_seed(args.seed)
    model = build_model(config).to(device)
    prepare = None if args.modality == "gemma" else landmark_preprocessor(args, splits["train"], resume).to(device)
    if prepare is not None:
        train = splits["train"]
        mirrored = left_handed_count(train.landmarks, train.lengths) if prepare.mirror_left_handed else None
        print(f"landmarks: {prepare.describe()}" + (f"; left-handed clips mirrored: {mirrored} of {len(train.labels)} "
                                                     "training clips" if mirrored is not None else ""))
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]  # biases and norms are not decayed
    bf16 = uses_bf16(device)
    # CUDA graphs need static shapes and no host synchronisation; the fp16 GradScaler synchronises, so graphs
    # are used with bf16 (Ampere and newer) only.
    use_graphs = device.type == "cuda" and bf16 and not args.no_cuda_graphs
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and not bf16)
    # Fused AdamW with a tensor learning rate: one kernel per step, capturable in a CUDA graph, and it can skip
    # a step on the device when found_inf is set (no host round trip to check the loss).
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=torch.tensor(args.lr, device=device), fused=True, capturable=use_graphs)
    on_device = place_splits_on_device(splits, device, args.gpu_cache_gb)
    # On CUDA every batch has the same shape (the last one padded with weight-0 rows), graphs or not, so that
    # eager and replayed runs do the same arithmetic.
    loaders = {name: BatchLoader(splits[name], args.batch_size, device, on_device[name], device.type == "cuda",
                                 balanced=args.balanced_sampling and name == "train")
               for name in ("train", "val", "test")}
    scheduler = get_cosine_schedule_with_warmup(optimizer, args.warmup_epochs, args.epochs, len(loaders["train"]),
                                                args.min_lr_ratio)
    class_weights = (compute_class_weights(splits["train"].labels, num_classes) if args.use_class_weights
                     else torch.ones(num_classes)).to(device)
    ema = EMA(model, args.ema_decay) if args.ema else None
    print(f"model: {args.model} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters"
          f"{f', an ensemble of {args.ensemble}' if args.ensemble > 1 else ''}) on {device}"
          + (f", {'bf16' if bf16 else 'fp16'} autocast, CUDA graphs {'on' if use_graphs else 'off'}, "
             f"on the GPU: {', '.join(k for k, v in on_device.items() if v) or 'none'}" if device.type == "cuda"
             else ""))
    if args.verbose:
        print(f"  settings: {json.dumps({k: v for k, v in vars(args).items() if v is not None})}")
        if args.use_class_weights:
            print(f"  class weights: min {class_weights.min():.2f} max {class_weights.max():.2f}")

    start_epoch, best_top1, best_epoch, history = 0, -1.0, -1, []
    if resume is not None:
        start_epoch, best_top1, best_epoch, history = restore_training(resume, args.resume, model, optimizer,
                                                                       scheduler, scaler, ema)
        print(f"resumed from {args.resume} after epoch {start_epoch}")

    def checkpoint(epoch, weights=None):
        """What inference needs (config, normalization, labels, the weights to use: best.pt is only this) and,
        without `weights`, what resuming needs too (the model's and the EMA's weights, optimizer, schedule)."""
        state = {"format": CHECKPOINT_FORMAT, "model_config": config,
                 "landmark_normalization": prepare.state() if prepare is not None else None,
                 "model": weights, "epoch": epoch, "best_val_top1": best_top1, "best_epoch": best_epoch,
                 "history": history, "args": vars(args), "label_mapping": label_mapping, "gemma_dim": gemma_dim,
                 "num_classes": num_classes, "train_counts": train_counts.tolist()}
        if weights is None:
            state.update(model=model.state_dict(), ema=ema.model.state_dict() if ema is not None else None,
                         ema_updates=ema.updates.item() if ema is not None else 0.0,
                         optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(), scaler=scaler.state_dict())
        return state

    eval_model = ema.model if ema is not None else model  # evaluation and model selection use the EMA when it is on
    steps = build_steps(model, eval_model, prepare, optimizer, scaler, ema, class_weights,
                        augment_config_from_args(args), loaders["train"], loaders["val"], args, device, use_graphs,
                        compile_forward=use_graphs and not args.no_compile)
    if args.verbose and device.type == "cuda":
        print(f"  GPU memory after setup: {torch.cuda.memory_allocated(device) / 1e9:.2f} GB allocated, "
              f"peak {torch.cuda.max_memory_allocated(device) / 1e9:.2f} GB")
    writer = tensorboard_writer(out_dir) if args.tensorboard else None
    resume_command = f"python train_simple.py --resume {shlex.quote(str(out_dir / 'last.pt'))}"  # pastes as is
    if resume is None:
        save_checkpoint(checkpoint(0), out_dir / "last.pt")  # so even an interrupted first epoch can resume

    # ---- training --------------------------------------------------------------------------------------------
    skipped_steps, unsaved = 0, None  # unsaved: the last finished epoch's checkpoint when last.pt is older

    def save_unsaved():
        if unsaved is not None:
            save_checkpoint(unsaved, out_dir / "last.pt")
    try:
        for epoch in range(start_epoch, args.epochs):
            t0 = time.time()
            model.train()
            # Every epoch draws from its own seeds, so a resumed run replays exactly what the uninterrupted one did.
            torch.manual_seed(args.seed * 1000 + epoch)
            generator = None if use_graphs else torch.Generator(device).manual_seed(args.seed * 1000 + epoch)
            steps.totals.zero_()
            data_seconds = 0.0  # host time spent producing batches (the data-wait share of the epoch)
            plan = iter(loaders["train"].plan(shuffle=True, seed=args.seed * 1000 + epoch))
            for _ in tqdm(range(len(loaders["train"])), desc=f"epoch {epoch + 1}", leave=False,
                          disable=not sys.stderr.isatty()):
                t_data = time.perf_counter()
                step_input = next(plan)
                data_seconds += time.perf_counter() - t_data
                steps.train(step_input, generator)
                scheduler.step()
                if writer is not None:  # the lr from the schedule's own formula: no device round trip
                    writer.add_scalar("lr", args.lr * scheduler.lr_lambdas[0](scheduler.last_epoch),
                                      scheduler.last_epoch)
            loss_sum, correct, seen, nonfinite = steps.totals.tolist()
            nonfinite, n_steps = int(nonfinite), len(loaders["train"])
            skipped_steps += nonfinite
            if nonfinite and nonfinite > n_steps // 2:  # most of an epoch lost: something is wrong, stop
                print(f"error: {nonfinite} of {n_steps} steps in epoch {epoch + 1} had a non-finite loss; lower --lr "
                      f"(now {args.lr:g}) or check the features for extreme values. The last good checkpoint is "
                      f"{quote(out_dir / 'last.pt')}", file=sys.stderr)
                save_unsaved()
                return 1
            if nonfinite:
                print(f"warning: skipped {nonfinite} steps with a non-finite loss in epoch {epoch + 1}")

            train_seconds = time.time() - t0
            val = evaluate(eval_model, prepare, loaders["val"], steps.amp, num_classes, steps.val)
            train_loss = loss_sum / max(seen, 1)
            row = dict(epoch=epoch + 1, train_loss=round(train_loss, 5), train_top1=round(correct / max(seen, 1), 5),
                       val_loss=round(val["loss"], 5), val_top1=round(val["top1"], 5), val_top5=round(val["top5"], 5),
                       val_per_class_top1=round(val["per_class_top1"], 5),
                       lr=f"{optimizer.param_groups[0]['lr']:.3e}", train_seconds=round(train_seconds, 3),
                       data_seconds=round(data_seconds, 3), seconds=round(time.time() - t0, 2), skipped_steps=nonfinite)
            history.append(row)
            if val["top1"] > best_top1:
                best_top1, best_epoch = val["top1"], epoch + 1
                save_checkpoint(checkpoint(epoch + 1, eval_model.state_dict()), out_dir / "best.pt")  # as evaluated
            if (epoch + 1) % args.save_every == 0 or epoch + 1 == args.epochs:
                save_checkpoint(checkpoint(epoch + 1), out_dir / "last.pt")
                unsaved = None
            else:  # kept in host memory: an interrupt or a failed epoch writes it
                unsaved = detached_copy(checkpoint(epoch + 1))
            write_summary(out_dir / "summary.csv", history)
            if writer is not None:
                for key, value in row.items():
                    if key not in ("epoch", "lr"):
                        writer.add_scalar(key, float(value), epoch + 1)
                writer.flush()
            print(f"epoch {epoch + 1:3d}/{args.epochs}  train loss {train_loss:.4f} top1 {row['train_top1']:.3f}  "
                  f"val loss {val['loss']:.4f} top1 {val['top1']:.3f} top5 {val['top5']:.3f}  "
                  f"lr {row['lr']}  {row['seconds']:.1f}s" + ("  *" if best_epoch == epoch + 1 else ""))
    except KeyboardInterrupt as stop:
        save_unsaved()
        print(f"\ninterrupted{' (SIGTERM)' if isinstance(stop, Terminated) else ''}; {out_dir / 'last.pt'} holds the "
              f"last finished epoch. Resume with:\n  {resume_command}")
        return exit_code(stop)  # Ctrl-C: 130; SIGTERM: 143

    # ---- final evaluation: the best-on-val weights, test split once -----------------------------------------
    best = load_checkpoint(out_dir / "best.pt")["model"]
    with torch.no_grad():
        for name, t in eval_model.state_dict().items():
            t.copy_(best[name])  # in place: a captured eval graph keeps reading the same tensors
    metrics = {"num_classes": num_classes, "best_epoch": best_epoch}
    for name in ("val", "test"):
        metrics[name] = evaluate(eval_model, prepare, loaders[name], steps.amp, num_classes,
                                 steps.val if name == "val" else None, args.tta_flip)
    metrics["skipped"] = {name: dict(split.skipped, nonfinite_landmark_clips=split.nonfinite_landmark_clips)
                          for name, split in splits.items()}
    metrics["skipped_steps"] = skipped_steps
    write_json(out_dir / "metrics.json", metrics)  # strict JSON: a NaN loss (no clip scored) is written as null
    plots.plot_training_curves(out_dir / "summary.csv", out_dir / "curves.png")  # skipped without matplotlib
    test = metrics["test"]
    print(f"best epoch {best_epoch}: test top1 {test['top1']:.3f} top5 {test['top5']:.3f} "
          f"(per class {test['per_class_top1']:.3f} / {test['per_class_top5']:.3f}) on {test['n']} of "
          f"{test['n_listed']} test clips -> {out_dir / 'metrics.json'}")
    return 0


def run(argv=None):
    """Entry point: user errors become one line on stderr and exit code 2, never a traceback."""
    try:
        return run_cli(main, argv, interrupted="interrupted before training started; nothing to resume, run the "
                                               "same command again")
    except torch.OutOfMemoryError:
        print("error: CUDA out of memory; lower --batch_size (e.g. 16 or 8) or --gpu_cache_gb, or use --device cpu",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(run())
