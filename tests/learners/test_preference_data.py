"""Preference pairs from JSONL and Parquet: good rows load, a bad row names its line/row and field."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from learners.preference_data import PreferenceDataError, PreferencePair, load_pairs

GOOD = {"prompt": "2+2=", "chosen": "4", "rejected": "5"}


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_jsonl_with_optional_margin(tmp_path):
    got = load_pairs(write_jsonl(tmp_path / "p.jsonl", [GOOD, {**GOOD, "margin": 1.5, "extra": 1}]))
    assert got.pairs == [PreferencePair("2+2=", "4", "5", 0.0), PreferencePair("2+2=", "4", "5", 1.5)]
    assert got.skipped == 0


@pytest.mark.parametrize("bad, message", [
    ({"prompt": "2+2=", "chosen": "4"}, "field 'rejected' is missing"),
    ({**GOOD, "chosen": 4}, "field 'chosen' must be a string, got int"),
    ({**GOOD, "rejected": "4"}, "identical"),
    ({**GOOD, "margin": "big"}, "field 'margin' must be a finite number"),
    ({**GOOD, "margin": float("nan")}, "field 'margin' must be a finite number"),
    ('{"prompt": ', "not valid JSON"),
    ([1, 2], "row must be an object"),
])
def test_bad_jsonl_row_names_line_and_field(tmp_path, bad, message):
    path = write_jsonl(tmp_path / "p.jsonl", [GOOD, "", GOOD, bad])
    with pytest.raises(PreferenceDataError) as e:
        load_pairs(path)
    assert f"{path}:4: " in str(e.value) and message in str(e.value) and "on_bad_row: skip" in str(e.value)


def test_skip_counts_bad_rows_and_keeps_the_rest(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [GOOD, {"prompt": "x"}, "nope", {**GOOD, "chosen": "3"}])
    got = load_pairs(path, on_bad_row="skip")
    assert [p.chosen for p in got.pairs] == ["4", "3"] and got.skipped == 2
    assert got.first_problem == f"{path}:2: field 'chosen' is missing"


def test_only_bad_rows_is_an_error_even_when_skipping(tmp_path):
    with pytest.raises(PreferenceDataError, match="no usable preference pairs .2 skipped"):
        load_pairs(write_jsonl(tmp_path / "p.jsonl", ["{", {"prompt": 1}]), on_bad_row="skip")


def test_parquet_bad_row_names_its_index(tmp_path):
    table = pa.table({"prompt": ["a", "b", "c"], "chosen": ["x", None, "z"], "rejected": ["y", "y", "w"]})
    pq.write_table(table, tmp_path / "p.parquet")
    with pytest.raises(PreferenceDataError, match=r"p.parquet: row 1: field 'chosen' is missing"):
        load_pairs(tmp_path / "p.parquet")
    assert len(load_pairs(tmp_path / "p.parquet", on_bad_row="skip").pairs) == 2


def test_judge_pairs_parquet_loads_as_is(tmp_path):
    from cluster.judge_cmd import write_pairs

    write_pairs(str(tmp_path / "pairs.parquet"), [("r1", "Q?", "good", "bad", 0.9), ("r2", "Q2?", "yes", "no", 0.7)])
    got = load_pairs(tmp_path / "pairs.parquet")
    assert got.pairs == [PreferencePair("Q?", "good", "bad"), PreferencePair("Q2?", "yes", "no")]


def test_missing_file_is_named(tmp_path):
    with pytest.raises(PreferenceDataError, match="does not exist"):
        load_pairs(tmp_path / "nope.jsonl")
