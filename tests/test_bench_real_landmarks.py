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
