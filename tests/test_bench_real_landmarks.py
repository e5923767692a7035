"""The real-signer benchmark's splits and its verdict rule (bench_real_landmarks.py; the runs themselves are a
benchmark, not a test)."""
import numpy as np
import pytest

from benchmarks import bench_real_landmarks as bench


def test_budget_split_gives_every_class_the_same_budget():
    labels = np.repeat(np.arange(5), [30, 20, 13, 40, 12])
    subset = bench.budget_split(labels, 8, 4, seed=1)
    for c in range(5):
        mine = subset[labels == c]
        assert (mine == "train").sum() == 8 and (mine == "val").sum() == 4
        assert (mine == "test").sum() == (labels == c).sum() - 12
    assert (subset == bench.budget_split(labels, 8, 4, seed=1)).all()          # seeded
    assert (subset != bench.budget_split(labels, 8, 4, seed=2)).any()          # another split seed, another split


def test_stratified_split_keeps_every_class_in_every_split():
    labels = np.repeat(np.arange(3), [100, 7, 3])
    subset = bench.stratified_split(labels, (0.7, 0.15, 0.15), seed=0)
    for c in range(3):
        assert {"train", "val", "test"} <= set(subset[labels == c])
    assert (subset[labels == 0] == "train").sum() == 70


def _result(model_by_split, ridge_by_split):
    runs = [{"split_seed": k, "test_top1": t} for k, ts in model_by_split.items() for t in ts]
    return {"splits": {str(k): {"baseline": {"ridge_normalized": {"test_top1": r}}} for k, r in ridge_by_split.items()},
            "models": {"default": {"runs": runs}}}


def test_clearly_above_needs_every_split_and_two_standard_errors():
    ridge = {1: 0.80, 2: 0.82, 3: 0.78}
    v = bench.compare_with_ridge(_result({1: [0.90, 0.92], 2: [0.93, 0.91], 3: [0.88, 0.90]}, ridge), "default")
    assert v["clearly_above"] and v["splits_above"] == 3 and v["diff_mean"] == pytest.approx((0.11 + 0.10 + 0.11) / 3)
    v = bench.compare_with_ridge(_result({1: [0.90, 0.92], 2: [0.93, 0.91], 3: [0.70, 0.72]}, ridge), "default")
    assert not v["clearly_above"] and v["splits_above"] == 2          # below on one split
    v = bench.compare_with_ridge(_result({1: [0.95], 2: [0.83], 3: [0.79]}, ridge), "default")
    assert v["splits_above"] == 3 and not v["clearly_above"]          # above everywhere, but within the noise


def test_every_protocol_candidate_is_a_valid_command_line():
    """A pre-registered candidate with a misspelled or out-of-range flag would only fail on the GPU machine, after its
    data was written: every candidate of every protocol parses with train_simple's own parser."""
    from helpers import train_script
    parser = train_script()["build_parser"]()
    tables = [bench.P4_CANDIDATES] + [protocol[0] for protocol in bench.LATER_PROTOCOLS.values()]
    for candidates in tables:
        for name, flags in candidates.items():
            args = parser.parse_args(["--subset", "split.json", *bench.P4_FLAGS, *flags])
            assert args.modality == "landmarks", name
    assert vars(parser.parse_args(["--subset", "s.json", *bench.P6_CANDIDATES["h768"]]))["hidden_dim"] == 768
    assert vars(parser.parse_args(["--subset", "s.json", *bench.P7_CANDIDATES["ens3"]]))["ensemble"] == 3


def test_a_protocol_without_an_adopted_candidate_runs_no_claim(tmp_path, monkeypatch, capsys):
    """Test is looked at only for an adopted recipe: a claim stage before adoption stops with one line, before any
    data is read (the pack is never opened)."""
    for n, (_, adopted, _) in bench.LATER_PROTOCOLS.items():
        if adopted is not None:
            continue
        monkeypatch.setattr("sys.argv", ["bench_real_landmarks.py", f"--protocol{n}", "claim", "--out", str(tmp_path),
                                         "--union_file", str(tmp_path / "absent.npz")])
        with pytest.raises(SystemExit, match=f"Protocol {n} adopted no candidate"):
            bench.main()


def test_k_all_takes_every_training_clip_and_refuses_a_pack_that_stops_at_k10(tmp_path):
    """--ks all (the ceiling diagnostic) trains on every ranked clip, keeps val and test, and refuses a pack written
    without --pack_every_train_clip, which would silently give k = 10."""
    assert bench.k_value("all") == bench.K_ALL and bench.k_value("5") == 5 and bench.k_name(bench.K_ALL) == "all"
    with pytest.raises(Exception, match="use one of 3, 5, 10 or all"):
        bench.k_value("7")
    subset = np.array(["val", "test", "", "", ""], dtype=object)
    rank = np.array([-1, -1, 0, 11, 40])
    assert list(bench.k_subset(subset, rank, 10)) == ["val", "test", "train", None, None]
    assert list(bench.k_subset(subset, rank, bench.K_ALL)) == ["val", "test", "train", "train", "train"]

    old = tmp_path / "k10.npz"
    np.savez(old, frames=np.zeros((2, 162), np.float16), lengths=np.array([1, 1]), offsets=np.array([0, 1]),
             labels=np.array([0, 1]), classes=np.array(["a:x", "b:y"]), set_of=np.array(["a", "b"]),
             split_seeds=np.array([1]), subset_1=np.array(["val", "test"]), rank_1=np.array([-1, -1]))
    assert len(bench.protocol4_data(str(old))[0]) == 2                  # fine for k = 3, 5, 10
    with pytest.raises(SystemExit, match="--pack_every_train_clip"):
        bench.protocol4_data(str(old), every_train_clip=True)
    np.savez(tmp_path / "all.npz", **dict(np.load(old)), every_train_clip=np.array(True))
    assert len(bench.protocol4_data(str(tmp_path / "all.npz"), every_train_clip=True)[0]) == 2


def _right_handed_clip(rng, frames=20):
    """Raw landmarks (T, 162) with pose points and the right hand seen, the left hand undetected (zeros)."""
    clip = np.zeros((frames, 162), np.float32)
    clip[:, 63:126] = 0.4 + 0.01 * rng.standard_normal((frames, 63))     # right hand
    pose = 0.5 + 0.1 * np.random.default_rng(1).standard_normal(36)     # pose 11..22: one body, a little jitter
    clip[:, 126:] = pose + 0.005 * rng.standard_normal((frames, 36))
    return clip


def test_ridge_on_the_model_channels_sees_a_left_handed_clip_as_its_mirror(tmp_path, monkeypatch):
    """--ridge_channels fits the ridge on the 641 channels the defaults feed the model: a left-handed clip (the mirror
    image of a right-handed one) pools to the right-handed clip's features there, not on the baseline's 453. So with
    right-handed training clips and left-handed val clips, only the model's channels recognize val."""
    import json

    import torch
    from hybrid_asl.landmarks import mirror_landmarks

    def mirrored(clip):
        return mirror_landmarks(torch.from_numpy(clip)[None], torch.ones(1, len(clip), dtype=torch.bool))[0].numpy()

    rng = np.random.default_rng(0)
    right = _right_handed_clip(rng)
    left = mirrored(right)
    assert left[:, :63].any() and not left[:, 63:126].any()              # now the left hand signs
    base = bench.pooled_features([right, left], 16, True)
    model = bench.pooled_features([right, left], 16, True, model_channels=True)
    assert base.shape == (2, 2 * 453) and model.shape == (2, 2 * 641)
    assert not np.allclose(base[0], base[1], atol=1e-3)
    np.testing.assert_allclose(model[0], model[1], atol=1e-4)

    # 3 classes, each moving 7 points of the signing hand its own way; per class 2 val clips signed left-handed,
    # 2 test and 4 ranked training clips right-handed; 2 splits that rank the training clips differently
    seqs, labels, subset = [], [], []
    for c in range(3):
        for i in range(8):
            clip = _right_handed_clip(rng)
            clip[:, 63 + 21 * c:84 + 21 * c] += 0.1
            seqs.append(mirrored(clip) if i < 2 else clip)
            labels.append(c)
            subset.append(("val", "val", "test", "test", "", "", "", "")[i])
    rank = np.array([-1, -1, -1, -1, 0, 1, 2, 3] * 3)
    lengths = np.array([len(s) for s in seqs])
    pack = tmp_path / "pack.npz"
    np.savez(pack, frames=np.concatenate(seqs).astype(np.float16), lengths=lengths,
             offsets=np.concatenate([[0], np.cumsum(lengths)[:-1]]), labels=np.array(labels),
             classes=np.array(["s:a", "s:b", "s:c"]), set_of=np.array(["s"] * len(seqs)),
             split_seeds=np.array([7, 8]), subset_7=np.array(subset), subset_8=np.array(subset), rank_7=rank,
             rank_8=np.where(rank >= 0, 3 - rank, -1))
    monkeypatch.setattr("sys.argv", ["bench_real_landmarks.py", "--ridge_channels", "--ks", "3",
                                     "--union_file", str(pack), "--out", str(tmp_path / "out")])
    assert bench.main() == 0
    results = json.loads((tmp_path / "out" / "ridge_channels.json").read_text())
    assert set(results) == {"k3/baseline (453)", "k3/model (641)"}
    assert results["k3/model (641)"]["val_top1"] == {"7": 1.0, "8": 1.0}
    assert results["k3/baseline (453)"]["mean"] < 0.7
    assert "| 3 | model (641) | 1.000 / 1.000 | 1.000 |" in (tmp_path / "out" / "ridge_channels.md").read_text()
