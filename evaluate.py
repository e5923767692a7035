"""
Evaluate a trained checkpoint on one split: per-instance and per-class accuracy, a per-class table, confusions.

    python train_simple.py --demo --output_dir runs/demo    # a run to evaluate (default: runs/<subset>-<timestamp>)
    python evaluate.py --checkpoint runs/demo/best.pt                  # test split -> runs/demo/eval_test/
    python evaluate.py --checkpoint runs/nslt_100-20261124-120000/best.pt --split val
    python evaluate.py --checkpoint best.pt --data_dir /mnt/wlasl --landmarks_dir /mnt/wlasl/lm   # data moved

The split is read exactly as training reads it (wlasl_data: same sampling, masks, skipped-file counts, cache), with
the checkpoint's own settings and label mapping; clips of classes the checkpoint does not know are skipped and
counted. Writes <output_dir>/eval_<split>/ (default output_dir: the checkpoint's folder, so the run's own
metrics.json is never overwritten):
    metrics.json     the training schema: {"num_classes", "best_epoch", "<split>": {top1, top5, per_class_top1,
                     per_class_top5, loss, n, n_listed}, "skipped": {...}}
    per_class.csv    index, wlasl_id, gloss, n (clips evaluated), top1, top5, train_clips
    confusions.csv   the 50 most frequent (true gloss -> predicted gloss) mistakes with counts
    per_class.png, confusions.png   when matplotlib is installed
"""
import argparse
import io
import json
import os
import sys
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np

import torch

import plots
import train_simple
from safe_io import DataError, atomic_write_text, check_output_path, make_folder, run_cli, write_json
from wlasl_data import SPLIT_HINT, SUBSETS, BatchLoader, load_split, load_splits

TOP_CONFUSIONS = 50


def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="best.pt or last.pt written by train_simple.py")
    p.add_argument("--split", default="test", choices=SUBSETS, help="which split of the split file to evaluate")
    p.add_argument("--output_dir", default=None,
                   help="results go to <output_dir>/eval_<split>/ (default: the checkpoint's folder)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--batch_size", type=train_simple.positive_int, default=None,
                   help="clips per forward pass (default: the training run's)")
    p.add_argument("--no_plots", action="store_true", help="write the CSV/JSON files only, no PNGs")
    g = p.add_argument_group("data (default: where the checkpoint was trained; give these when the data moved)")
    g.add_argument("--data_dir", default=None, help="folder with the split files and class list")
    g.add_argument("--subset", default=None, help="split file, in --data_dir or a path")
    g.add_argument("--gemma_features_dir", default=None, help="{video_id}_gemma.npy files")
    g.add_argument("--landmarks_dir", default=None, help="{video_id}_landmarks.npy files")
    g.add_argument("--cache_dir", default=None, help="packed-feature cache (default <data_dir>/.cache)")
    g.add_argument("--no_cache", action="store_true", help="pack the split in memory only, write no cache")
    return p, p.parse_args(argv)


def load_trained_model(checkpoint_path, device, overrides=None):
    """(model in eval mode on device, training args with `overrides` applied, checkpoint dict).

    Arguments missing from an older checkpoint take train_simple's current defaults. The weights are the ones
    training evaluated: the EMA when the run kept one.
    """
    checkpoint = train_simple.load_checkpoint(checkpoint_path)
    args = train_simple.build_parser().parse_args([])
    vars(args).update(checkpoint["args"])
    vars(args).update({k: v for k, v in (overrides or {}).items() if v is not None})
    model = train_simple.build_model(args, checkpoint["num_classes"], checkpoint["feature_dim"])
    weights = checkpoint.get("ema") or checkpoint["model"]
    broken = [name for name, t in weights.items()
              if torch.is_tensor(t) and t.is_floating_point() and not torch.isfinite(t).all()]
    if broken:  # the model would only ever answer NaN
        raise DataError(f"{checkpoint_path} holds NaN or infinite weights ({', '.join(broken[:3])}); it cannot "
                        "predict: use another checkpoint (e.g. the run's best.pt)")
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise DataError(f"{checkpoint_path}: the weights do not fit the model its own settings describe "
                        f"({str(e).splitlines()[-1].strip()[:120]}); was it written by another version?")
    return model.to(device).eval(), args, checkpoint


def training_folder(checkpoint_path, output_dir):
    """The folder train_simple.py ran in: the checkpoint's folder less the run folder it was given (relative to
    where it ran). None when that cannot be known: an absolute --output_dir, or a run folder moved since."""
    run_dir, recorded = Path(os.path.abspath(checkpoint_path)).parent, Path(output_dir or "")
    n = len(recorded.parts)
    if n == 0 or recorded.is_absolute() or ".." in recorded.parts or run_dir.parts[-n:] != recorded.parts:
        return None
    return Path(*run_dir.parts[:-n])


def recorded_dir(checkpoint_path, args, path):
    """A folder recorded in the checkpoint's args (relative to where training ran) as a path usable from here."""
    if path is None or Path(path).is_absolute() or Path(path).exists():
        return path
    folder = training_folder(checkpoint_path, args.output_dir)
    return str(folder / path) if folder is not None and (folder / path).exists() else path


def data_paths(cli, args):
    """train_simple.data_paths as training resolved them. Flags given now are relative to here; the --data_dir and
    --subset recorded in the checkpoint are relative to where training ran, so when the split file is not found
    from here it is looked for from there."""
    paths = train_simple.data_paths(args)
    if paths[1].is_file() or cli.subset:
        return paths  # found, or the user's own --subset: load_split names the file they gave
    if cli.data_dir:
        raise DataError(f"split file not found: {cli.checkpoint} records --subset {args.subset} (as given at "
                        f"training time), which is not in --data_dir {cli.data_dir}; pass --subset too")
    folder = training_folder(cli.checkpoint, args.output_dir)
    if folder is not None:
        for key in ("gemma_features_dir", "landmarks_dir", "cache_dir"):  # given now: relative to here
            if getattr(cli, key):
                setattr(args, key, os.path.abspath(getattr(cli, key)))
        there = train_simple.data_paths(args, base=folder)
        if there[1].is_file():
            return there
    raise DataError(f"split file not found: {cli.checkpoint} records --data_dir {args.data_dir} --subset "
                    f"{args.subset}" + ("" if paths[1].is_absolute() else ", relative to the folder training ran in")
                    + "; pass --data_dir and --subset (where the split file is now)")


amp_context = train_simple.amp_context  # the autocast training used on this device


def per_class_rows(logits, labels, label_mapping, train_counts):
    """One row per class of the checkpoint: clips evaluated and their top-1 / top-5 (empty when n = 0)."""
    num_classes = len(label_mapping)
    n, hits1 = (t.numpy() for t in train_simple.per_class_hits(logits, labels, num_classes, 1))
    _, hits5 = (t.numpy() for t in train_simple.per_class_hits(logits, labels, num_classes, 5))
    rows = []
    for entry in label_mapping:
        i = entry["index"]
        rows.append({"index": i, "wlasl_id": entry["wlasl_id"], "gloss": entry["gloss"], "n": int(n[i]),
                     "top1": round(hits1[i] / n[i], 5) if n[i] else "",
                     "top5": round(hits5[i] / n[i], 5) if n[i] else "",
                     "train_clips": "" if train_counts is None else int(train_counts[i])})  # unknown: older run
    return rows


def confusion_rows(logits, labels, label_mapping, top=TOP_CONFUSIONS):
    """The `top` most frequent (true, predicted) pairs among top-1 mistakes, most frequent first."""
    predicted = np.asarray(logits).argmax(axis=1)
    wrong = predicted != labels
    pairs, counts = np.unique(np.stack([labels[wrong], predicted[wrong]], axis=1), axis=0, return_counts=True)
    order = sorted(range(len(counts)), key=lambda k: (-counts[k], pairs[k][0], pairs[k][1]))[:top]
    rows = []
    for k in order:
        true, pred = (label_mapping[int(c)] for c in pairs[k])
        rows.append({"true_wlasl_id": true["wlasl_id"], "true_gloss": true["gloss"],
                     "predicted_wlasl_id": pred["wlasl_id"], "predicted_gloss": pred["gloss"],
                     "count": int(counts[k])})
    return rows


def main(argv=None):
    parser, cli = get_args(argv)
    if cli.output_dir is not None and not cli.output_dir.strip():
        parser.error("--output_dir is empty; give a folder (default: the checkpoint's folder)")
    device = train_simple.resolve_device(parser, cli.device)
    overrides = {k: getattr(cli, k) for k in ("data_dir", "subset", "gemma_features_dir", "landmarks_dir",
                                               "cache_dir", "batch_size")}
    if cli.no_cache:
        overrides["no_cache"] = True
    model, args, checkpoint = load_trained_model(cli.checkpoint, device, overrides)
    label_mapping, feature_dim = checkpoint["label_mapping"], checkpoint["feature_dim"]
    num_classes = checkpoint["num_classes"]

    # ---- the split, packed as training packs it --------------------------------------------------------------
    data_dir, split_path, gemma_dir, landmarks_dir, cache_dir = data_paths(cli, args)
    clips = load_split(split_path, hint=SPLIT_HINT)
    for needed, folder, flag in (("hybrid gemma", gemma_dir, "--gemma_features_dir"),
                                 ("hybrid landmarks", landmarks_dir, "--landmarks_dir")):
        if args.modality in needed.split() and not folder.is_dir():
            raise DataError(f"{folder} not found: the checkpoint (modality {args.modality}) needs it; "
                            f"set {flag} (or --data_dir) to where the files are now")
    if args.modality != "landmarks":
        # Its warnings say how training would go on with other widths; here a mismatch ends the run instead.
        with redirect_stdout(io.StringIO()) as notes:
            detected = train_simple.verify_feature_dimensions(gemma_dir, feature_dim)
        if detected != feature_dim:
            raise DataError(f"the features in {gemma_dir} are {detected}-wide but {cli.checkpoint} was trained on "
                            f"{feature_dim}-wide features; point --gemma_features_dir at the features it was "
                            "trained with (same model and --layer)")
        print(notes.getvalue(), end="")
    label_of = {entry["wlasl_id"]: entry["index"] for entry in label_mapping}
    unknown = [c for c in clips.values() if c.subset == cli.split and c.class_id not in label_of]
    known = {v: c for v, c in clips.items() if c.class_id in label_of}
    split = load_splits(known, label_of, gemma_dir, landmarks_dir, args.modality, args.num_frames, feature_dim,
                        cache_dir=cache_dir, subset_name=split_path.name, splits=(cli.split,))[cli.split]
    if unknown:  # counted like any other skipped clip, so `evaluated N of M listed` stays honest
        split.listed += len(unknown)
        split.skipped = dict(split.skipped, class_not_in_checkpoint=len(unknown))
        split.skipped_ids = dict(split.skipped_ids, class_not_in_checkpoint=[c.video_id for c in unknown[:20]])
    print(f"{cli.checkpoint}: {args.model} model, modality {args.modality}, {num_classes} classes, "
          f"epoch {checkpoint['epoch']} (best on val: epoch {checkpoint['best_epoch']})")
    if checkpoint.get("older_version"):
        print(f"note: {cli.checkpoint} was {checkpoint['older_version']}: per_class.csv leaves what it lacks empty")
    print(f"{split_path}: " + split.report())
    if len(split) == 0:
        raise DataError(f"no usable {cli.split} clip in {split_path} (of {split.listed} listed): check "
                        f"{landmarks_dir if args.modality != 'gemma' else gemma_dir} or pass --data_dir/--subset")

    # ---- predictions and metrics -----------------------------------------------------------------------------
    loader = BatchLoader(split, args.batch_size, device)
    logits, labels = train_simple.predict_logits(model, loader, args, amp_context(device))
    metrics = train_simple.classification_metrics(logits, labels, num_classes)
    metrics["n_listed"] = split.listed
    result = {"num_classes": num_classes, "best_epoch": checkpoint["best_epoch"], cli.split: metrics,
              "skipped": {cli.split: dict(split.skipped, nonfinite_landmark_clips=split.nonfinite_landmark_clips)},
              "checkpoint": str(cli.checkpoint), "checkpoint_epoch": checkpoint["epoch"],
              "split_file": str(split_path)}
    class_rows = per_class_rows(logits, labels, label_mapping, checkpoint["train_counts"])
    mistakes = confusion_rows(logits, labels, label_mapping)

    out_dir = Path(cli.output_dir or Path(cli.checkpoint).parent) / f"eval_{cli.split}"
    make_folder(out_dir, "--output_dir")
    for name in ("metrics.json", "per_class.csv", "confusions.csv"):  # never over one of this command's inputs
        check_output_path(out_dir / name, "--output_dir", [("--checkpoint", cli.checkpoint), ("--subset", split_path)])
    write_json(out_dir / "metrics.json", result)
    atomic_write_text(out_dir / "per_class.csv", train_simple.csv_text(class_rows, list(class_rows[0])))
    atomic_write_text(out_dir / "confusions.csv", train_simple.csv_text(mistakes, [
        "true_wlasl_id", "true_gloss", "predicted_wlasl_id", "predicted_gloss", "count"]))
    written = ["metrics.json", "per_class.csv", "confusions.csv"]
    if not cli.no_plots:
        title = f"{split_path.name}, {cli.split} split"
        if plots.plot_per_class_accuracy(out_dir / "per_class.csv", out_dir / "per_class.png",
                                         title=f"{title}: per-class top-1 against training clips"):
            written.append("per_class.png")
        if plots.plot_confusions(out_dir / "confusions.csv", out_dir / "confusions.png",
                                 title=f"{title}: most confused pairs (true \u2192 predicted)"):
            written.append("confusions.png")

    # ---- report ----------------------------------------------------------------------------------------------
    print(f"{cli.split}: evaluated {metrics['n']} of {metrics['n_listed']} listed clips")
    print(f"  per instance: top-1 {metrics['top1']:.3f}  top-5 {metrics['top5']:.3f}  (loss {metrics['loss']:.4f})")
    print(f"  per class:    top-1 {metrics['per_class_top1']:.3f}  top-5 {metrics['per_class_top5']:.3f}  "
          f"(mean over the {sum(r['n'] > 0 for r in class_rows)} classes with a {cli.split} clip)")
    if mistakes:
        print("  most confused: " + ", ".join(f"{r['true_gloss']} -> {r['predicted_gloss']} ({r['count']})"
                                              for r in mistakes[:5]))
    print(f"wrote {out_dir}/: {', '.join(written)}")
    return 0


def run(argv=None):
    return run_cli(main, argv)


if __name__ == "__main__":
    sys.exit(run())
