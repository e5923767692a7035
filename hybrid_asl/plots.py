"""
Pictures of a run: training curves, per-class accuracy against training clips, the most confused gloss pairs and
the confusion matrix. Each is readable from 4 classes to 2,000.

    python train_simple.py --demo --output_dir runs/demo       # a run (default folder: runs/<subset>-<timestamp>)
    python -m hybrid_asl.plots runs/demo/summary.csv            # -> runs/demo/curves.png
    python -m hybrid_asl.plots runs/demo/eval_test/per_class.csv     # -> runs/demo/eval_test/per_class.png
    python -m hybrid_asl.plots runs/demo/eval_test/confusions.csv    # -> runs/demo/eval_test/confusions.png
    python -m hybrid_asl.plots runs/demo/eval_test/confusion_matrix.csv   # -> .../confusion_matrix.png

train_simple.py draws curves.png at the end of a run and evaluate.py draws the others. A file of another name is
recognized by its columns. matplotlib is an optional extra (pip install matplotlib): without it every function
prints one line and returns None. A picture is never worth a crash, so no function here raises; each returns the
PNG path it wrote, or None.
"""
import argparse
import csv
import math
import sys
import textwrap
from pathlib import Path

from hybrid_asl.cli import HelpFormatter, int_range, run_cli
from hybrid_asl.files import atomic_write, check_output_path, not_a_regular_file

NAMED_CLASSES = 30    # per-class picture: every class named up to this many; beyond, a summary by bins
MATRIX_CLASSES = 50   # confusion matrix up to this many classes; beyond, the most confused pairs
CELL_NUMBERS = 20     # the matrix writes its percentages in the cells up to this many classes
GLOSS_CHARS = 28      # longer gloss names are cut (with an ellipsis) so that no label dominates a picture
DPI = 110

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
        atomic_write(out_png, lambda f: fig.savefig(f, format="png", dpi=DPI), "wb")
    finally:
        plt.close(fig)
    return out_png


def _read_csv(path, needed=()):
    why = not_a_regular_file(path)
    if why:  # a FIFO would block the read
        raise ValueError(f"{path} {why}")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    missing = [c for c in needed if rows and c not in rows[0]]
    if missing:
        raise ValueError(f"{path} has no column {', '.join(missing)}")
    return rows


def _number(text):
    try:
        value = float(text)
    except (TypeError, ValueError):
        return math.nan
    return value


def _short(gloss):
    gloss = str(gloss)
    return gloss if len(gloss) <= GLOSS_CHARS else gloss[:GLOSS_CHARS - 1] + "\u2026"


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


def _title(fig, text):
    """A title over the whole figure, wrapped to its width (a title over narrow axes would run off the edge)."""
    fig.suptitle("\n".join(textwrap.wrap(text, int(fig.get_figwidth() * 10.5))), fontsize=11)


def _legend_below(ax, under=None):
    """ax's legend under the axes `under` (default ax itself), below its tick labels and axis label: outside the
    plot, it can never cover a line or a point."""
    from matplotlib.transforms import offset_copy
    under = under or ax
    handles, labels = ax.get_legend_handles_labels()
    return under.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0), ncol=2, fontsize=8,
                        frameon=False, bbox_transform=offset_copy(under.transAxes, under.figure, y=-34, units="points"))


# ----------------------------------------------------------------------------------------------------------------
# Training curves from summary.csv

@_guarded
def plot_training_curves(summary_csv, out_png):
    """Loss (train/val), accuracy (train top-1, val top-1/top-5/per-class top-1) and lr per epoch, from a run's
    summary.csv. The best-on-val epoch is marked; epochs are whole numbers on the axis, dots mark them in runs of
    up to 30 epochs, legends sit under the panels. Returns out_png, or None (no matplotlib, no rows)."""
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
    from matplotlib.ticker import MaxNLocator

    def column(name):
        return [_number(r.get(name)) for r in rows]

    epoch = column("epoch")
    val_top1 = column("val_top1")
    best = max((v for v in val_top1 if not math.isnan(v)), default=None)
    # the first epoch with the highest val top-1: the one training kept as best.pt
    best_epoch = next(e for v, e in zip(val_top1, epoch) if v == best) if best is not None else None
    marker = "o" if len(rows) <= 30 else None

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
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
        ax.plot(epoch, column("val_per_class_top1"), ls="--", marker=marker, ms=3, label="val per-class top-1")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("accuracy")

    ax = axes[2]
    ax.plot(epoch, column("lr"), color="tab:gray", marker=marker, ms=3, label="learning rate")
    ax.set_title("learning rate (end of epoch)")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    ax.set_ylim(bottom=0)  # a learning rate is never negative, even when it is constant

    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # no epoch 1.5
        if marker:  # a short run: half an epoch of room, so the first and last dots are off the frame
            ax.set_xlim(min(epoch) - 0.5, max(epoch) + 0.5)
        ax.grid(alpha=0.3)
        if best_epoch is not None:
            ax.axvline(best_epoch, color="tab:green", ls=":", lw=1.2, label=f"best epoch ({best_epoch:g})")
        _legend_below(ax)
    _title(fig, f"{Path(summary_csv).parent.name}: {len(rows)} epoch{'s' if len(rows) != 1 else ''}" +
           (f", best val top-1 {best:.3f} at epoch {best_epoch:g}" if best is not None else ""))
    fig.tight_layout()
    return _save(fig, plt, out_png)


# ----------------------------------------------------------------------------------------------------------------
# Per-class accuracy against training clips

def _place_labels(ax, spots, texts, radii_pt, fontsize=8):
    """Writes each text beside its spot (data coordinates) at the first place of a widening ring that stays inside
    the axes and covers no other label and no dot; a label set further out gets a thin line to its dot. Call it
    once the layout is final: the places are measured in pixels."""
    from matplotlib.transforms import Bbox
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    scale = fig.dpi / 72  # points -> pixels
    centres = ax.transData.transform(spots)
    taken = [Bbox.from_extents(x - r * scale, y - r * scale, x + r * scale, y + r * scale)
             for (x, y), r in zip(centres, radii_pt)]
    directions = [(1, 0), (-1, 0), (1, 1), (1, -1), (-1, 1), (-1, -1), (0, 1), (0, -1)]
    # the most crowded spots choose first, while the places next to them are still free
    crowd = [-sum(math.dist(c, other) < 80 for other in centres) for c in centres]
    placed = []
    for i in sorted(range(len(spots)), key=lambda i: crowd[i]):
        spot, text, radius = spots[i], texts[i], radii_pt[i]
        label = ax.annotate(text, spot, xytext=(0, 0), textcoords="offset points", fontsize=fontsize, color="0.2")
        choice = None
        for gap in (3, 9, 18, 30, 45, 65, 90):
            for dx, dy in directions:
                step = radius + gap
                label.set_position((dx * step, dy * step * 0.8))
                label.set_ha({1: "left", -1: "right", 0: "center"}[dx])
                label.set_va({1: "bottom", -1: "top", 0: "center"}[dy])
                box = label.get_window_extent(renderer).padded(1.5)
                if frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1) and \
                        not any(box.overlaps(other) for other in taken):
                    choice = (gap, box)
                    break
            if choice:
                break
        if choice is None:  # nowhere free: the first place, so the name is still there
            label.set_position((radius + 3, 0))
            label.set_ha("left")
            label.set_va("center")
            choice = (0, label.get_window_extent(renderer))
        taken.append(choice[1])
        if choice[0] > 9:  # far from its dot: a line says whose name it is
            label.remove()
            label = ax.annotate(text, spot, xytext=label.get_position(), textcoords="offset points",
                                ha=label.get_ha(), va=label.get_va(), fontsize=fontsize, color="0.2",
                                arrowprops=dict(arrowstyle="-", color="0.6", lw=0.6, shrinkA=0, shrinkB=radius))
        placed.append(label)
    return placed


def _bins(x, least):
    """Consecutive training counts grouped so that each group holds at least `least` classes (a short last group
    joins the one before): (lowest count, highest count, mask of its classes) per group. WLASL's common counts
    get a group each, its rare high counts share one."""
    import numpy as np
    groups, current, held = [], [], 0
    for value, classes in zip(*np.unique(x, return_counts=True)):
        current.append(value)
        held += classes
        if held >= least:
            groups.append(current)
            current, held = [], 0
    if current and groups:
        groups[-1] += current
    elif current:
        groups.append(current)
    return [(g[0], g[-1], (x >= g[0]) & (x <= g[-1])) for g in groups]


@_guarded
def plot_per_class_accuracy(per_class, out_png, title=None):
    """Per-class top-1 against the number of training clips of the class: shows whether rare classes are learned.

    Up to NAMED_CLASSES classes: one dot per class, not jittered (classes at the same spot share a bigger dot and
    one label), every dot named with labels that overlap nothing. More classes: the mean top-1 of the classes with
    the same training count (neighbouring counts grouped until a group holds 1/40 of the classes, at least 5) with
    its 95% interval, the classes as dots whose size counts them, and under it how many classes each group holds.
    Legends sit under the axes, never on a dot.

    per_class: a per_class.csv written by evaluate.py, or a dict of equal-length sequences with keys
    train_clips, top1 and n (clips of the class evaluated; classes with n = 0 are left out), and optionally gloss."""
    if isinstance(per_class, (str, Path)):
        rows = _read_csv(per_class, needed=("top1", "n"))
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
    from matplotlib.ticker import MaxNLocator

    x = np.array([p[0] for p in points], dtype=float)
    y = np.array([p[1] for p in points], dtype=float)
    few = len(points) <= NAMED_CLASSES
    # dots: one per spot. A few test clips per class give few distinct top-1 values (0, 1/3, 1/2...); with many
    # distinct ones (larger test sets) they are rounded to 1/20 so that a few hundred spots summarize thousands
    spot_y = y if few or len(np.unique(y)) <= 40 else np.round(y * 20) / 20
    spots, size = np.unique(np.stack([x, spot_y], axis=1), axis=0, return_counts=True)
    if few:
        fig, ax = plt.subplots(figsize=(8, 5.6 + 0.12 * max(0, len(spots) - 10)))  # more names, more room
        counts = None
    else:
        fig, (ax, counts) = plt.subplots(2, 1, figsize=(8, 6.6), sharex=True, gridspec_kw=dict(height_ratios=(3, 1)))
    area = np.minimum(36 * size, 300) if few else 6 + 200 * size / size.max()
    ax.scatter(spots[:, 0], spots[:, 1], s=area, color="tab:blue", alpha=0.75 if few else 0.35, lw=0,
               label=(f"one class ({len(x)} classes; larger: several at the same spot)" if few else
                      f"classes at that spot ({len(x)} classes; area: how many)"))
    ax.axhline(y.mean(), color="gray", ls="--", lw=1, label=f"per-class top-1 {y.mean():.3f}")
    values = np.unique(x)
    if not few:
        bins = _bins(x, least=max(5, len(x) // 40))
        centres = np.array([x[m].mean() for _, _, m in bins])
        means = np.array([y[m].mean() for _, _, m in bins])
        # 95% interval of each mean (normal approximation)
        half = np.array([1.96 * y[m].std(ddof=1) / math.sqrt(m.sum()) for _, _, m in bins])
        ax.fill_between(centres, np.clip(means - half, 0, 1), np.clip(means + half, 0, 1), color="tab:red",
                        alpha=0.15, lw=0, label="95% interval of the mean")
        ax.plot(centres, means, "-o", color="tab:red", lw=2, ms=4,
                label="mean of the classes with that many clips (a bar below)")
        for low, high, m in bins:
            counts.bar(low - 0.5, m.sum(), width=high - low + 1, align="edge", color="tab:gray", alpha=0.7,
                       edgecolor="white")
        counts.set_ylabel("classes in the group")
        counts.set_xlabel("training clips of the class")
        counts.grid(alpha=0.3)
    else:
        pad = max(1.0, 0.12 * (values[-1] - values[0]))  # room for the names at both ends
        ax.set_xlim(values[0] - pad, values[-1] + pad)
        ax.set_xlabel("training clips of the class")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("top-1 accuracy of the class")
    ax.set_ylim(-0.08, 1.08)
    ax.grid(alpha=0.3)
    legend = _legend_below(ax, counts)
    handles = getattr(legend, "legend_handles", None) or legend.legendHandles  # renamed in matplotlib 3.7
    handles[0].set_sizes([36 if few else 60])  # a dot of one class, not the first spot's
    _title(fig, title or "Per-class top-1 against training clips")
    fig.tight_layout()
    if few:  # after the layout: labels are placed in pixels
        names = {}
        for (xi, yi, gloss) in points:
            names.setdefault((xi, yi), []).append(_short(gloss))
        texts = ["\n".join(textwrap.wrap(", ".join(names[tuple(s)]), 40)) for s in spots]
        _place_labels(ax, [tuple(s) for s in spots], texts, [math.sqrt(a) / 2 for a in area],
                      fontsize=8 if len(spots) <= 15 else 7)
    return _save(fig, plt, out_png)


# ----------------------------------------------------------------------------------------------------------------
# Most confused pairs

def _pairs_figure(plt, pairs, title):
    """Horizontal bars of (true gloss, predicted gloss, count, note) pairs, given largest first, drawn on top."""
    labels = [f"{_short(t)} \u2192 {_short(p)}" for t, p, _, _ in pairs][::-1]
    counts = [c for _, _, c, _ in pairs][::-1]
    notes = [n for _, _, _, n in pairs][::-1]
    fig, ax = plt.subplots(figsize=(8, max(2.6, 1.3 + 0.3 * len(pairs))))
    bars = ax.barh(range(len(pairs)), counts, color="tab:orange")
    ax.set_yticks(range(len(pairs)))
    ax.set_yticklabels(labels, fontsize=9)
    for bar, count, note in zip(bars, counts, notes):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {count}{note}", va="center", fontsize=8)
    ax.set_xlabel("clips")
    ax.set_xlim(0, max(counts) * (1.35 if any(notes) else 1.12))
    ax.set_ylim(-0.6, len(pairs) - 0.4)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(axis="x", alpha=0.3)
    _title(fig, title)
    fig.tight_layout()
    return fig


@_guarded
def plot_confusions(confusions, out_png, top=20, title=None):
    """Horizontal bar chart of the most confused (true -> predicted) gloss pairs, the largest on top.

    confusions: a confusions.csv written by evaluate.py, or a list of (true gloss, predicted gloss, count)."""
    if isinstance(confusions, (str, Path)):
        confusions = [(r["true_gloss"], r["predicted_gloss"], int(r["count"]))
                      for r in _read_csv(confusions, needed=("true_gloss", "predicted_gloss", "count"))]
    pairs = sorted((p for p in confusions if p[2] > 0), key=lambda p: -p[2])[:top]
    if not pairs:
        print(f"note: no confused pair (every clip right, or none evaluated), so no {out_png}")
        return None
    plt = _pyplot()
    if plt is None:
        return None
    fig = _pairs_figure(plt, [(t, p, c, "") for t, p, c in pairs],
                        title or f"Most confused pairs (true \u2192 predicted), top {len(pairs)}")
    return _save(fig, plt, out_png)


# ----------------------------------------------------------------------------------------------------------------
# Confusion matrix

def read_confusion_matrix(path):
    """The cells of a confusion_matrix.csv (metrics.CONFUSION_MATRIX_FIELDS) as (true, predicted, count) index
    arrays and {index: gloss}."""
    import numpy as np
    rows = _read_csv(path, needed=("true_index", "predicted_index", "count"))
    cells = np.array([(int(r["true_index"]), int(r["predicted_index"]), int(r["count"])) for r in rows],
                     dtype=np.int64).reshape(-1, 3)
    glosses = {}
    for r in rows:
        glosses[int(r["true_index"])] = r.get("true_gloss", "")
        glosses[int(r["predicted_index"])] = r.get("predicted_gloss", "")
    return cells[:, 0], cells[:, 1], cells[:, 2], glosses


@_guarded
def plot_confusion_matrix(confusion, out_png, glosses=None, max_classes=MATRIX_CLASSES, top=20, title=None):
    """Where the mistakes go. The classes shown are those with an evaluated clip or a prediction. Up to
    max_classes of them: the true x predicted matrix of top-1 predictions, each row in % of the true class's clips
    (its clip count beside the gloss), gloss names on both axes, the percentages written in the cells up to
    CELL_NUMBERS classes. More classes: the `top` most confused (true -> predicted) pairs as bars, each with the
    share of the true class's clips it takes (a matrix of thousands of rows has no readable label).

    confusion: a (classes, classes) array of counts, [true, predicted] (metrics.confusion_counts), or the path of
    a confusion_matrix.csv (metrics.confusion_matrix_rows). glosses: the class names in index order, for an array
    (default: class numbers; a CSV names its classes). title names the data, e.g. 'nslt_100.json, test split'; what is drawn is said
    after it. Returns out_png, or None."""
    import numpy as np
    if isinstance(confusion, (str, Path)):
        true, predicted, count, names = read_confusion_matrix(confusion)
    else:
        matrix = np.asarray(confusion)
        true, predicted = np.nonzero(matrix)
        count = matrix[true, predicted].astype(np.int64)
        names = {i: (glosses[i] if glosses is not None else f"class {i}") for i in np.union1d(true, predicted)}
    keep = count > 0
    true, predicted, count = true[keep], predicted[keep], count[keep]
    if not len(count):
        print(f"note: no evaluated clip, so no {out_png}")
        return None
    plt = _pyplot()
    if plt is None:
        return None
    classes = np.union1d(true, predicted)
    clips = {int(c): int(count[true == c].sum()) for c in classes}

    def headline(what):  # after the caller's name of the data, or alone, capitalized
        return f"{title}: {what}" if title else what[0].upper() + what[1:]

    if len(classes) > max_classes:
        wrong = np.flatnonzero(true != predicted)
        if not len(wrong):
            print(f"note: no confused pair (every clip right), so no {out_png}")
            return None
        # most clips first; among equal counts the larger share of the true class's clips
        order = sorted(wrong, key=lambda k: (-count[k], -count[k] / clips[true[k]], true[k], predicted[k]))[:top]
        pairs = [(names[true[k]], names[predicted[k]], int(count[k]),
                  f" of {clips[true[k]]} ({100 * count[k] / clips[true[k]]:.0f}%)") for k in order]
        fig = _pairs_figure(plt, pairs, headline(f"most confused pairs (true \u2192 predicted), top {len(pairs)} of "
                                                 f"{len(wrong)}; {len(classes)} classes, too many for a matrix"))
        return _save(fig, plt, out_png)

    position = {int(c): i for i, c in enumerate(classes)}
    k = len(classes)
    cells = np.zeros((k, k))
    for t, p, c in zip(true, predicted, count):
        cells[position[int(t)], position[int(p)]] = c
    rows_n = cells.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.ma.masked_invalid(100 * cells / rows_n[:, None])  # a class only predicted has no row
    cell_in = 0.7 if k <= 6 else 0.5 if k <= 10 else 0.34 if k <= CELL_NUMBERS else 0.22
    font = 9 if k <= CELL_NUMBERS else 7
    side = k * cell_in
    fig, ax = plt.subplots(figsize=(max(6.0, side + 3.6), max(5.0, side + 2.8)))
    cmap = plt.get_cmap("Blues").with_extremes(bad="0.92")  # grey: the row of a class that has no clip
    image = ax.imshow(share, cmap=cmap, vmin=0, vmax=100, interpolation="nearest")
    labels = [_short(names[int(c)]) for c in classes]
    ax.set_xticks(range(k))
    ax.set_xticklabels(labels, rotation=90, fontsize=font)
    ax.set_yticks(range(k))
    ax.set_yticklabels([f"{name} ({n:.0f})" for name, n in zip(labels, rows_n)], fontsize=font)
    ax.set_xlabel("predicted (top-1)")
    ax.set_ylabel("true class (clips evaluated)")
    ax.tick_params(length=2)
    edges = np.arange(k + 1) - 0.5  # thin lines between the cells (two line collections: cheaper than ticks)
    ax.hlines(edges, -0.5, k - 0.5, color="white", lw=0.6)
    ax.vlines(edges, -0.5, k - 0.5, color="white", lw=0.6)
    if k <= CELL_NUMBERS:
        for i, j in zip(*np.nonzero(cells)):
            ax.text(j, i, f"{share[i, j]:.0f}", ha="center", va="center", fontsize=font - 1,
                    color="white" if share[i, j] > 60 else "black")
    bar = fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    bar.set_label("% of the true class's clips", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    right = np.trace(cells) / cells.sum()
    _title(fig, headline(f"confusion matrix of {k} classes, rows in % of the true class's clips "
                         f"({right:.0%} of {cells.sum():.0f} clips right)"))
    fig.tight_layout()
    return _save(fig, plt, out_png)


# ----------------------------------------------------------------------------------------------------------------
# Command line

_PICTURES = {  # name -> (what it holds: a column only it has, drawing function, picture)
    "summary.csv": ("epoch", plot_training_curves, "curves.png"),
    "per_class.csv": ("train_clips", plot_per_class_accuracy, "per_class.png"),
    "confusion_matrix.csv": ("true_index", plot_confusion_matrix, "confusion_matrix.png"),
    "confusions.csv": ("true_gloss", plot_confusions, "confusions.png"),  # last: confusion_matrix.csv has it too
}


def _kind(source):
    """The _PICTURES key of a CSV: by its name, else by its header (a renamed or copied file)."""
    if source.name in _PICTURES:
        return source.name
    try:
        with open(source, newline="") as f:
            header = next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    return next((name for name, (column, _, _) in _PICTURES.items() if column in header), None)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m hybrid_asl.plots", description=__doc__,
                                     formatter_class=HelpFormatter)
    parser.add_argument("csv", help="a run's summary.csv, or the per_class.csv, confusions.csv or "
                                    "confusion_matrix.csv that evaluate.py wrote")
    parser.add_argument("--output", default=None, metavar="PNG",
                        help="the picture to write; None: beside the CSV, named after it (curves.png for summary.csv)")
    parser.add_argument("--top", type=int_range(1, 200), default=20, metavar="N",
                        help="confused pairs drawn (confusions.csv, and confusion_matrix.csv beyond --matrix_classes)")
    parser.add_argument("--matrix_classes", type=int_range(2, 200), default=MATRIX_CLASSES, metavar="N",
                        help="confusion_matrix.csv: a matrix up to this many classes, the most confused pairs beyond")
    args = parser.parse_args(argv)
    source = Path(args.csv)
    if not source.exists():
        print(f"error: {source} not found; give the path of a run's summary.csv, or of the per_class.csv, "
              "confusions.csv or confusion_matrix.csv that evaluate.py wrote", file=sys.stderr)
        return 2
    kind = None if not_a_regular_file(source) else _kind(source)
    if kind is None:
        print(f"error: {source}: give a summary.csv, per_class.csv, confusions.csv or confusion_matrix.csv",
              file=sys.stderr)
        return 2
    _, draw, picture = _PICTURES[kind]
    target = Path(args.output) if args.output else \
        source.with_name(picture if source.name == kind else source.stem + ".png")
    check_output_path(target, "--output", [("csv", source)])
    options = {"confusions.csv": dict(top=args.top),
               "confusion_matrix.csv": dict(top=args.top, max_classes=args.matrix_classes)}.get(kind, {})
    written = draw(source, target, **options)
    if written:
        print(f"wrote {written}")
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(run_cli(main))
