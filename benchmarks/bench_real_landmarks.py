"""Landmark-only recognition on REAL signers: train_simple.py against a linear baseline on the same splits.

    python bench_real_landmarks.py                        # plain + default recipe and the baselines, every set
    python bench_real_landmarks.py --ablation --split_seeds 1234 1235 1236 --jobs 16   # the BENCHMARKS.md table
    python bench_real_landmarks.py --merge runs/bench_real_landmarks/*/results.json   # one table from earlier runs
    python bench_real_landmarks.py --sets isl13 wlasl_video --seeds 0 1 2
    python bench_real_landmarks.py --protocol4 selection --jobs 8   # Protocol 4 (BENCHMARKS.md): 112 classes, k clips
    python bench_real_landmarks.py --protocol4 claim --jobs 8
    python bench_real_landmarks.py --protocol5 selection --jobs 18  # Protocol 5: mixup, conv encoder, flip TTA, width
    python bench_real_landmarks.py --protocol6 selection --jobs 12  # Protocol 6: width, depth, learning rate
    python bench_real_landmarks.py --protocol7 selection --jobs 6   # Protocol 7: an ensemble of 3 (--ensemble 3)
    python bench_real_landmarks.py --protocol8 selection --jobs 9   # Protocol 8: hand-shape channels (--hand_shape)
    python bench_real_landmarks.py --protocol9 selection --jobs 12  # Protocol 9: hands in their own frames, 5 models
    python bench_real_landmarks.py --protocol10 selection --jobs 12  # Protocol 10: left-handed clips, missing hands
    python bench_real_landmarks.py --protocol11 selection --jobs 12  # Protocol 11: left-handed clips with the runners-up
    python bench_real_landmarks.py --protocol4_pack .bench/union112.npz   # the clips Protocol 4 uses, float16, for a
                                                                          # machine without ../shared (--union_file)
    python bench_real_landmarks.py --protocol4_pack .bench/union112_all.npz --pack_every_train_clip   # and for:
    python bench_real_landmarks.py --protocol11 claim --ks all --seeds_of_claim 0 --union_file .bench/union112_all.npz
                                  # the ceiling diagnostic: today's defaults trained on every training clip
    python bench_real_landmarks.py --ridge_channels   # the ridge on the model's channels (val only, no training)

Each landmark set in ../shared/data/landmarks (real MediaPipe Holistic sequences, see NOTES.md there) is written
into the WLASL layout (<out>/<set>/split<k>/data: split.json with "subset"/"action", {id}_landmarks.npy,
wlasl_class_list.txt) with a seeded, stratified split per --split_seeds, then:
  - the model: `python train_simple.py --modality landmarks ...` as a subprocess (the real CLI), CPU-sized;
    train_simple picks its best epoch on val and evaluates test once;
  - the baseline: a ridge classifier on the mean and std over frames of the shoulder-normalized landmark channels
    (hybrid_asl.landmarks.make_landmark_features, the same 16 uniformly sampled frames the model sees), its
    regularization and class weighting chosen on val, test scored once. A ridge on raw coordinates is beside it.
Sets:
  bsl16, isl13        70/15/15 % per class;
  bsl16_k8, isl13_k8  the same recordings under WLASL's data budget: 8 training clips per class (the median of
                      nslt_1000's training split), 4 val, the rest test;
  wlasl_video         the 122 clips cut from real WLASL videos, 60/20/20 %;
  wlasl_xsource       train/val on the 'ahmed' WLASL clips, test on the held-out 'jeffery' clips of the classes
                      both sources share (a different extraction pipeline, different videos and signers).
With --ablation every configuration is scored on val; the one with the best mean val top-1 over all splits and
seeds is the chosen recipe (ties: lower val loss), and test is shown only for the fixed reference recipes (plain,
default) and the chosen one. The chosen recipe is compared with the normalized ridge split by split.
Writes <out>/results.json and <out>/results.md (atomically); prints one line per run.
"""
import argparse
import functools
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as `python benchmarks/bench_real_landmarks.py` from anywhere
from hybrid_asl.clips import LANDMARK_DIM, uniform_indices  # noqa: E402
from hybrid_asl.files import atomic_write_text as write_text  # noqa: E402
from hybrid_asl.landmarks import PREPARE_FLAGS, make_landmark_features  # noqa: E402

LANDMARKS = ROOT.parent / "shared" / "data" / "landmarks"
SETS = ("bsl16", "isl13", "bsl16_k8", "isl13_k8", "wlasl_video", "wlasl_xsource")
# WLASL's budget: nslt_1000's training split has a median of 8 clips per class (min 6, val median 2)
BUDGET_TRAIN, BUDGET_VAL = 8, 4
# The recipes: (name, train_simple flags). "plain" is the legacy behaviour, "default" what a user gets now.
CONFIGS = {
    "plain": ["--augment", "none", "--no_landmark_norm"],
    "raw+light": ["--augment", "light", "--no_landmark_norm"],
    "norm+none": ["--augment", "none"],
    "default": [],                                   # normalized landmarks, --augment light
    "norm+strong": ["--augment", "strong"],
    "default+ema": ["--ema", "--ema_decay", "0.995"],  # 0.995: runs here are ~0.4-1.4k steps; 0.999 would still hold init weights
    "default+classw": ["--use_class_weights"],          # the design note's recommendation for imbalanced data
    "default-std": ["--no_landmark_standardize"],       # Protocol 3's comparison (its "default"; std is default now)
}
ABLATION = ("plain", "raw+light", "norm+none", "default", "norm+strong", "default+ema", "default+classw")
REFERENCE = ("plain", "default")
# CPU-sized model; epochs per set so that every set gets a similar number of optimizer steps (~0.4-1.4k)
MODEL_FLAGS = ["--hidden_dim", "128", "--num_heads", "4", "--num_layers", "2", "--dropout", "0.3",
               "--lr", "1e-3", "--warmup_epochs", "3", "--batch_size", "32", "--device", "cpu", "--no_cache"]
EPOCHS = {"bsl16": 40, "isl13": 120, "bsl16_k8": 250, "isl13_k8": 250, "wlasl_video": 200, "wlasl_xsource": 200}


# ----------------------------------------------------------------------------------------------------------------
# Real landmark sets -> sequences, labels, split

def load_set(name):
    """-> (list of (T,162) float32 sequences, labels (N,), class names, extra per-sequence info)."""
    return load_recordings(name.removesuffix("_k8").replace("wlasl_xsource", "wlasl_video"))


@functools.lru_cache(maxsize=None)  # bsl16 and bsl16_k8 (and so on) are the same recordings: read each file once
def load_recordings(base):
    if base in ("bsl16", "isl13"):
        d = np.load(LANDMARKS / f"{base}_162.npz")
        return list(d["X"].astype(np.float32)), d["y"].astype(np.int64), list(d["classes"]), {}
    d = np.load(LANDMARKS / "wlasl_small_fullvideo_162.npz")
    keep = np.flatnonzero(d["from_wlasl_video"])   # only the clips cut from real WLASL videos
    frames, offsets, lengths = d["frames"], d["offsets"], d["lengths"]  # NpzFile reads on every access: once
    seqs = [frames[offsets[i]:offsets[i] + lengths[i]].astype(np.float32) for i in keep]
    return seqs, d["y"][keep].astype(np.int64), list(d["classes"]), {"source": d["source"][keep]}


def stratified_split(labels, fractions, seed):
    """Per class: shuffle (seeded) and cut into train/val/test by fractions; every split gets >=1 clip per class."""
    counts = lambda n: (max(1, round(fractions[1] * n)), max(1, round(fractions[2] * n)) if fractions[2] > 0 else 0)
    return per_class_split(labels, counts, seed)


def budget_split(labels, n_train, n_val, seed):
    """Per class: n_train training clips, n_val val clips, every other clip is test."""
    return per_class_split(labels, lambda n: (n_val, n - n_train - n_val), seed)


def per_class_split(labels, counts, seed):
    """counts(n) -> (n_val, n_test) for a class of n clips; the rest is train."""
    rng = np.random.default_rng(seed)
    subset = np.empty(len(labels), dtype=object)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val, n_test = counts(len(idx))
        subset[idx[:n_val]] = "val"
        subset[idx[n_val:n_val + n_test]] = "test"
        subset[idx[n_val + n_test:]] = "train"
    return subset


def make_split(name, labels, extra, seed):
    """subset per sequence ('train'|'val'|'test'|None = unused) for a benchmark set."""
    if name in ("bsl16", "isl13"):
        return stratified_split(labels, (0.70, 0.15, 0.15), seed)
    if name.endswith("_k8"):
        return budget_split(labels, BUDGET_TRAIN, BUDGET_VAL, seed)
    if name == "wlasl_video":
        return stratified_split(labels, (0.60, 0.20, 0.20), seed)
    # cross-source: everything from 'ahmed' for train/val, test = 'jeffery' clips of the classes ahmed also has
    source = extra["source"]
    subset = np.full(len(labels), None, dtype=object)
    a = np.flatnonzero(source == "ahmed")
    subset[a] = stratified_split(labels[a], (0.8, 0.2, 0.0), seed)
    shared = np.isin(labels, labels[a])
    subset[(source == "jeffery") & shared] = "test"
    return subset


def write_wlasl_layout(folder, seqs, labels, classes, subset, prefix):
    """The WLASL data layout train_simple.py reads: split.json, wlasl_class_list.txt, landmarks/{id}_landmarks.npy."""
    lm_dir = folder / "landmarks"
    lm_dir.mkdir(parents=True, exist_ok=True)
    split = {}
    for i, (x, y, s) in enumerate(zip(seqs, labels, subset)):
        if s is None:
            continue
        vid = f"{prefix}{i:05d}"
        np.save(lm_dir / f"{vid}_landmarks.npy", x)
        split[vid] = {"subset": s, "action": [int(y), 1, len(x)]}
    write_text(folder / "split.json", json.dumps(split, indent=1))
    write_text(folder / "wlasl_class_list.txt", "".join(f"{i}\t{c}\n" for i, c in enumerate(classes)))
    return split


# ----------------------------------------------------------------------------------------------------------------
# Linear baseline

def pooled_features(seqs, num_frames, normalize, model_channels=False):
    """mean + std over the same uniformly sampled frames the model sees -> (N, 2C). model_channels: the 641 channels
    today's --modality landmarks defaults feed the model (every PREPARE_FLAGS option on: left-handed clips mirrored,
    hand shapes, hand frames) instead of the baseline's 453."""
    T = num_frames
    x = np.zeros((len(seqs), T, LANDMARK_DIM), np.float32)
    mask = np.zeros((len(seqs), T), bool)
    for i, s in enumerate(seqs):
        idx = uniform_indices(len(s), T)
        x[i, :len(idx)] = np.nan_to_num(s[idx])
        mask[i, :len(idx)] = True
    options = dict.fromkeys(PREPARE_FLAGS, model_channels)
    f = make_landmark_features(torch.from_numpy(x), torch.from_numpy(mask), normalize, **options).numpy()
    m = mask[..., None]
    n = m.sum(1)
    mean = (f * m).sum(1) / n
    std = np.sqrt((((f - mean[:, None]) ** 2) * m).sum(1) / n)
    return np.concatenate([mean, std], 1)


def ridge_baseline(seqs, labels, subset, num_frames, normalize):
    """RidgeClassifier on standardized pooled features; alpha and class weighting chosen on val, test scored once."""
    from sklearn.linear_model import RidgeClassifier
    from sklearn.preprocessing import StandardScaler
    X = pooled_features(seqs, num_frames, normalize)
    tr, va, te = (subset == "train"), (subset == "val"), (subset == "test")
    scaler = StandardScaler().fit(X[tr])
    X = scaler.transform(X)
    best = None
    for class_weight in (None, "balanced"):      # the model's counterpart: --use_class_weights
        for alpha in (0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0):
            clf = RidgeClassifier(alpha=alpha, class_weight=class_weight).fit(X[tr], labels[tr])
            val = float((clf.predict(X[va]) == labels[va]).mean())
            if best is None or val > best[0]:
                best = (val, alpha, class_weight, clf)
    val, alpha, class_weight, clf = best
    return {"val_top1": val, "test_top1": float((clf.predict(X[te]) == labels[te]).mean()), "alpha": alpha,
            "class_weight": class_weight}


# ----------------------------------------------------------------------------------------------------------------
# The model, through the real CLI

def train_model(data_dir, run_dir, config, seed, epochs, extra_flags, threads, keep_checkpoints):
    cmd = [sys.executable, str(ROOT / "train_simple.py"), "--modality", "landmarks", "--data_dir", str(data_dir),
           "--subset", "split.json", "--output_dir", str(run_dir), "--seed", str(seed), "--epochs", str(epochs),
           *MODEL_FLAGS, *CONFIGS[config], *extra_flags]
    done = run_dir / "bench_command.json"
    previous = json.loads(done.read_text()) if done.is_file() else {}
    if previous.get("command") == cmd[2:] and (run_dir / "metrics.json").is_file():
        m = json.loads((run_dir / "metrics.json").read_text())   # the same run finished before: reuse it
        return {**run_summary(m, cmd), "seconds": previous["seconds"], "reused": True}
    t0 = time.time()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads else None   # torch's intra-op threads
    # a folder left by an unfinished or different run is trained over (not part of the run's identity)
    proc = subprocess.run(cmd + ["--overwrite"], capture_output=True, text=True, cwd=ROOT, env=env)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise SystemExit(f"error: train_simple.py failed ({proc.returncode}) for {run_dir}: {' | '.join(tail)}")
    seconds = round(time.time() - t0, 1)
    if not keep_checkpoints:   # hundreds of runs: keep the metrics, not the weights
        for f in ("best.pt", "last.pt"):
            (run_dir / f).unlink(missing_ok=True)
    # the interpreter path differs between machines; the command from the script on is what identifies the run
    write_text(done, json.dumps({"command": cmd[2:], "seconds": seconds}))
    return {**run_summary(json.loads((run_dir / "metrics.json").read_text()), cmd), "seconds": seconds}


def run_summary(m, cmd):
    return {"val_top1": m["val"]["top1"], "val_loss": m["val"]["loss"], "test_top1": m["test"]["top1"],
            "test_n": m["test"]["n"], "best_epoch": m["best_epoch"], "command": " ".join(cmd[2:])}


def mean(xs):
    return float(np.mean(xs)) if len(xs) else float("nan")


def compare_with_ridge(res, config):
    """Split by split: (mean over training seeds of the model's test top-1) - (normalized ridge's test top-1).
    'clearly above' = above on every split and the mean difference above 2 standard errors (over splits)."""
    diffs = []
    for k, split in res["splits"].items():
        model = [r["test_top1"] for r in res["models"][config]["runs"] if str(r["split_seed"]) == k]
        diffs.append(mean(model) - split["baseline"]["ridge_normalized"]["test_top1"])
    d = np.array(diffs)
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
    return {"config": config, "diff_mean": float(d.mean()), "diff_se": se, "splits_above": int((d > 0).sum()),
            "splits": len(d), "clearly_above": bool((d > 0).all() and len(d) > 1 and d.mean() > 2 * se)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS, help="which benchmark sets to run")
    p.add_argument("--ablation", action="store_true",
                   help="run every configuration (raw/normalized, augment none/light/strong, EMA, class weights)")
    every_candidate = [name for candidates, _, _ in LATER_PROTOCOLS.values() for name in candidates]
    p.add_argument("--configs", nargs="+", default=None,
                   choices=list(dict.fromkeys([*CONFIGS, *P4_CANDIDATES, *every_candidate])),
                   help="explicit configurations to run")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="training seeds per configuration and split")
    p.add_argument("--split_seeds", nargs="+", type=int, default=[1234], help="seeds of the stratified splits")
    p.add_argument("--num_frames", type=int, default=16, help="frames per clip (train_simple --num_frames)")
    p.add_argument("--epochs_scale", type=float, default=1.0, help="multiply every set's epoch count (e.g. 0.25 for a smoke run)")
    p.add_argument("--jobs", type=int, default=1, help="training runs at a time (each gets --threads CPU threads)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads per training run (0: torch's default)")
    p.add_argument("--keep_checkpoints", action="store_true", help="keep every run's best.pt/last.pt")
    p.add_argument("--out", default=str(ROOT / "runs" / "bench_real_landmarks"), help="output folder")
    p.add_argument("--merge", nargs="+", default=None, metavar="RESULTS_JSON",
                   help="print one table from earlier results.json files and exit (no training)")
    p.add_argument("--protocol4", choices=("selection", "claim"), default=None,
                   help="Protocol 4 (BENCHMARKS.md): 112 classes at k clips per class; selection on val or the claim")
    for n, (candidates, _, _) in LATER_PROTOCOLS.items():
        p.add_argument(f"--protocol{n}", choices=("selection", "claim"), default=None,
                       help=f"Protocol {n} (BENCHMARKS.md): Protocol 4's data and stages; candidates "
                            f"{', '.join(candidates)}")
    p.add_argument("--seeds_of_claim", nargs="+", type=int, choices=P4_SEEDS, default=None,
                   help="a claim's training seeds (default both: 0 1); a claim run in parts resumes where it stopped")
    p.add_argument("--ks", nargs="+", type=k_value, default=None,
                   help="a claim's k values: 3, 5, 10 (the default) or 'all' (every training clip of each class: the "
                        "ceiling diagnostic); a claim run in parts resumes where it stopped")
    p.add_argument("--union_file", default=None, help="Protocol 4's clips from a --protocol4_pack file")
    p.add_argument("--protocol4_pack", default=None, metavar="NPZ", help="write Protocol 4's clips (float16) and exit")
    p.add_argument("--pack_every_train_clip", action="store_true",
                   help="with --protocol4_pack: also the training clips beyond k = 10 (what --ks all needs)")
    p.add_argument("--ridge_channels", action="store_true",
                   help="the ridge on the baseline's channels and on the model's, Protocol 4's splits at --ks "
                        "(default 5), val only (no training)")
    args = p.parse_args()
    if args.protocol4_pack:
        protocol4_pack(args.protocol4_pack, args.pack_every_train_clip)
        return 0
    if args.ridge_channels:
        return ridge_channels(args)
    if args.protocol4 or any(getattr(args, f"protocol{n}") for n in LATER_PROTOCOLS):
        return protocol4(args)
    if args.merge:
        print(results_table(*[json.loads(Path(f).read_text()) for f in args.merge]), end="")
        return 0
    if not LANDMARKS.is_dir():
        print(f"error: {LANDMARKS} not found: this benchmark needs the shared real landmark sets beside the checkout",
              file=sys.stderr)
        return 2
    configs = args.configs or list(ABLATION if args.ablation else REFERENCE)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {"split_seeds": args.split_seeds, "seeds": args.seeds, "num_frames": args.num_frames,
               "model_flags": MODEL_FLAGS, "configs": {c: CONFIGS[c] for c in configs}, "sets": {}}

    # every split written and its baselines fitted first; then all training runs, --jobs at a time
    jobs = []
    for name in args.sets:
        seqs, labels, classes, extra = load_set(name)
        res = results["sets"][name] = {"splits": {}, "models": {c: {"runs": []} for c in configs}}
        for split_seed in args.split_seeds:
            subset = make_split(name, labels, extra, split_seed)
            used = np.array([s is not None for s in subset])
            data_dir = out / name / f"split{split_seed}" / "data"
            write_wlasl_layout(data_dir, seqs, labels, classes, subset, prefix=f"{name}_")
            sizes = {s: int((subset == s).sum()) for s in ("train", "val", "test")}
            sizes["classes_train"] = int(len(np.unique(labels[subset == "train"])))
            sizes["classes_test"] = int(len(np.unique(labels[subset == "test"])))
            seqs_u = [s for s, u in zip(seqs, used) if u]
            baseline = {key: ridge_baseline(seqs_u, labels[used], subset[used], args.num_frames, norm)
                        for key, norm in (("ridge_normalized", True), ("ridge_raw", False))}
            res["splits"][str(split_seed)] = {"sizes": sizes, "baseline": baseline}
            b = baseline["ridge_normalized"]
            print(f"[{name} split {split_seed}] train/val/test {sizes['train']}/{sizes['val']}/{sizes['test']} "
                  f"({sizes['classes_train']} classes): ridge val {b['val_top1']:.3f} test {b['test_top1']:.3f} "
                  f"(raw: test {baseline['ridge_raw']['test_top1']:.3f})", flush=True)
            epochs = max(1, round(EPOCHS[name] * args.epochs_scale))
            for config in configs:
                for seed in args.seeds:
                    jobs.append((name, split_seed, config, seed, data_dir,
                                 out / name / f"split{split_seed}" / f"{config}-s{seed}", epochs))

    def run_job(job):
        name, split_seed, config, seed, data_dir, run_dir, epochs = job
        return job, train_model(data_dir, run_dir, config, seed, epochs, ["--num_frames", str(args.num_frames)],
                                args.threads, args.keep_checkpoints)

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for n_done, future in enumerate(as_completed([pool.submit(run_job, j) for j in jobs]), 1):
            (name, split_seed, config, seed, _, _, epochs), r = future.result()
            results["sets"][name]["models"][config]["runs"].append({**r, "split_seed": split_seed, "seed": seed})
            print(f"[{n_done}/{len(jobs)}] [{name} split {split_seed}] {config:14s} seed {seed}: "
                  f"val {r['val_top1']:.3f} test {r['test_top1']:.3f} "
                  f"(best epoch {r['best_epoch']}/{epochs}, {r['seconds']:.0f}s)", flush=True)

    for name, res in results["sets"].items():
        for m in res["models"].values():
            m["runs"].sort(key=lambda r: (r["split_seed"], r["seed"]))
            for key in ("val_top1", "val_loss", "test_top1"):
                m[key] = mean([r[key] for r in m["runs"]])
            m["test_std"] = float(np.std([r["test_top1"] for r in m["runs"]]))
        for key in ("ridge_normalized", "ridge_raw"):
            tests = [s["baseline"][key]["test_top1"] for s in res["splits"].values()]
            res[key] = {"val_top1": mean([s["baseline"][key]["val_top1"] for s in res["splits"].values()]),
                        "test_top1": mean(tests), "test_std": float(np.std(tests))}
        # best mean val top-1; ties (common near the ceiling) go to the lower val loss
        chosen = max(configs, key=lambda c: (res["models"][c]["val_top1"], -res["models"][c]["val_loss"]))
        res["chosen_on_val"] = chosen
        res["vs_ridge"] = {c: compare_with_ridge(res, c) for c in dict.fromkeys([chosen, *REFERENCE]) if c in configs}
    write_text(out / "results.json", json.dumps(results, indent=2))
    write_text(out / "results.md", results_table(results))
    print(results_table(results))
    print(f"-> {out / 'results.json'}")
    return 0


# ----------------------------------------------------------------------------------------------------------------
# Protocol 4: the five real sets as one 112-class problem at WLASL's data budget (k training clips per class)

UNION_SETS = ("bsl16", "isl13", "wlasl_small_fullvideo", "tsl39", "asl33")
P4_SPLIT_SEEDS, P4_SEEDS, P4_KS, P4_VAL, P4_TEST, P4_FRAMES = (4001, 4002, 4003), (0, 1), (3, 5, 10), 2, 10, 64
K_ALL = 10**9  # k = 'all': every training clip of a class (the ceiling diagnostic); no class has this many


def k_value(text):
    """--ks: one of P4_KS, or 'all' -> K_ALL."""
    if text == "all":
        return K_ALL
    if text.isdigit() and int(text) in P4_KS:
        return int(text)
    raise argparse.ArgumentTypeError(f"{text!r}: use one of {', '.join(map(str, P4_KS))} or all")


def k_name(k):
    return "all" if k == K_ALL else str(k)


_STRONG = ["--landmark_frames", "64", "--min_steps", "4000", "--augment", "strong"]
P4_CANDIDATES = {  # name -> flags added to the CLI's defaults (written down in BENCHMARKS.md before the runs)
    "default": [],
    # today's defaults spelled out: the same runs as "default" before adoption, and still after it
    "before": ["--landmark_frames", "16", "--min_steps", "0", "--augment", "light"],
    "f64": ["--landmark_frames", "64"],
    "f64+steps": ["--landmark_frames", "64", "--min_steps", "4000"],
    "f64+steps+strong": _STRONG,
    "f64+steps+strong+mirror": _STRONG + ["--aug_mirror_p", "0.5"],
    "f64+steps+strong+ema": _STRONG + ["--ema"],
    "f64+steps+strong+jitter": _STRONG + ["--landmark_jitter", "0.02"],
    "f64+steps+strong+mirror+ema": _STRONG + ["--aug_mirror_p", "0.5", "--ema"],
    "f64+steps+strong+mirror+ema+drop": _STRONG + ["--aug_mirror_p", "0.5", "--ema", "--encoder_dropout", "0.3"],
    "f64+steps8k+strong+mirror+ema": ["--landmark_frames", "64", "--min_steps", "8000", "--augment", "strong",
                                      "--aug_mirror_p", "0.5", "--ema"],
}
ADOPTED = "f64+steps+strong"  # the candidate Protocol 4's selection adopted (the claim compares it with the defaults before it)
P5_CANDIDATES = {  # Protocol 5 (BENCHMARKS.md, written down before its runs): flags added to today's defaults
    "default": [],
    "mixup": ["--mixup", "0.5"],
    "conv": ["--encoder", "conv"],
    "conv+mixup": ["--encoder", "conv", "--mixup", "0.5"],
    "mirror+tta": ["--aug_mirror_p", "0.5", "--tta_flip"],
    "h256": ["--hidden_dim", "256"],
}
P5_ADOPTED = None  # Protocol 5 adopted no candidate (BENCHMARKS.md: conv +0.3 points on val, the rule asks for 2)
P6_CANDIDATES = {  # Protocol 6 (BENCHMARKS.md, written down before its runs): flags added to today's defaults
    "default": [],
    "h768": ["--hidden_dim", "768"],
    "l4": ["--num_layers", "4"],
    "lr6e-4": ["--lr", "6e-4"],
}
P6_ADOPTED = None  # Protocol 6 adopted no candidate (BENCHMARKS.md: l4 +0.4 points on val, the rule asks for 2)
P7_CANDIDATES = {  # Protocol 7 (BENCHMARKS.md, written down before its runs): flags added to today's defaults
    "default": [],
    "ens3": ["--ensemble", "3"],
}
P7_ADOPTED = None  # Protocol 7 adopted no candidate (BENCHMARKS.md: ens3 +1.3 points on val, the rule asks for 2)
P8_CANDIDATES = {  # Protocol 8 (BENCHMARKS.md, written down before its runs): flags added to today's defaults
    "default": [],
    "shape": ["--hand_shape"],
    "shape+ens3": ["--hand_shape", "--ensemble", "3"],
}
P8_ADOPTED = "shape+ens3"  # Protocol 8 adopted it (BENCHMARKS.md: +4.2 points on val, the rule asks for 2)
P9_CANDIDATES = {  # Protocol 9 (BENCHMARKS.md, written down before its runs): flags added to today's defaults
    "default": [],
    "frame": ["--hand_frame"],
    "ens5": ["--ensemble", "5"],
    "frame+ens5": ["--hand_frame", "--ensemble", "5"],
}
P9_ADOPTED = None  # Protocol 9 adopted no candidate (BENCHMARKS.md: frame+ens5 +0.3 points on val, the rule asks for 2)
P10_CANDIDATES = {  # Protocol 10 (BENCHMARKS.md, written down before its runs): flags added to today's defaults
    "default": [],
    "lefthand": ["--mirror_left_handed"],
    "handdrop": ["--aug_hand_drop_p", "0.3"],
    "lefthand+handdrop": ["--mirror_left_handed", "--aug_hand_drop_p", "0.3"],
}
P10_ADOPTED = None  # Protocol 10 adopted no candidate (BENCHMARKS.md: lefthand +1.5 points on val, the rule asks for 2)
P11_CANDIDATES = {  # Protocol 11 (BENCHMARKS.md, written down before its runs): flags added to today's defaults;
    # default and lefthand are Protocol 10's runs (copy its selection_runs.jsonl into --out first)
    "default": [],
    "lefthand": ["--mirror_left_handed"],
    "lefthand+frame": ["--mirror_left_handed", "--hand_frame"],
    "lefthand+l4": ["--mirror_left_handed", "--num_layers", "4"],
    "lefthand+mixup": ["--mirror_left_handed", "--mixup", "0.5"],
    "lefthand+ens5": ["--mirror_left_handed", "--ensemble", "5"],
}
P11_ADOPTED = "lefthand+frame"  # Protocol 11 adopted it (BENCHMARKS.md: +2.5 points on val, the rule asks for 2)
# Protocols after 4: number -> (candidates, the adopted one or None, what its claim runs beside the adopted one:
# Protocols 5 and 7 compare with Protocol 4's claim of today's defaults, Protocol 6 runs them again)
LATER_PROTOCOLS = {5: (P5_CANDIDATES, P5_ADOPTED, ()), 6: (P6_CANDIDATES, P6_ADOPTED, ("default",)),
                   7: (P7_CANDIDATES, P7_ADOPTED, ()), 8: (P8_CANDIDATES, P8_ADOPTED, ()),
                   9: (P9_CANDIDATES, P9_ADOPTED, ()), 10: (P10_CANDIDATES, P10_ADOPTED, ()),
                   11: (P11_CANDIDATES, P11_ADOPTED, ())}
P4_FLAGS = ["--modality", "landmarks", "--no_compile", "--no_cache"]  # the CLI's defaults otherwise


def load_union():
    """-> (sequences, labels (N,), class names 'set:gloss', set name per clip, session split per clip ('' = none))."""
    seqs, labels, classes, set_of, session = [], [], [], [], []
    for name in UNION_SETS:
        d = np.load(LANDMARKS / f"{name}_162.npz", allow_pickle=False)
        if "frames" in d:
            frames = d["frames"]
            x = [frames[o:o + n] for o, n in zip(d["offsets"], d["lengths"])]
        else:
            x = list(d["X"])
        split = d["split"] if "split" in d else np.full(len(x), "")
        seqs += [a.astype(np.float32) for a in x]
        labels.append(d["y"].astype(np.int64) + len(classes))
        classes += [f"{name}:{c}" for c in d["classes"]]
        set_of += [name] * len(x)
        session += [str(v) for v in split]
    return seqs, np.concatenate(labels), classes, np.array(set_of), np.array(session)


def union_split(labels, session, seed):
    """Per class: val (P4_VAL clips), test (up to P4_TEST) and the training order (train = its first k), so that
    every k of a split seed shares val and test. Sets with recording sessions draw each part from its own sessions;
    the others at random, test keeping max(P4_KS) clips for training. -> (subset: 'val'|'test'|'' , train rank)"""
    rng = np.random.default_rng(seed)
    subset, rank = np.full(len(labels), "", dtype=object), np.full(len(labels), -1)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if session[idx[0]]:
            pool = {s: rng.permutation(idx[session[idx] == s]) for s in ("train", "val", "test")}
            val, test, rest = pool["val"][:P4_VAL], pool["test"][:P4_TEST], pool["train"]
        else:
            perm = rng.permutation(idx)
            n_test = max(0, min(P4_TEST, len(idx) - P4_VAL - max(P4_KS)))
            val, test, rest = perm[:P4_VAL], perm[P4_VAL:P4_VAL + n_test], perm[P4_VAL + n_test:]
        subset[val], subset[test] = "val", "test"
        rank[rest] = np.arange(len(rest))
    return subset, rank


def k_subset(subset, rank, k):
    out = np.array([s if s else None for s in subset], dtype=object)
    out[(rank >= 0) & (rank < k)] = "train"
    return out


def protocol4_data(union_file=None, every_train_clip=False):
    """(seqs, labels, classes, set_of, {split_seed: (subset, rank)}) from ../shared, or from a --protocol4_pack file
    (which must hold every training clip where every_train_clip: a pack of k <= 10 would silently give k = 10)."""
    if union_file:
        d = np.load(union_file, allow_pickle=False)
        if every_train_clip and not ("every_train_clip" in d and bool(d["every_train_clip"])):
            raise SystemExit(f"error: {union_file} holds only the training clips up to k = {max(P4_KS)}: --ks all "
                             "needs a pack written with --protocol4_pack NPZ --pack_every_train_clip")
        frames = d["frames"]  # an NpzFile decompresses on every access: once
        seqs = [frames[o:o + n].astype(np.float32) for o, n in zip(d["offsets"], d["lengths"])]
        splits = {int(s): (d[f"subset_{s}"].astype(object), d[f"rank_{s}"]) for s in d["split_seeds"]}
        return seqs, d["labels"], [str(c) for c in d["classes"]], d["set_of"], splits
    seqs, labels, classes, set_of, session = load_union()
    return seqs, labels, classes, set_of, {s: union_split(labels, session, s) for s in P4_SPLIT_SEEDS}


def protocol4_pack(path, every_train_clip=False):
    """Only the clips some split of Protocol 4 uses (every_train_clip: also those beyond k = 10), float16 (the
    landmarks are image fractions; float16 keeps them to about 3e-4), so that the benchmark travels to a machine
    without ../shared."""
    seqs, labels, classes, set_of, splits = protocol4_data()
    used = np.zeros(len(labels), bool)
    for subset, rank in splits.values():
        used |= (subset != "") | ((rank >= 0) & (every_train_clip | (rank < max(P4_KS))))
    keep = np.flatnonzero(used)
    lengths = np.array([len(seqs[i]) for i in keep])
    arrays = dict(frames=np.concatenate([seqs[i] for i in keep]).astype(np.float16), lengths=lengths,
                  offsets=np.concatenate([[0], np.cumsum(lengths)[:-1]]), labels=labels[keep],
                  classes=np.array(classes), set_of=set_of[keep], split_seeds=np.array(list(splits)),
                  every_train_clip=np.array(every_train_clip))
    for seed, (subset, rank) in splits.items():
        arrays[f"subset_{seed}"], arrays[f"rank_{seed}"] = subset[keep].astype(str), rank[keep]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    print(f"{path}: {len(keep)} of {len(labels)} clips, {Path(path).stat().st_size / 1e6:.1f} MB")


def ridge_channels(args):
    """How much of the model's margin over the ridge is its input channels (a val-only diagnostic, BENCHMARKS.md
    "After Protocol 11"): the same ridge on the baseline's 453 channels and on the model's 641, on Protocol 4's
    splits at --ks (default 5). Prints val top-1 only; it selects nothing."""
    ks = tuple(args.ks or (5,))
    seqs, labels, _, set_of, splits = protocol4_data(args.union_file, K_ALL in ks)
    subsets = {(split_seed, k): k_subset(base, rank, k) for split_seed, (base, rank) in splits.items() for k in ks}
    features = {name: ridge_features(seqs, subsets.values(), model_channels)
                for name, model_channels in (("baseline (453)", False), ("model (641)", True))}
    results, lines = {}, ["| k | channels | val top-1 per split | mean |", "|---|---|---|---:|"]
    for k in ks:
        for name, X in features.items():
            vals = [ridge_per_set(X, labels, subsets[split_seed, k], set_of)["val_top1"] for split_seed in splits]
            results[f"k{k_name(k)}/{name}"] = {"val_top1": dict(zip(map(str, splits), vals)), "mean": mean(vals)}
            lines.append(f"| {k_name(k)} | {name} | {' / '.join(f'{v:.3f}' for v in vals)} | {mean(vals):.3f} |")
            print(lines[-1], flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "ridge_channels.json", json.dumps(results, indent=1))
    write_text(out / "ridge_channels.md", "\n".join(lines) + "\n")
    return 0


def per_set_top1(per_class_csv, set_names):
    """Top-1 per set and pooled from evaluate.py's per_class.csv (gloss 'set:name')."""
    import csv
    hits, n = {}, {}
    for row in csv.DictReader(open(per_class_csv)):
        if int(row["n"]):
            name = row["gloss"].split(":")[0]
            n[name] = n.get(name, 0) + int(row["n"])
            hits[name] = hits.get(name, 0) + float(row["top1"]) * int(row["n"])
    out = {name: hits[name] / n[name] for name in set_names if n.get(name)}
    out["pooled"] = sum(hits.values()) / sum(n.values())
    return out


def ridge_features(seqs, subsets, model_channels=False):
    """Protocol 2's normalized pooled features (N, 2C) of every clip that one of subsets uses, computed once for all
    the splits and k values (a clip's features do not depend on its split); rows of clips none uses stay zero."""
    used = np.flatnonzero(np.any([[s is not None for s in subset] for subset in subsets], axis=0))
    features = pooled_features([seqs[i] for i in used], P4_FRAMES, True, model_channels)
    X = np.zeros((len(seqs), features.shape[1]), features.dtype)
    X[used] = features
    return X


def ridge_per_set(X, labels, subset, set_of):
    """The normalized ridge (Protocol 2's) on ridge_features X, scored per set and pooled on the test clips."""
    from sklearn.linear_model import RidgeClassifier
    from sklearn.preprocessing import StandardScaler
    used = np.array([s is not None for s in subset])
    X, y, sub, sets = X[used], labels[used], subset[used], set_of[used]
    tr, va, te = sub == "train", sub == "val", sub == "test"
    scaler = StandardScaler().fit(X[tr])
    X = scaler.transform(X)
    best = None
    for class_weight in (None, "balanced"):
        for alpha in (0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0):
            clf = RidgeClassifier(alpha=alpha, class_weight=class_weight).fit(X[tr], y[tr])
            val = float((clf.predict(X[va]) == y[va]).mean())
            if best is None or val > best[0]:
                best = (val, alpha, class_weight, clf)
    right = best[3].predict(X[te]) == y[te]
    test = {name: float(right[sets[te] == name].mean()) for name in UNION_SETS if (sets[te] == name).any()}
    test["pooled"] = float(right.mean())
    return {"val_top1": best[0], "alpha": best[1], "class_weight": best[2], "test": test}


def protocol4(args):
    """Stage 'selection': every candidate at k = 5, three split seeds, training seed 0, val only. Stage 'claim': the
    recipes in --configs (default: default and the adopted one) and the ridge at k = 3, 5, 10, both seeds, test.
    Protocols 5 and 6 (args.protocol5, args.protocol6): the same data and stages with their own candidates; the
    claim runs the adopted one (Protocol 6: and today's defaults again; Protocol 5 compared with Protocol 4's
    claim of them)."""
    later = next((n for n in LATER_PROTOCOLS if getattr(args, f"protocol{n}", None)), None)
    if later:
        stage = getattr(args, f"protocol{later}")
        candidates, adopted, beside = LATER_PROTOCOLS[later]
        if stage == "claim" and not (args.configs or adopted):
            raise SystemExit(f"error: Protocol {later} adopted no candidate (P{later}_ADOPTED is None): its claim is "
                             "not run; pass --configs to score candidates on test anyway")
        names = args.configs or (list(candidates) if stage == "selection" else [*beside, adopted])
    else:
        stage, candidates = args.protocol4, P4_CANDIDATES
        names = args.configs or ([c for c in P4_CANDIDATES if c != "before"] if stage == "selection"
                                 else ["before", ADOPTED])
    out = Path(args.out)
    ks, seeds = ((5,), (0,)) if stage == "selection" else (tuple(args.ks or P4_KS),
                                                           tuple(args.seeds_of_claim or P4_SEEDS))
    seqs, labels, classes, set_of, splits = protocol4_data(args.union_file, K_ALL in ks)
    results = {"stage": stage, "candidates": {c: candidates[c] for c in names}, "flags": P4_FLAGS,
               "runs": [], "ridge": {}}
    jobs = []
    subsets = {(split_seed, k): k_subset(base, rank, k) for split_seed, (base, rank) in splits.items() for k in ks}
    X = ridge_features(seqs, subsets.values())
    for split_seed in splits:
        for k in ks:
            subset = subsets[split_seed, k]
            data_dir = out / f"split{split_seed}" / f"k{k_name(k)}" / "data"
            write_wlasl_layout(data_dir, seqs, labels, classes, subset, prefix="u")
            ridge = ridge_per_set(X, labels, subset, set_of)
            results["ridge"][f"{split_seed}/k{k_name(k)}"] = ridge
            print(f"[split {split_seed} k={k_name(k)}] train/val/test {sum(subset == 'train')}/"
                  f"{sum(subset == 'val')}/{sum(subset == 'test')}: ridge val {ridge['val_top1']:.3f} "
                  f"test {ridge['test']['pooled']:.3f}",
                  flush=True)
            for name in names:
                for seed in seeds:
                    jobs.append((split_seed, k, name, seed, data_dir, out / f"split{split_seed}" / f"k{k_name(k)}" /
                                 f"{name}-s{seed}"))

    def run_job(job):
        split_seed, k, name, seed, data_dir, run_dir = job
        cmd = [sys.executable, str(ROOT / "train_simple.py"), "--data_dir", str(data_dir), "--subset", "split.json",
               "--output_dir", str(run_dir), "--seed", str(seed), *P4_FLAGS, *candidates[name], "--overwrite"]
        t0 = time.time()
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads or 2)}
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise SystemExit(f"error: train_simple.py failed ({proc.returncode}) for {run_dir}: {' | '.join(tail)}")
        m = json.loads((run_dir / "metrics.json").read_text())
        r = {"split_seed": split_seed, "k": k, "config": name, "seed": seed, "val_top1": m["val"]["top1"],
             "val_loss": m["val"]["loss"], "best_epoch": m["best_epoch"],
             "epochs": json.loads((run_dir / "args.json").read_text())["epochs"]}
        if stage == "claim":
            ev = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), "--checkpoint", str(run_dir / "best.pt"),
                                 "--split", "test"], capture_output=True, text=True, cwd=ROOT, env=env)
            if ev.returncode != 0:
                raise SystemExit(f"error: evaluate.py failed for {run_dir}: {ev.stderr.strip()[-300:]}")
            r["test"] = per_set_top1(run_dir / "eval_test" / "per_class.csv", UNION_SETS)
        for f in ("best.pt", "last.pt"):
            (run_dir / f).unlink(missing_ok=True)
        r["seconds"] = round(time.time() - t0, 1)
        return r

    # runs.jsonl keeps every finished run, so that a run cut off by a time limit goes on where it stopped
    done_file = out / f"{stage}_runs.jsonl"
    done = [json.loads(line) for line in done_file.read_text().splitlines()] if done_file.exists() else []
    key = lambda split_seed, k, name, seed: (split_seed, k, name, seed)  # noqa: E731
    finished = {key(r["split_seed"], r["k"], r["config"], r["seed"]) for r in done}
    results["runs"] += [r for r in done if r["config"] in names and r["k"] in ks and r["seed"] in seeds]
    jobs = [j for j in jobs if key(*j[:4]) not in finished]
    print(f"{len(finished)} runs already done ({done_file}), {len(jobs)} to go", flush=True)
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool, open(done_file, "a") as log:
        for n_done, future in enumerate(as_completed([pool.submit(run_job, j) for j in jobs]), 1):
            r = future.result()
            results["runs"].append(r)
            log.write(json.dumps(r) + "\n")
            log.flush()
            test = f" test {r['test']['pooled']:.3f}" if "test" in r else ""
            print(f"[{n_done}/{len(jobs)}] split {r['split_seed']} k={k_name(r['k'])} {r['config']:34s} "
                  f"seed {r['seed']}: val {r['val_top1']:.3f}{test} (best epoch {r['best_epoch']}/{r['epochs']}, "
                  f"{r['seconds']:.0f}s)",
                  flush=True)
    results["runs"].sort(key=lambda r: (r["k"], r["config"], r["split_seed"], r["seed"]))
    write_text(out / f"{stage}.json", json.dumps(results, indent=1))
    table = protocol4_table(results)
    write_text(out / f"{stage}.md", table)
    print(table)
    return 0


def protocol4_table(results):
    runs, lines = results["runs"], []
    if results["stage"] == "selection":
        lines += ["| candidate | val top-1 per split | mean val top-1 | mean val loss | epochs |", "|---|---|---|---|---|"]
        rows = []
        for name in results["candidates"]:
            rs = [r for r in runs if r["config"] == name]
            rows.append((mean([r["val_top1"] for r in rs]), -mean([r["val_loss"] for r in rs]), name, rs))
        for v, nl, name, rs in sorted(rows, reverse=True):
            per_split = " ".join(f"{r['val_top1']:.3f}" for r in rs)
            lines.append(f"| {name} | {per_split} | {v:.4f} | {-nl:.4f} | "
                         f"{rs[0]['epochs'] if rs else '-'} |")
        lines.append(f"\nChosen on val: **{sorted(rows, reverse=True)[0][2]}**")
        return "\n".join(lines) + "\n"
    sets = ["pooled", *UNION_SETS]
    lines += ["| k | recipe | " + " | ".join(sets) + " | val | splits above ridge (pooled) |",
              "|---|---|" + "---|" * len(sets) + "---|---|"]
    for k in (*P4_KS, K_ALL):
        ridge = {key: v for key, v in results["ridge"].items() if key.endswith(f"/k{k_name(k)}")}
        if not ridge:
            continue
        cells = [f"{mean([v['test'].get(s, np.nan) for v in ridge.values()]):.3f}" for s in sets]
        lines.append(f"| {k_name(k)} | ridge | " + " | ".join(cells) +
                     f" | {mean([v['val_top1'] for v in ridge.values()]):.3f} | |")
        for name in results["candidates"]:
            rs = [r for r in runs if r["config"] == name and r["k"] == k]
            if not rs:
                continue
            cells = [f"{mean([r['test'].get(s, np.nan) for r in rs]):.3f}" for s in sets]
            above = sum(mean([r["test"]["pooled"] for r in rs if r["split_seed"] == int(key.split('/')[0])])
                        > v["test"]["pooled"] for key, v in ridge.items())
            lines.append(f"| {k_name(k)} | {name} | " + " | ".join(cells) +
                         f" | {mean([r['val_top1'] for r in rs]):.3f} | {above}/{len(ridge)} |")
    lines.append("\nTest top-1, mean over split seeds (and training seeds for the model); pooled = every test clip "
                 "of the 112 classes. Last column: splits on which the recipe's mean over training seeds beats the "
                 "ridge on the same split.")
    return "\n".join(lines) + "\n"


def sizes_cell(res):
    """train/val/test (classes) of the first split (every split of a set has the same sizes)."""
    s = next(iter(res["splits"].values()))["sizes"]
    return f"{s['train']}/{s['val']}/{s['test']} ({s['classes_train']})"


def results_table(*all_results):
    """Markdown: val top-1 of every configuration; test top-1 (mean ± std over splits and seeds) for the baselines,
    the reference recipes and the configuration chosen on val; the chosen recipe minus ridge, split by split."""
    configs = list(dict.fromkeys(c for results in all_results for c in results["configs"]))
    lines = ["| set | train/val/test (classes) | splits x seeds | ridge raw | ridge norm | "
             + " | ".join(configs) + " | chosen on val | chosen - ridge norm (splits above) |",
             "|---|---|---|---|---|" + "---|" * len(configs) + "---|---|"]
    rows = [(name, r, results) for results in all_results for name, r in results["sets"].items()]
    for name, r, results in rows:
        cells = []
        for c in configs:
            if c not in r["models"]:
                cells.append("-")
                continue
            m = r["models"][c]
            test = (f" / **{m['test_top1']:.3f}** ±{m['test_std']:.3f}"
                    if c in REFERENCE or c == r["chosen_on_val"] else "")
            cells.append(f"{m['val_top1']:.3f}{test}")
        rb, nb = r["ridge_raw"], r["ridge_normalized"]
        v = r["vs_ridge"][r["chosen_on_val"]]
        verdict = "clearly above" if v["clearly_above"] else ("below" if v["diff_mean"] < 0 else "not clearly above")
        lines.append(f"| {name} | {sizes_cell(r)} | {len(results['split_seeds'])} x {len(results['seeds'])} | "
                     f"{rb['val_top1']:.3f} / **{rb['test_top1']:.3f}** ±{rb['test_std']:.3f} | "
                     f"{nb['val_top1']:.3f} / **{nb['test_top1']:.3f}** ±{nb['test_std']:.3f} | "
                     + " | ".join(cells) + f" | {r['chosen_on_val']} | {v['diff_mean']:+.3f} ±{v['diff_se']:.3f} "
                     f"({v['splits_above']}/{v['splits']}): {verdict} |")
    lines.append("")
    lines.append("Cells: val top-1 / **test top-1** ±std (test only for the baselines, the reference recipes and the "
                 "configuration chosen on val); means over every split and training seed. Last column: the chosen "
                 "recipe's test top-1 minus the normalized ridge's, mean ± standard error over splits; 'clearly "
                 "above' = above on every split and by more than 2 standard errors.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
