"""
Training-throughput benchmark at WLASL scale: the per-file DataLoader path against this project's training loop.

    python bench_train.py                                   # nslt_2000 scale, D=2048, 16 frames, batch 32
    python bench_train.py --subset ../shared/data/wlasl/nslt_1000.json --feature_dim 2560
    python bench_train.py --subset ../shared/data/wlasl/nslt_1000.json --feature_dim 2560 --memory_cap_gb 4 --skip_reference
    python bench_train.py --subset ../shared/data/wlasl/nslt_100.json --device cpu --epochs 2   # CPU-sized
    python bench_train.py --subset ../shared/data/wlasl/nslt_1000.json --feature_dim 8 --memory_cap_gb 4 \
        --skip_reference --extra "--modality landmarks"        # landmarks alone, with their own defaults

It reads the real split file (real ids, labels and split sizes), writes generated features once as per-clip
.npy files to --scratch ({id}_gemma.npy (--num_frames or train_simple's default 16, D) float32, {id}_landmarks.npy
(T, 162) with T the clip length, capped at 100), then measures, each phase in a fresh child process so that peak
host RSS and peak GPU memory are its own:
  (a) reference: a torch DataLoader that np.loads every clip (4 workers, fp32, pinned), same model, eager step;
  (b) train_simple.py's own loop, cold (packs the cache on the way) and warm (memory-maps the cache).
Reported per phase: training samples/s and seconds per epoch (the median of epochs after the first), the share
of each epoch spent waiting for data, peak GPU memory (torch.cuda.max_memory_allocated) and peak host RSS.
Prints a table and writes JSON (--out). Not a test: timings live here, never in the test suite.
"""
import argparse
import csv
import json
import multiprocessing as mp
import resource
import shutil
import statistics
import sys
import time
from pathlib import Path
from queue import Empty

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as `python benchmarks/bench_train.py` from anywhere
DEFAULT_SPLIT = ROOT.parent / "shared" / "data" / "wlasl" / "nslt_2000.json"


def train_script():
    """train_simple.py's functions, executed in this process as `python train_simple.py` would (not imported)."""
    import runpy
    return runpy.run_path(str(ROOT / "train_simple.py"))


def write_dataset(split_path, scratch, feature_dim, num_frames, seed=0):
    """Per-clip .npy files with a weak class signal; skipped when the scratch folder already holds them."""
    data_dir = scratch / f"{Path(split_path).stem}-d{feature_dim}-t{num_frames}"
    marker = data_dir / "complete"
    if marker.exists():
        return data_dir
    shutil.rmtree(data_dir, ignore_errors=True)
    (data_dir / "gemma_features").mkdir(parents=True)
    (data_dir / "landmarks").mkdir()
    split = json.loads(Path(split_path).read_text())
    rng = np.random.default_rng(seed)
    t0 = time.time()
    for video_id, entry in split.items():
        class_id, start, end = entry["action"]
        frames = int(np.clip(end - start + 1, 8, 100))
        gemma = rng.standard_normal((num_frames, feature_dim), dtype=np.float32)
        gemma[:, class_id % feature_dim] += 2.0
        landmarks = rng.random((frames, 162), dtype=np.float32)
        np.save(data_dir / "gemma_features" / f"{video_id}_gemma.npy", gemma)
        np.save(data_dir / "landmarks" / f"{video_id}_landmarks.npy", landmarks)
    shutil.copy(split_path, data_dir / Path(split_path).name)
    marker.write_text("ok")
    print(f"wrote {len(split)} clips to {data_dir} in {time.time() - t0:.0f}s", flush=True)
    return data_dir


def peak_rss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # Linux reports KiB


class PerFileDataset:
    """The usual per-file Dataset: __getitem__ np.loads both files of a clip, samples and pads them."""

    def __init__(self, data_dir, clips, num_frames):
        self.data_dir, self.clips, self.T = data_dir, clips, num_frames

    def __len__(self):
        return len(self.clips)

    def __getitem__(self, i):
        import torch
        from hybrid_asl.clips import uniform_indices
        video_id, label = self.clips[i]
        gemma = np.load(self.data_dir / "gemma_features" / f"{video_id}_gemma.npy")
        landmarks = np.load(self.data_dir / "landmarks" / f"{video_id}_landmarks.npy")
        gemma = gemma[uniform_indices(len(gemma), self.T)]
        landmarks = landmarks[uniform_indices(len(landmarks), self.T)]
        out_g, out_l = np.zeros((self.T, gemma.shape[1]), np.float32), np.zeros((self.T, 162), np.float32)
        out_g[: len(gemma)], out_l[: len(landmarks)] = gemma, landmarks
        return (torch.from_numpy(out_g), torch.from_numpy(out_l), torch.tensor(min(len(landmarks), self.T)),
                torch.tensor(label))


def reference_phase(cfg):
    """(a) The usual per-file pipeline: Dataset.__getitem__ np.loads both files of a clip."""
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader

    from hybrid_asl.batches import Batch
    from hybrid_asl.engine import amp_context, prepare_inputs
    from hybrid_asl.landmarks import LandmarkPreprocessor
    from hybrid_asl.recipe import build_model, model_config
    from hybrid_asl.splits import build_label_mapping, load_split

    data_dir, device = Path(cfg["data_dir"]), torch.device(cfg["device"])
    clips = load_split(data_dir / cfg["split_name"])
    mapping = build_label_mapping(clips, {})
    label_of = {m["wlasl_id"]: m["index"] for m in mapping}
    train = [(c.video_id, label_of[c.class_id]) for c in clips.values() if c.subset == "train"]
    T = cfg["num_frames"]

    args = train_script()["build_parser"]().parse_args(["--hidden_dim", str(cfg["hidden_dim"])])
    model = build_model(model_config(args, len(mapping), cfg["feature_dim"])).to(device)
    prepare = LandmarkPreprocessor(normalize=True).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, fused=True)
    amp = amp_context(device)
    loader = DataLoader(PerFileDataset(data_dir, train, T), batch_size=cfg["batch_size"], shuffle=True, num_workers=4,
                        pin_memory=device.type == "cuda", persistent_workers=True, drop_last=False)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    epochs, waits = [], []
    for _ in range(cfg["epochs"]):
        t0, wait = time.perf_counter(), 0.0
        t_data = time.perf_counter()
        for gemma, landmarks, lengths, labels in loader:
            wait += time.perf_counter() - t_data
            gemma, landmarks = gemma.to(device, non_blocking=True), landmarks.to(device, non_blocking=True)
            lengths, labels = lengths.to(device), labels.to(device)
            mask = torch.arange(T, device=device)[None] < lengths[:, None]
            batch = Batch(gemma, landmarks, mask, labels, torch.ones(len(labels), device=device))
            gemma, features, mask = prepare_inputs(batch, prepare)
            with amp:
                loss = F.cross_entropy(model(gemma, features, mask).float(), labels, label_smoothing=0.1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize()  # honest epoch time: the host must not run ahead of the GPU
            t_data = time.perf_counter()
        epochs.append(time.perf_counter() - t0)
        waits.append(wait)
    return dict(epoch_seconds=epochs, data_wait_seconds=waits, train_clips=len(train),
                peak_gpu_gb=torch.cuda.max_memory_allocated() / 1e9 if device.type == "cuda" else None,
                peak_rss_gb=peak_rss_gb())


def project_phase(cfg):
    """(b) python train_simple.py ... in-process, reading its own summary.csv for per-epoch times."""
    import torch

    out = Path(cfg["scratch"]) / f"run-{cfg['name']}"
    shutil.rmtree(out, ignore_errors=True)
    argv = ["--data_dir", cfg["data_dir"], "--subset", cfg["split_name"], "--epochs", str(cfg["epochs"]),
            "--batch_size", str(cfg["batch_size"]), "--hidden_dim", str(cfg["hidden_dim"]), "--device", cfg["device"],
            "--output_dir", str(out), "--cache_dir", str(Path(cfg["scratch"]) / "cache")] + cfg["extra"]
    if cfg["given_frames"]:  # else train_simple's own default, as a user gets it (64 landmark frames for landmarks)
        argv += ["--num_frames", str(cfg["given_frames"])]
    if cfg["device"] != "cpu":
        if cfg["memory_cap_gb"]:  # a small card's budget on a big one: allocations beyond it raise out-of-memory
            total = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
            torch.cuda.set_per_process_memory_fraction(min(1.0, cfg["memory_cap_gb"] * 2**30 / total))
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    code = train_script()["main"](argv)
    total = time.perf_counter() - t0
    assert code == 0, f"train_simple exited with {code}"
    rows = list(csv.DictReader(open(out / "summary.csv")))
    return dict(epoch_seconds=[float(r["train_seconds"]) for r in rows],
                data_wait_seconds=[float(r["data_seconds"]) for r in rows], total_seconds=total,
                train_clips=sum(e["subset"] == "train" for e in
                                json.loads((Path(cfg["data_dir"]) / cfg["split_name"]).read_text()).values()),
                peak_gpu_gb=torch.cuda.max_memory_allocated() / 1e9 if cfg["device"] != "cpu" else None,
                peak_rss_gb=peak_rss_gb())


def startup_phase(cfg):
    """(c) What a run spends on its data before training: load_splits with no cache (hash every file's content,
    pack, write the cache), then again with the cache there (stat every file, compare with the remembered digests,
    memory-map)."""
    from hybrid_asl.packing import load_splits
    from hybrid_asl.splits import build_label_mapping, load_split
    data_dir = Path(cfg["data_dir"])
    clips = load_split(data_dir / cfg["split_name"])
    label_of = {m["wlasl_id"]: m["index"] for m in build_label_mapping(clips, {})}
    cache = Path(cfg["scratch"]) / "startup-cache"
    shutil.rmtree(cache, ignore_errors=True)
    seconds = []
    for _ in range(3):  # cold, then warm twice
        t0 = time.perf_counter()
        load_splits(clips, label_of, data_dir / "gemma_features", data_dir / "landmarks", "hybrid", cfg["num_frames"],
                    cfg["feature_dim"], cache_dir=cache, subset_name=cfg["split_name"], show_progress=False)
        seconds.append(time.perf_counter() - t0)
    return dict(cold_seconds=seconds[0], warm_seconds=min(seconds[1:]), clips=len(clips),
                files=2 * len(clips), peak_rss_gb=peak_rss_gb())


def _child(fn, cfg, queue):
    try:
        queue.put(("ok", fn(cfg)))
    except BaseException as e:  # reported by the parent as one line
        queue.put(("failed", f"{type(e).__name__}: {e}"))


def run_phase(fn, cfg):
    """Runs one phase in a fresh (non-daemon, so DataLoader workers are allowed) child process. A child that fails
    or dies (e.g. killed for memory) ends the benchmark with one line instead of leaving the parent waiting."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_child, args=(fn, cfg, queue))
    child.start()
    while True:
        try:
            status, result = queue.get(timeout=1.0)
            break
        except Empty:
            if not child.is_alive():
                status, result = "failed", f"the process died (exit code {child.exitcode})"
                break
    child.join()
    if status != "ok":
        sys.exit(f"error: benchmark phase {fn.__name__} ({cfg.get('name', 'reference')}) failed: {result}")
    return result


def summarize(name, result):
    epochs = result["epoch_seconds"]
    steady = statistics.median(epochs[1:]) if len(epochs) > 1 else epochs[0]
    wait = statistics.median(result["data_wait_seconds"][1:] or result["data_wait_seconds"])
    return dict(phase=name, seconds_per_epoch=round(steady, 3),
                samples_per_second=round(result["train_clips"] / steady, 1),
                data_wait_share=round(wait / steady, 4), first_epoch_seconds=round(epochs[0], 3),
                peak_gpu_gb=None if result["peak_gpu_gb"] is None else round(result["peak_gpu_gb"], 3),
                peak_rss_gb=round(result["peak_rss_gb"], 2), total_seconds=round(result.get("total_seconds", 0), 1))


def main():
    visual_frames = train_script()["build_parser"]().get_default("num_frames")  # rows of a generated Gemma file
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--subset", default=str(DEFAULT_SPLIT), help="real WLASL split file")
    p.add_argument("--feature_dim", type=int, default=2048, help="generated visual feature width D")
    p.add_argument("--num_frames", type=int, default=None,
                   help="frames per clip, passed to train_simple.py (default: its own, 16 visual frames or 64 landmark "
                        f"frames with --modality landmarks; the generated Gemma files and the reference use "
                        f"train_simple's default {visual_frames})")
    p.add_argument("--hidden_dim", type=int, default=512, help="model width")
    p.add_argument("--batch_size", type=int, default=32, help="clips per step")
    p.add_argument("--epochs", type=int, default=3, help="epochs per phase (the first counts as warm-up)")
    p.add_argument("--device", default="cuda", help="cuda or cpu")
    p.add_argument("--scratch", default="/tmp/wlasl-bench", help="folder for the generated per-clip files")
    p.add_argument("--skip_reference", action="store_true", help="only time this project's loop")
    p.add_argument("--extra", default="", help="extra train_simple.py flags, e.g. '--no_cuda_graphs'")
    p.add_argument("--out", default="bench_train.json", help="JSON results")
    p.add_argument("--memory_cap_gb", type=float, default=0,
                   help="cap train_simple's GPU memory at this many GiB (e.g. 4: does it fit a 4 GB card?)")
    p.add_argument("--startup", action="store_true",
                   help="only time the data start-up (load_splits cold and warm: content digests, packing, cache)")
    args = p.parse_args()
    if not Path(args.subset).is_file():
        sys.exit(f"error: split file {args.subset} not found; pass --subset (the real WLASL split files are in "
                 "../shared/data/wlasl)")
    if args.device.startswith("cuda"):
        import torch
        if not torch.cuda.is_available():
            sys.exit(f"error: --device {args.device}: no CUDA GPU here; on a CPU run: python bench_train.py --subset "
                     "../shared/data/wlasl/nslt_100.json --device cpu --epochs 2")
    scratch = Path(args.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    data_dir = write_dataset(args.subset, scratch, args.feature_dim, args.num_frames or visual_frames)
    shutil.rmtree(scratch / "cache", ignore_errors=True)
    cfg = dict(data_dir=str(data_dir), split_name=Path(args.subset).name, feature_dim=args.feature_dim,
               num_frames=args.num_frames or visual_frames, given_frames=args.num_frames, hidden_dim=args.hidden_dim,
               batch_size=args.batch_size, epochs=args.epochs, device=args.device, scratch=str(scratch),
               extra=args.extra.split(), memory_cap_gb=args.memory_cap_gb)
    if args.startup:
        r = run_phase(startup_phase, cfg)
        print(f"{Path(args.subset).name}: {r['clips']} clips, {r['files']} files, D={args.feature_dim}: "
              f"cold {r['cold_seconds']:.1f} s (hash, pack, write the cache), warm {r['warm_seconds']:.2f} s "
              f"(stat + digest check + memory-map); peak RSS {r['peak_rss_gb']:.2f} GB")
        Path(args.out).write_text(json.dumps(dict(settings=vars(args), startup=r), indent=2))
        return
    results = {}
    if not args.skip_reference:
        results["per-file DataLoader"] = run_phase(reference_phase, cfg)
    results["train_simple cold"] = run_phase(project_phase, dict(cfg, name="cold"))
    results["train_simple warm"] = run_phase(project_phase, dict(cfg, name="warm"))
    table = [summarize(name, r) for name, r in results.items()]
    if "per-file DataLoader" in results:
        base = table[0]["seconds_per_epoch"]
        for row in table:
            row["speedup_vs_per_file"] = round(base / row["seconds_per_epoch"], 2)
    import torch
    machine = torch.cuda.get_device_name() if args.device != "cpu" else f"CPU ({mp.cpu_count()} cores)"
    frames = f"{args.num_frames} frames" if args.num_frames else "train_simple's default frames"
    print(f"\n{Path(args.subset).name}: D={args.feature_dim}, {frames}, hidden {args.hidden_dim}, "
          f"batch {args.batch_size}, {machine}, torch {torch.__version__}")
    columns = list(table[-1])
    print(" | ".join(columns))
    for row in table:
        print(" | ".join(str(row.get(c, "")) for c in columns))
    Path(args.out).write_text(json.dumps(dict(settings=vars(args), machine=machine, torch=torch.__version__,
                                              table=table, raw=results), indent=2))


if __name__ == "__main__":
    main()
