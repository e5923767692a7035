"""Honest numbers: per-instance and per-class top-1/top-5 over the clips actually scored, and the per-class and
confusion tables that evaluate.py writes."""
import numpy as np
import torch
import torch.nn.functional as F

TOP_CONFUSIONS = 50


def topk_correct(logits, labels, k):
    """(N,) bool: is the label among the k highest logits."""
    k = min(k, logits.shape[1])
    return (logits.topk(k, dim=1).indices == labels[:, None]).any(dim=1)


def per_class_hits(logits, labels, num_classes, k):
    """(clips per class, clips per class whose label is in the top k), as float tensors of length num_classes."""
    logits, labels = torch.as_tensor(logits, dtype=torch.float32), torch.as_tensor(labels, dtype=torch.int64)
    correct = topk_correct(logits, labels, k).float()
    return (torch.bincount(labels, minlength=num_classes).float(),
            torch.bincount(labels, weights=correct, minlength=num_classes))


def classification_metrics(logits, labels, num_classes):
    """Per-instance and per-class top-1/top-5 (fractions), plain cross-entropy, and how many clips were scored.

    Per-class accuracy averages over the classes that have at least one clip in this split.
    """
    logits, labels = torch.as_tensor(logits, dtype=torch.float32), torch.as_tensor(labels, dtype=torch.int64)
    if len(labels) == 0:
        return dict(top1=0.0, top5=0.0, per_class_top1=0.0, per_class_top5=0.0, loss=float("nan"), n=0)
    metrics = dict(n=len(labels), loss=F.cross_entropy(logits, labels).item())
    for k in (1, 5):
        counts, hits = per_class_hits(logits, labels, num_classes, k)
        metrics[f"top{k}"] = (hits.sum() / counts.sum()).item()
        metrics[f"per_class_top{k}"] = (hits / counts.clamp(min=1))[counts > 0].mean().item()
    return {key: metrics[key] for key in ("top1", "top5", "per_class_top1", "per_class_top5", "loss", "n")}


def per_class_rows(logits, labels, label_mapping, train_counts):
    """One row per class of the checkpoint: clips evaluated and their top-1 / top-5 (empty when n = 0)."""
    num_classes = len(label_mapping)
    n, hits1 = (t.numpy() for t in per_class_hits(logits, labels, num_classes, 1))
    _, hits5 = (t.numpy() for t in per_class_hits(logits, labels, num_classes, 5))
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


CONFUSION_MATRIX_FIELDS = ["true_index", "true_wlasl_id", "true_gloss", "predicted_index", "predicted_wlasl_id",
                           "predicted_gloss", "count"]


def confusion_counts(logits, labels, num_classes):
    """(num_classes, num_classes) int64 array: [t, p] is how many clips of class t have p as their top-1
    prediction (the diagonal holds the right ones). 2,000 classes take 32 MB."""
    predicted = np.asarray(logits).argmax(axis=1)
    labels = np.asarray(labels, dtype=np.int64)
    flat = np.bincount(labels * num_classes + predicted, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def confusion_matrix_rows(counts, label_mapping):
    """The non-zero cells of confusion_counts (right ones included) as rows of CONFUSION_MATRIX_FIELDS, by true
    then predicted index: at most one row per clip, where a dense 2,000 x 2,000 table would hold 4 million."""
    rows = []
    for t, p in zip(*np.nonzero(counts)):
        true, pred = label_mapping[int(t)], label_mapping[int(p)]
        rows.append({"true_index": int(t), "true_wlasl_id": true["wlasl_id"], "true_gloss": true["gloss"],
                     "predicted_index": int(p), "predicted_wlasl_id": pred["wlasl_id"],
                     "predicted_gloss": pred["gloss"], "count": int(counts[t, p])})
    return rows
