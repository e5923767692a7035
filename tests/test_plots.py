"""The pictures are readable at 4 classes and at 2,000: rendered from generated WLASL-like data (training counts
5-30, long gloss names) and checked without eyeballing: PNG size within bounds, every name present at 4 classes,
no two texts overlapping, legends off the data.

    python -m pytest tests/test_plots.py -q

Skips without matplotlib (CI installs it with requirements-extract.txt).
"""
import math
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hybrid_asl import plots
from hybrid_asl.cli import run_cli
from hybrid_asl.files import csv_text
from hybrid_asl.metrics import (CONFUSION_MATRIX_FIELDS, confusion_counts, confusion_matrix_rows, confusion_rows,
                                per_class_rows)

ROOT = Path(__file__).resolve().parents[1]
WORDS = ["thanksgiving", "grandmother", "neighborhood", "international", "photographer", "refrigerator",
         "basketball", "appointment", "vocabulary", "wheelchair", "hearing-aid", "motorcycle", "kindergarten"]
MAX_WIDTH, MAX_HEIGHT = 2400, 2000  # pixels: a picture that fits a screen, whatever the number of classes

needs_matplotlib = pytest.mark.skipif(plots._pyplot() is None, reason="matplotlib is not installed")


def make_classes(k, seed=0):
    """k classes as a WLASL split would give them: names, training counts, and the confusion counts of a model
    that is right more often on classes with more training clips and whose mistakes go to a few neighbours."""
    rng = np.random.default_rng(seed)
    if k == 4:  # two classes at the same spot (8 clips, all right): they must share one dot and one label
        glosses = ["thanksgiving-dinner", "grandmother", "basketball", "hearing-aid"]
        train = np.array([8, 8, 8, 23])
        right, n = np.array([3, 3, 1, 2]), np.array([3, 3, 3, 4])
    else:
        glosses = [f"{WORDS[i % len(WORDS)]}-{WORDS[(i * 7 + 3) % len(WORDS)]}-{i}" for i in range(k)]
        train = 5 + np.minimum(25, rng.geometric(0.15, size=k) - 1)  # mostly 5-12, a tail up to 30
        n = rng.integers(1, 5, size=k)
        right = rng.binomial(n, np.clip(0.15 + 0.025 * train, 0, 0.95))
    labels, logits_argmax = [], []
    for c in range(k):
        for j in range(n[c]):
            labels.append(c)
            neighbour = (c + 1 + (j % 2) * rng.integers(0, 3)) % k  # mistakes repeat: a few confused pairs
            logits_argmax.append(c if j < right[c] else neighbour)
    labels = np.array(labels)
    logits = np.full((len(labels), k), -1.0, dtype=np.float32)
    logits[np.arange(len(labels)), logits_argmax] = 1.0
    mapping = [{"index": i, "wlasl_id": 1000 + i, "gloss": g} for i, g in enumerate(glosses)]
    rows = per_class_rows(logits, labels, mapping, train)
    return dict(glosses=glosses, mapping=mapping, logits=logits, labels=labels,
                counts=confusion_counts(logits, labels, k),
                per_class={"train_clips": train, "top1": [r["top1"] for r in rows], "n": n, "gloss": glosses},
                pairs=[(r["true_gloss"], r["predicted_gloss"], r["count"])
                       for r in confusion_rows(logits, labels, mapping)])


def write_summary(path, epochs):
    """A summary.csv as train_simple.py writes it, for a run of `epochs` epochs."""
    e = np.arange(1, epochs + 1)
    progress = 1 - np.exp(-e / max(epochs / 4, 1))
    rows = [dict(epoch=int(i), train_loss=round(7.6 * (1 - 0.9 * p), 5), train_top1=round(0.9 * p, 5),
                 val_loss=round(7.6 * (1 - 0.7 * p), 5), val_top1=round(0.5 * p, 5), val_top5=round(0.8 * p, 5),
                 val_per_class_top1=round(0.45 * p, 5), lr=f"{1e-3 * 0.5 * (1 + math.cos(math.pi * i / epochs)):.3e}",
                 train_seconds=1.0, data_seconds=0.1, seconds=1.2, skipped_steps=0) for i, p in zip(e, progress)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(csv_text(rows, list(rows[0])))


def png_size(path):
    data = Path(path).read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def check_png(path):
    width, height = png_size(path)
    assert 400 <= width <= MAX_WIDTH and 250 <= height <= MAX_HEIGHT, (path, width, height)
    return width, height


class _KeepOpen:
    """Stands for pyplot in plots._save, whose only use of it is close: the figure stays open to be measured."""
    @staticmethod
    def close(fig):
        pass


@pytest.fixture
def drawn(monkeypatch):
    """The figures the plot functions save, kept open for inspection, closed after the test."""
    figures = []
    save = plots._save

    def keep(fig, plt, out_png):
        figures.append(fig)
        return save(fig, _KeepOpen, out_png)
    monkeypatch.setattr(plots, "_save", keep)
    yield figures
    import matplotlib.pyplot as plt
    for fig in figures:
        plt.close(fig)


def texts_of(fig):
    """(text, pixel box) of every text drawn (the labels of ticks outside the axes' view exist but are not)."""
    from matplotlib.text import Text
    fig.canvas.draw()  # positions as drawn at this dpi (savefig drew them at plots.DPI)
    renderer = fig.canvas.get_renderer()
    undrawn = set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            low, high = sorted(axis.get_view_interval())
            slack = 1e-6 * (high - low)
            undrawn.update(id(label) for tick in axis.get_major_ticks() + axis.get_minor_ticks()
                           if not low - slack <= tick.get_loc() <= high + slack for label in (tick.label1, tick.label2))
    shown = []
    for text in fig.findobj(Text):
        if not text.get_visible() or not text.get_text().strip() or id(text) in undrawn:
            continue
        box = Text.get_window_extent(text, renderer)
        if box.width > 0 and box.height > 0 and fig.bbox.overlaps(box):
            shown.append((text, box))
    return shown


def assert_no_overlaps(fig):
    shown = texts_of(fig)
    for i, (a, box_a) in enumerate(shown):
        for b, box_b in shown[i + 1:]:
            assert not box_a.shrunk(0.98, 0.9).overlaps(box_b.shrunk(0.98, 0.9)), \
                f"{a.get_text()!r} overlaps {b.get_text()!r}"
    return [t.get_text() for t, _ in shown]


def assert_legends_off_the_data(fig):
    """Every legend stands outside every axes that holds data, so it can cover no line and no point."""
    renderer = fig.canvas.get_renderer()
    legends = [leg for ax in fig.axes for leg in [ax.get_legend()] if leg is not None]
    assert legends
    for legend in legends:
        box = legend.get_window_extent(renderer)
        for ax in fig.axes:
            assert not box.overlaps(ax.get_window_extent(renderer)), "a legend stands on a plot"
    return legends


# ---------------------------------------------------------------------------------------------------------------
# Per-class top-1 against training clips

@needs_matplotlib
def test_per_class_at_4_classes_names_every_class_without_overlap(tmp_path, drawn):
    data = make_classes(4)
    written = plots.plot_per_class_accuracy(data["per_class"], tmp_path / "per_class.png")
    assert written == tmp_path / "per_class.png"
    check_png(written)
    fig = drawn[0]
    texts = assert_no_overlaps(fig)
    for gloss in data["glosses"]:
        assert any(gloss in t for t in texts), f"{gloss} is not named"
    assert sum("thanksgiving-dinner" in t and "grandmother" in t for t in texts) == 1, "one label for one spot"
    ax = fig.axes[0]
    dots = ax.collections[0]
    assert len(dots.get_offsets()) == 3, "no jitter: the two classes at the same spot share a dot"
    spots = sorted(map(tuple, dots.get_offsets().tolist()))
    assert np.allclose(spots, [(8, 1 / 3), (8, 1), (23, 0.5)], atol=1e-4), "at their true values"
    legends = assert_legends_off_the_data(fig)
    renderer = fig.canvas.get_renderer()
    pixels = ax.transData.transform(dots.get_offsets())
    for legend in legends:
        assert not any(legend.get_window_extent(renderer).contains(*p) for p in pixels)
    from matplotlib.text import Text
    for label in ax.texts:  # no name covers a dot
        box = Text.get_window_extent(label, renderer)
        assert not any(box.contains(*p) for p in pixels), label.get_text()


@needs_matplotlib
def test_per_class_at_2000_classes_summarizes_by_bins(tmp_path, drawn):
    data = make_classes(2000)
    written = plots.plot_per_class_accuracy(data["per_class"], tmp_path / "per_class.png", title="nslt_2000.json")
    check_png(written)
    fig = drawn[0]
    texts = assert_no_overlaps(fig)
    assert len(texts) < 60 and not any(g in t for t in texts for g in data["glosses"][:50]), "no per-class names"
    upper, counts = fig.axes
    mean_line = [line for line in upper.lines if line.get_marker() == "o"][0]
    train, top1 = np.array(data["per_class"]["train_clips"]), np.array(data["per_class"]["top1"], dtype=float)
    # the common counts have a bin each, the rare high ones share; each mean is the mean of its classes' top-1
    assert list(mean_line.get_xdata()[:5]) == [5, 6, 7, 8, 9] and 10 <= len(mean_line.get_xdata()) < 26
    assert mean_line.get_ydata()[0] == pytest.approx(top1[train == 5].mean())
    bars = [p.get_height() for p in counts.patches]
    assert sum(bars) == 2000 and min(bars) >= 50, "the lower panel counts every class, 1/40 of them at least a bin"
    assert len(upper.collections[0].get_offsets()) < 400, "spots, not 2,000 overlapping dots"
    assert_legends_off_the_data(fig)


# ---------------------------------------------------------------------------------------------------------------
# Most confused pairs and the confusion matrix

@needs_matplotlib
@pytest.mark.parametrize("k", [4, 2000])
def test_confused_pairs_are_readable(tmp_path, drawn, k):
    data = make_classes(k)
    written = plots.plot_confusions(data["pairs"], tmp_path / "confusions.png")
    check_png(written)
    texts = assert_no_overlaps(drawn[0])
    bars = [t.get_text() for t in drawn[0].axes[0].get_yticklabels()]
    shown = data["pairs"][:20]
    assert len(bars) == len(shown) and set(bars) <= set(texts)
    if k == 4:
        assert bars == [f"{t} \u2192 {p}" for t, p, _ in shown][::-1], "every name, the largest on top"


def test_confusion_counts_and_rows_hold_every_clip():
    data = make_classes(4)
    counts = data["counts"]
    assert counts.shape == (4, 4) and counts.sum() == len(data["labels"])
    assert list(np.diag(counts)) == [3, 3, 1, 2]
    assert counts[2, 3] == 2  # basketball's two mistakes both went to hearing-aid
    rows = confusion_matrix_rows(counts, data["mapping"])
    assert list(rows[0]) == CONFUSION_MATRIX_FIELDS
    assert sum(r["count"] for r in rows) == counts.sum() and all(r["count"] > 0 for r in rows)
    assert [(r["true_index"], r["predicted_index"]) for r in rows] == sorted(zip(*np.nonzero(counts)))
    wrong = {(r["true_gloss"], r["predicted_gloss"]): r["count"] for r in rows
             if r["true_index"] != r["predicted_index"]}
    assert wrong == {(t, p): c for t, p, c in data["pairs"]}, "the off-diagonal cells are confusions.csv"


@needs_matplotlib
def test_confusion_matrix_at_4_classes_names_and_numbers_every_cell(tmp_path, drawn):
    data = make_classes(4)
    written = plots.plot_confusion_matrix(data["counts"], tmp_path / "confusion_matrix.png", glosses=data["glosses"],
                                          title="nslt_4.json, test split")
    check_png(written)
    fig = drawn[0]
    texts = assert_no_overlaps(fig)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == data["glosses"]
    assert [t.get_text() for t in ax.get_yticklabels()] == [
        "thanksgiving-dinner (3)", "grandmother (3)", "basketball (3)", "hearing-aid (4)"]
    share = ax.images[0].get_array()
    assert np.allclose(share.sum(axis=1), 100), "rows in % of the true class's clips"
    cells = sorted(t.get_text() for t in ax.texts)
    assert cells == sorted(["100", "100", "33", "67", "25", "25", "50"]), "a number in each non-empty cell"
    assert any(t.startswith("nslt_4.json, test split: confusion matrix of 4 classes") for t in texts)


@needs_matplotlib
def test_confusion_matrix_at_50_classes_labels_every_row_and_column(tmp_path, drawn):
    data = make_classes(50)
    check_png(plots.plot_confusion_matrix(data["counts"], tmp_path / "m.png", glosses=data["glosses"]))
    ax = drawn[0].axes[0]
    assert len(ax.get_xticklabels()) == len(ax.get_yticklabels()) == 50 and not ax.texts, "no numbers at 50"
    assert_no_overlaps(drawn[0])


@needs_matplotlib
def test_confusion_matrix_beyond_50_classes_draws_the_most_confused_pairs(tmp_path, drawn):
    data = make_classes(2000)
    written = plots.plot_confusion_matrix(data["counts"], tmp_path / "m.png", glosses=data["glosses"], top=15)
    check_png(written)
    texts = assert_no_overlaps(drawn[0])
    assert not drawn[0].axes[0].images
    assert len(drawn[0].axes[0].get_yticklabels()) == 15
    first = data["pairs"][0]  # the largest count is on top, with its share of the true class's clips
    n_true = data["counts"][data["glosses"].index(first[0])].sum()
    assert f" {first[2]} of {n_true} ({100 * first[2] / n_true:.0f}%)" in texts


# ---------------------------------------------------------------------------------------------------------------
# Training curves

@needs_matplotlib
@pytest.mark.parametrize("epochs", [1, 3, 300])
def test_training_curves_short_and_long(tmp_path, drawn, epochs):
    write_summary(tmp_path / "run" / "summary.csv", epochs)
    check_png(plots.plot_training_curves(tmp_path / "run" / "summary.csv", tmp_path / "curves.png"))
    fig = drawn[0]
    assert_no_overlaps(fig)
    assert_legends_off_the_data(fig)
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), "epochs are whole numbers"
        if epochs <= 3:
            assert ax.get_xlim()[0] < 1 and ax.get_xlim()[1] > epochs, "the first and last dots are off the frame"


# ---------------------------------------------------------------------------------------------------------------
# Never a crash; the command line

def test_without_matplotlib_each_picture_is_one_note(tmp_path, monkeypatch, capsys):
    data = make_classes(4)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    monkeypatch.setattr(plots, "_missing_noted", False)
    assert plots.plot_confusion_matrix(data["counts"], tmp_path / "m.png", glosses=data["glosses"]) is None
    assert plots.plot_per_class_accuracy(data["per_class"], tmp_path / "p.png") is None
    out = capsys.readouterr().out
    assert out.count("matplotlib is not installed") == 1 and len(out.splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_bad_csvs_give_one_warning_line(tmp_path, capsys):
    (tmp_path / "confusion_matrix.csv").write_text("true_index,count\n1,2\n")
    (tmp_path / "per_class.csv").write_text("gloss,train_clips\nbook,8\n")
    (tmp_path / "confusions.csv").write_text("true_gloss,predicted_gloss,count\nbook,read,many\n")
    assert plots.plot_confusion_matrix(tmp_path / "confusion_matrix.csv", tmp_path / "m.png") is None
    assert plots.plot_per_class_accuracy(tmp_path / "per_class.csv", tmp_path / "p.png") is None
    assert plots.plot_confusions(tmp_path / "confusions.csv", tmp_path / "c.png") is None
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all(line.startswith("warning: could not draw") for line in lines), lines
    assert "has no column predicted_index" in lines[0]


def run_plots(*args):
    return subprocess.run([sys.executable, "-m", "hybrid_asl.plots", *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT)


def test_plots_help_shows_every_default():
    done = run_plots("--help")
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())  # argparse wraps to the terminal's width
    assert text.startswith("usage: python -m hybrid_asl.plots") and "confusion_matrix.csv" in text
    assert "--top N confused pairs drawn" in text and "(default: 20)" in text and "(default: 50)" in text


@needs_matplotlib
def test_plots_cli_draws_the_confusion_matrix_evaluate_writes(tmp_path, capsys):
    data = make_classes(4)
    rows = confusion_matrix_rows(data["counts"], data["mapping"])
    (tmp_path / "confusion_matrix.csv").write_text(csv_text(rows, CONFUSION_MATRIX_FIELDS))
    done = run_plots(tmp_path / "confusion_matrix.csv")
    assert done.returncode == 0 and f"wrote {tmp_path / 'confusion_matrix.png'}" in done.stdout, done.stderr
    check_png(tmp_path / "confusion_matrix.png")
    (tmp_path / "val_cells.csv").write_text(csv_text(rows, CONFUSION_MATRIX_FIELDS))  # renamed: told by its header
    assert run_cli(plots.main, [str(tmp_path / "val_cells.csv"), "--matrix_classes", "3", "--top", "2"]) == 0
    assert "val_cells.png" in capsys.readouterr().out
    assert png_size(tmp_path / "val_cells.png")[1] < png_size(tmp_path / "confusion_matrix.png")[1], "2 bars"
    assert run_cli(plots.main, [str(tmp_path / "val_cells.csv"), "--output", str(tmp_path / "val_cells.csv")]) == 2
    assert capsys.readouterr().err.startswith("error: --output")
    (tmp_path / "notes.csv").write_text("a,b\n1,2\n")
    assert run_cli(plots.main, [str(tmp_path / "notes.csv")]) == 2
    assert "give a summary.csv" in capsys.readouterr().err
