"""
Evaluate a trained checkpoint on one split: per-instance and per-class accuracy, a per-class table, confusions.

    python train_simple.py --demo --output_dir runs/demo    # a run to evaluate (default: runs/<subset>-<timestamp>)
    python evaluate.py --checkpoint runs/demo/best.pt                  # test split -> runs/demo/eval_test/
    python evaluate.py --checkpoint runs/nslt_100-20261124-120000/best.pt --split val
    python evaluate.py --checkpoint best.pt --data_dir /mnt/wlasl --landmarks_dir /mnt/wlasl/lm   # data moved

The split is read exactly as training reads it (hybrid_asl.packing: same sampling, masks, skipped-file counts, cache), with
the checkpoint's own settings and label mapping; clips of classes the checkpoint does not know are skipped and
counted. Writes <output_dir>/eval_<split>/ (default output_dir: the checkpoint's folder, so the run's own
metrics.json is never overwritten):
    metrics.json     the training schema: {"num_classes", "best_epoch", "<split>": {top1, top5, per_class_top1,
                     per_class_top5, loss, n, n_listed}, "skipped": {...}}
    per_class.csv    index, wlasl_id, gloss, n (clips evaluated), top1, top5, train_clips
    confusions.csv   the 50 most frequent (true gloss -> predicted gloss) mistakes with counts
    confusion_matrix.csv   every non-empty cell of the true x predicted (top-1) matrix, right ones included:
                     true_index, true_wlasl_id, true_gloss, predicted_index, predicted_wlasl_id, predicted_gloss, count
    per_class.png, confusions.png, confusion_matrix.png   when matplotlib is installed (the matrix up to 50
                     classes, the most confused pairs beyond; python -m hybrid_asl.plots redraws any of them)
"""
import argparse
import io
import os
import sys
from contextlib import redirect_stdout
from pathlib import Path

from hybrid_asl import plots
from hybrid_asl.batches import BatchLoader
from hybrid_asl.checkpoint import load_trained
from hybrid_asl.cli import HelpFormatter, positive_int, resolve_device, run_cli
from hybrid_asl.engine import amp_context, predict_logits
from hybrid_asl.errors import DataError
from hybrid_asl.files import atomic_write_text, check_output_path, csv_text, make_folder, write_json
from hybrid_asl.metrics import (CONFUSION_MATRIX_FIELDS, classification_metrics, confusion_counts,
                                confusion_matrix_rows, confusion_rows, per_class_rows)
from hybrid_asl.packing import load_splits
from hybrid_asl.recipe import verify_feature_dimensions
from hybrid_asl.run_folder import training_folder
from hybrid_asl.splits import SPLIT_HINT, SUBSETS, data_paths, load_split


def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--checkpoint", required=True, help="best.pt or last.pt written by train_simple.py")
    p.add_argument("--split", default="test", choices=SUBSETS, help="which split of the split file to evaluate")
    p.add_argument("--output_dir", default=None,
                   help="results go to <output_dir>/eval_<split>/ (default: the checkpoint's folder)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--batch_size", type=positive_int, default=None,
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


def split_paths(cli, args):
    """splits.data_paths as training resolved them. Flags given now are relative to here; the --data_dir and
    --subset recorded in the checkpoint are relative to where training ran, so when the split file is not found
    from here it is looked for from there."""
    paths = data_paths(args)
    if paths[1].is_file() or cli.subset:
        return paths  # found, or the user's own --subset: load_split names the file they gave
    if cli.data_dir:
        args.subset = Path(args.subset).name  # the data moved: its split file by name, in the new --data_dir
        if data_paths(args)[1].is_file():
            return data_paths(args)
        raise DataError(f"split file not found: {cli.checkpoint} records --subset {args.subset} (as given at "
                        f"training time), which is not in --data_dir {cli.data_dir}; pass --subset too")
    folder = training_folder(cli.checkpoint, args.output_dir)
    if folder is not None:
        for key in ("gemma_features_dir", "landmarks_dir", "cache_dir"):  # given now: relative to here
            if getattr(cli, key):
                setattr(args, key, os.path.abspath(getattr(cli, key)))
        there = data_paths(args, base=folder)
        if there[1].is_file():
            return there
    raise DataError(f"split file not found: {cli.checkpoint} records --data_dir {args.data_dir} --subset "
                    f"{args.subset}" + ("" if paths[1].is_absolute() else ", relative to the folder training ran in")
                    + "; pass --data_dir and --subset (where the split file is now)")


def main(argv=None):
    parser, cli = get_args(argv)
    if cli.output_dir is not None and not cli.output_dir.strip():
        parser.error("--output_dir is empty; give a folder (default: the checkpoint's folder)")
    device = resolve_device(parser, cli.device)
    overrides = {k: getattr(cli, k) for k in ("data_dir", "subset", "gemma_features_dir", "landmarks_dir",
                                               "cache_dir", "batch_size")}
    if cli.no_cache:
        overrides["no_cache"] = True
    model, prepare, args, checkpoint = load_trained(cli.checkpoint, device, overrides)
    label_mapping, gemma_dim = checkpoint["label_mapping"], checkpoint["gemma_dim"]
    num_classes = checkpoint["num_classes"]

    # ---- the split, packed as training packs it --------------------------------------------------------------
    data_dir, split_path, gemma_dir, landmarks_dir, cache_dir = split_paths(cli, args)
    clips = load_split(split_path, hint=SPLIT_HINT)
    for needed, folder, flag in (("hybrid gemma", gemma_dir, "--gemma_features_dir"),
                                 ("hybrid landmarks", landmarks_dir, "--landmarks_dir")):
        if args.modality in needed.split() and not folder.is_dir():
            raise DataError(f"{folder} not found: the checkpoint (modality {args.modality}) needs it; "
                            f"set {flag} (or --data_dir) to where the files are now")
    if args.modality != "landmarks":
        # Its warnings say how training would go on with other widths; here a mismatch ends the run instead.
        with redirect_stdout(io.StringIO()) as notes:
            detected = verify_feature_dimensions(gemma_dir, gemma_dim)
        if detected != gemma_dim:
            raise DataError(f"the Gemma features in {gemma_dir} are {detected}-wide but {cli.checkpoint} was trained "
                            f"on {gemma_dim}-wide ones; point --gemma_features_dir at the features it was trained "
                            "with (same model and --layer)")
        print(notes.getvalue(), end="")
    label_of = {entry["wlasl_id"]: entry["index"] for entry in label_mapping}
    unknown = [c for c in clips.values() if c.subset == cli.split and c.class_id not in label_of]
    known = {v: c for v, c in clips.items() if c.class_id in label_of}
    split = load_splits(known, label_of, gemma_dir, landmarks_dir, args.modality, args.num_frames, gemma_dim,
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
    logits, labels = predict_logits(model, prepare, loader, amp_context(device), tta_flip=args.tta_flip)
    metrics = classification_metrics(logits, labels, num_classes)
    metrics["n_listed"] = split.listed
    result = {"num_classes": num_classes, "best_epoch": checkpoint["best_epoch"], cli.split: metrics,
              "skipped": {cli.split: dict(split.skipped, nonfinite_landmark_clips=split.nonfinite_landmark_clips)},
              "checkpoint": str(cli.checkpoint), "checkpoint_epoch": checkpoint["epoch"],
              "split_file": str(split_path)}
    class_rows = per_class_rows(logits, labels, label_mapping, checkpoint["train_counts"])
    mistakes = confusion_rows(logits, labels, label_mapping)
    counts = confusion_counts(logits, labels, num_classes)

    out_dir = Path(cli.output_dir or Path(cli.checkpoint).parent) / f"eval_{cli.split}"
    make_folder(out_dir, "--output_dir")
    for name in ("metrics.json", "per_class.csv", "confusions.csv", "confusion_matrix.csv"):  # never over an input
        check_output_path(out_dir / name, "--output_dir", [("--checkpoint", cli.checkpoint), ("--subset", split_path)])
    write_json(out_dir / "metrics.json", result)
    atomic_write_text(out_dir / "per_class.csv", csv_text(class_rows, list(class_rows[0])))
    atomic_write_text(out_dir / "confusions.csv", csv_text(mistakes, [
        "true_wlasl_id", "true_gloss", "predicted_wlasl_id", "predicted_gloss", "count"]))
    atomic_write_text(out_dir / "confusion_matrix.csv",
                      csv_text(confusion_matrix_rows(counts, label_mapping), CONFUSION_MATRIX_FIELDS))
    written = ["metrics.json", "per_class.csv", "confusions.csv", "confusion_matrix.csv"]
    if not cli.no_plots:
        title = f"{split_path.name}, {cli.split} split"
        if plots.plot_per_class_accuracy(out_dir / "per_class.csv", out_dir / "per_class.png",
                                         title=f"{title}: per-class top-1 against training clips"):
            written.append("per_class.png")
        if plots.plot_confusions(out_dir / "confusions.csv", out_dir / "confusions.png",
                                 title=f"{title}: most confused pairs (true \u2192 predicted)"):
            written.append("confusions.png")
        if plots.plot_confusion_matrix(counts, out_dir / "confusion_matrix.png",
                                       glosses=[e["gloss"] for e in sorted(label_mapping, key=lambda e: e["index"])],
                                       title=title):
            written.append("confusion_matrix.png")

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
