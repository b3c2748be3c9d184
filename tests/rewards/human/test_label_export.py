import pyarrow.parquet as pq
import pytest

from labels_fixture import write_synthetic
from learners.preference_data import load_pairs
from rewards.human.export import export_rows, write_parquet
from rewards.human.store import LabelStore

# votes (x, y, z): p1 AAA p2 AAA p3 AAB p4 AAB p5 ABA p6 BBB p7 BBB p8 BBA p9 B,tie,tie p10 tie,tie,B; p11 one skip


@pytest.fixture
def labels(tmp_path):
    s = LabelStore(tmp_path / "l.sqlite", k=3)
    write_synthetic(s)
    return s.labels()


def test_drop_keeps_unanimous_only(labels):
    rows, dropped = export_rows(labels, "drop")
    assert [(r["id"], r["chosen"], r["rejected"]) for r in rows] == [
        ("p1", "a1", "b1"), ("p2", "a2", "b2"), ("p6", "b6", "a6"), ("p7", "b7", "a7")]
    assert dropped == {"tie_or_disagreement": 6, "too_few_votes": 1}


def test_majority_and_margin(labels):
    rows, dropped = export_rows(labels, "majority")
    assert [r["id"] for r in rows] == [f"p{i}" for i in range(1, 9)]  # p9, p10: no side has > half
    assert dropped == {"tie_or_disagreement": 2, "too_few_votes": 1}
    p3 = rows[2]
    assert (p3["chosen"], p3["n_votes"], p3["agreement"]) == ("a3", 3, pytest.approx(2 / 3))
    assert "margin" not in p3
    m = {r["id"]: r["margin"] for r in export_rows(labels, "margin")[0]}
    assert m["p1"] == 1.0 and m["p3"] == pytest.approx(1 / 3) and m["p8"] == pytest.approx(1 / 3)


def test_min_votes(labels):
    rows, dropped = export_rows(labels, "majority", min_votes=4)
    assert rows == [] and dropped == {"too_few_votes": 11 - 0 - 0}


def test_parquet_loads_in_rm_train_reader(labels, tmp_path):
    rows, _ = export_rows(labels, "margin")
    write_parquet(rows, tmp_path / "prefs.parquet")
    assert pq.read_table(tmp_path / "prefs.parquet").column_names == [
        "id", "prompt", "chosen", "rejected", "n_votes", "agreement", "margin"]
    loaded = load_pairs(tmp_path / "prefs.parquet")
    assert len(loaded.pairs) == 8 and loaded.skipped == 0
    assert (loaded.pairs[2].chosen, loaded.pairs[2].rejected, loaded.pairs[2].margin) == ("a3", "b3", pytest.approx(1 / 3))


def test_unknown_policy():
    with pytest.raises(ValueError, match="drop, majority, margin"):
        export_rows([], "vote")
