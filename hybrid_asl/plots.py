"""
Pictures of a run: training curves, per-class accuracy against training clips, the most confused gloss pairs.

    python train_simple.py --demo --output_dir runs/demo       # a run (default folder: runs/<subset>-<timestamp>)
    python -m hybrid_asl.plots runs/demo/summary.csv            # -> runs/demo/curves.png
    python -m hybrid_asl.plots runs/demo/eval_test/per_class.csv     # -> runs/demo/eval_test/per_class.png
    python -m hybrid_asl.plots runs/demo/eval_test/confusions.csv    # -> runs/demo/eval_test/confusions.png

train_simple.py draws curves.png at the end of a run and evaluate.py draws the other two. matplotlib is an
optional extra (pip install matplotlib): without it every function prints one line and returns None. A picture
is never worth a crash, so no function here raises; each returns the PNG path it wrote, or None.
"""
import argparse
import csv
import math
import sys
from pathlib import Path

from hybrid_asl.files import atomic_write, not_a_regular_file

_missing_noted = False


def _pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed), or None with a one-line note (printed once)."""
    global _missing_noted
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        return plt
    except Exception as e:  # ImportError, or a broken install: either way there is no picture
        if not _missing_noted:
            reason = "not installed" if isinstance(e, ImportError) else f"unusable ({type(e).__name__})"
            print(f"note: matplotlib is {reason}, so no PNGs are drawn (pip install matplotlib)")
            _missing_noted = True
        return None


def _save(fig, plt, out_png):
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    try:  # written under a temporary name, then renamed: never half a PNG
        atomic_write(out_png, lambda f: fig.savefig(f, format="png", dpi=110), "wb")
    finally:
        plt.close(fig)
    return out_png


def _read_csv(path):
    why = not_a_regular_file(path)
    if why:  # a FIFO would block the read
        raise ValueError(f"{path} {why}")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _number(text):
    try:
        value = float(text)
    except (TypeError, ValueError):
        return math.nan
    return value


def _guarded(draw):
    """Runs a drawing function; any failure (bad csv, odd values) becomes one warning line and None."""
    def wrapper(source, out_png, *args, **kwargs):
        try:
            return draw(source, out_png, *args, **kwargs)
        except Exception as e:
            print(f"warning: could not draw {out_png} ({type(e).__name__}: {str(e)[:120]})")
            return None
    wrapper.__name__, wrapper.__doc__ = draw.__name__, draw.__doc__
    return wrapper


# ----------------------------------------------------------------------------------------------------------------
# Training curves from summary.csv

@_guarded
def plot_training_curves(summary_csv, out_png):
    """Loss (train/val), accuracy (train top-1, val top-1/top-5/per-class top-1) and lr per epoch, from a run's
    summary.csv. The best-on-val epoch is marked. Returns out_png, or None (no matplotlib, no rows)."""
    if not Path(summary_csv).is_file():
        print(f"note: no {summary_csv} yet, so no training curves")
        return None
    rows = _read_csv(summary_csv)
    if not rows:
        print(f"note: {summary_csv} has no epochs yet, so no training curves")
        return None
    plt = _pyplot()
    if plt is None:
        return None

    def column(name):
        return [_number(r.get(name)) for r in rows]

    epoch = column("epoch")
    val_top1 = column("val_top1")
    best = max((v for v in val_top1 if not math.isnan(v)), default=None)
    # the first epoch with the highest val top-1: the one training kept as best.pt
    best_epoch = next(e for v, e in zip(val_top1, epoch) if v == best) if best is not None else None
    marker = "o" if len(rows) <= 30 else None

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
    ax = axes[0]
    ax.plot(epoch, column("train_loss"), marker=marker, ms=3, label="train")
    ax.plot(epoch, column("val_loss"), marker=marker, ms=3, label="val")
    ax.set_title("loss")
    ax.set_ylabel("cross-entropy (train: weighted, smoothed)")

    ax = axes[1]
    ax.plot(epoch, column("train_top1"), marker=marker, ms=3, label="train top-1")
    ax.plot(epoch, val_top1, marker=marker, ms=3, label="val top-1")
    ax.plot(epoch, column("val_top5"), marker=marker, ms=3, label="val top-5")
    if "val_per_class_top1" in rows[0]:
        ax.plot(epoch, column("val_per_class_top1"), ls="--", label="val per-class top-1")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("accuracy")

    ax = axes[2]
    ax.plot(epoch, column("lr"), color="tab:gray")
    ax.set_title("learning rate (end of epoch)")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))

    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if best_epoch is not None:
            ax.axvline(best_epoch, color="tab:green", ls=":", lw=1.2, label=f"best epoch ({best_epoch:g})")
    for ax in axes[:2]:
        ax.legend(fontsize=8, loc="best")
    fig.suptitle(f"{Path(summary_csv).parent.name}: {len(rows)} epochs" +
                 (f", best val top-1 {best:.3f} at epoch {best_epoch:g}" if best is not None else ""))
    fig.tight_layout()
    return _save(fig, plt, out_png)


# ----------------------------------------------------------------------------------------------------------------
# Per-class accuracy against training clips

@_guarded
def plot_per_class_accuracy(per_class, out_png, title=None):
    """Per-class top-1 against the number of training clips of the class: one dot per class (jittered), and the
    mean over classes with the same (or a similar) count. Shows whether rare classes are learned.

    per_class: a per_class.csv written by evaluate.py, or a dict of equal-length sequences with keys
    train_clips, top1 and n (clips of the class evaluated; classes with n = 0 are left out)."""
    if isinstance(per_class, (str, Path)):
        rows = _read_csv(per_class)
        if rows and "train_clips" not in rows[0]:
            print(f"note: {per_class} has no train_clips column, so no per-class picture")
            return None
        per_class = {key: [_number(r.get(key)) for r in rows] for key in ("train_clips", "top1", "n")}
        per_class["gloss"] = [r.get("gloss", "") for r in rows]
    glosses = per_class.get("gloss") or [""] * len(per_class["n"])
    points = [(x, y, g) for x, y, n, g in zip(per_class["train_clips"], per_class["top1"], per_class["n"], glosses)
              if n and n > 0 and not math.isnan(x) and not math.isnan(y)]
    if not points:
        print(f"note: no evaluated class with a training-clip count, so no {out_png}")
        return None
    plt = _pyplot()
    if plt is None:
        return None
    import numpy as np

    x = np.array([p[0] for p in points], dtype=float)
    y = np.array([p[1] for p in points], dtype=float)
    rng = np.random.default_rng(0)  # fixed jitter: the same data draws the same picture
    values = np.unique(x)
    if len(values) <= 20:  # few distinct counts (WLASL: 5..30 clips): one bin per count
        bins = [(v, x == v) for v in values]
    else:  # many: about 12 bins holding similar numbers of classes
        edges = np.unique(np.quantile(x, np.linspace(0, 1, 13)))
        index = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
        bins = [(x[index == b].mean(), index == b) for b in range(len(edges) - 1) if (index == b).any()]
    step = np.diff(values).min() if len(values) > 1 else 1.0
    jitter = (rng.random(len(x)) - 0.5) * 0.5 * step

    fig, ax = plt.subplots(figsize=(8, 5))
    few = len(x) <= 100  # a handful of classes: bigger, opaque dots; a thousand: small, translucent ones
    ax.scatter(x + jitter, y + (rng.random(len(y)) - 0.5) * 0.02, s=30 if few else 12, alpha=0.8 if few else 0.35,
               color="tab:blue", label=f"one class ({len(x)} classes)")
    if len(x) <= 30:  # few enough to name every dot; names of dots at the same spot are stacked
        seen = {}
        for xi, yi, (_, _, gloss) in zip(x + jitter, y, points):
            k = seen[(round(xi * 2), yi)] = seen.get((round(xi * 2), yi), -1) + 1
            ax.annotate(str(gloss), (xi, yi), textcoords="offset points", xytext=(5, -3 - 9 * k), fontsize=7,
                        color="0.3")
    centres = [c for c, _ in bins]
    means = [y[m].mean() for _, m in bins]
    ax.plot(centres, means, "-o", color="tab:red", lw=2, ms=5, label="mean of the classes with that many clips")
    for c, (_, m), mean in zip(centres, bins, means):
        if len(bins) <= 20:
            ax.annotate(str(int(m.sum())), (c, mean), textcoords="offset points", xytext=(0, 7), ha="center",
                        fontsize=7, color="tab:red")
    ax.axhline(y.mean(), color="gray", ls="--", lw=1, label=f"per-class top-1 {y.mean():.3f}")
    ax.set_xlabel("training clips of the class")
    ax.set_ylabel("top-1 accuracy of the class")
    ax.set_ylim(-0.05, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title or "Per-class top-1 against training clips (red numbers: classes in the mean)")
    fig.tight_layout()
    return _save(fig, plt, out_png)


# ----------------------------------------------------------------------------------------------------------------
# Most confused pairs

@_guarded
def plot_confusions(confusions, out_png, top=20, title=None):
    """Horizontal bar chart of the most confused (true -> predicted) gloss pairs, the largest on top.

    confusions: a confusions.csv written by evaluate.py, or a list of (true gloss, predicted gloss, count)."""
    if isinstance(confusions, (str, Path)):
        confusions = [(r["true_gloss"], r["predicted_gloss"], int(r["count"])) for r in _read_csv(confusions)]
    pairs = sorted((p for p in confusions if p[2] > 0), key=lambda p: -p[2])[:top]
    if not pairs:
        print(f"note: no confused pair (every clip right, or none evaluated), so no {out_png}")
        return None
    plt = _pyplot()
    if plt is None:
        return None
    labels = [f"{t} \u2192 {p}" for t, p, _ in pairs][::-1]
    counts = [c for _, _, c in pairs][::-1]
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.32 * len(pairs)))
    bars = ax.barh(range(len(pairs)), counts, color="tab:orange")
    ax.set_yticks(range(len(pairs)))
    ax.set_yticklabels(labels, fontsize=9)
    for bar, count in zip(bars, counts):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {count}", va="center", fontsize=8)
    ax.set_xlabel("clips")
    ax.set_xlim(0, max(counts) * 1.12)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title or f"Most confused pairs (true \u2192 predicted), top {len(pairs)}")
    fig.tight_layout()
    return _save(fig, plt, out_png)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csv", help="a run's summary.csv, or the per_class.csv or confusions.csv of evaluate.py")
    source = Path(parser.parse_args(argv).csv)
    draw = {"summary.csv": plot_training_curves, "per_class.csv": plot_per_class_accuracy,
            "confusions.csv": plot_confusions}.get(source.name)
    if not source.exists():
        print(f"error: {source} not found; give the path of a run's summary.csv, or of the per_class.csv or "
              "confusions.csv that evaluate.py wrote", file=sys.stderr)
        return 2
    if draw is None or not_a_regular_file(source):
        print(f"error: {source}: give a summary.csv, per_class.csv or confusions.csv", file=sys.stderr)
        return 2
    target = source.with_name("curves.png" if source.name == "summary.csv" else source.stem + ".png")
    written = draw(source, target)
    if written:
        print(f"wrote {written}")
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
