import random
import sqlite3

import pytest

from rewards.human.store import LabelStore, LabelStoreError, token_hash


def pairs(n):
    return [{"id": f"p{i}", "prompt": f"q{i}", "response_a": f"a{i}", "response_b": f"b{i}"} for i in range(n)]


@pytest.fixture
def store(tmp_path):
    s = LabelStore(tmp_path / "labels.sqlite", k=2)
    s.add_pairs(pairs(3))
    return s


def test_token_is_stored_only_as_hash(store, tmp_path):
    token = store.add_annotator("ann")
    assert store.annotator(token) == "ann"
    assert store.annotator("wrong") is None and store.annotator("") is None
    raw = (tmp_path / "labels.sqlite").read_bytes() + (tmp_path / "labels.sqlite-wal").read_bytes()
    assert token.encode() not in raw
    assert token_hash(token).encode() in raw
    with pytest.raises(LabelStoreError, match="already exists"):
        store.add_annotator("ann")


def test_pair_until_k_labels_never_twice(store):
    rng = random.Random(0)
    seen = {}
    for name in ("u1", "u2", "u3"):
        seen[name] = []
        while (p := store.next_pair(name, rng)) is not None:
            seen[name].append(p["id"])
            store.record(name, p["id"], "left")
    # k = 2: u1 and u2 label all three pairs, u3 gets none; nobody sees a pair twice
    assert seen == {"u1": ["p0", "p1", "p2"], "u2": ["p0", "p1", "p2"], "u3": []}
    assert store.progress("u1") == {"labelled": 3, "remaining": 0}


def test_skip_does_not_count_towards_k(store):
    p = store.next_pair("u1")
    store.record("u1", p["id"], "skip")
    assert store.next_pair("u1")["id"] == "p1"  # u1 never sees p0 again
    for name in ("u2", "u3"):
        q = store.next_pair(name)
        assert q["id"] == "p0"  # the skip left p0 with 0 of 2 labels
        store.record(name, q["id"], "tie")
    assert store.next_pair("u4")["id"] == "p1"


def test_left_right_order_maps_to_ab_and_is_recorded(store):
    p = store.next_pair("u1", random.Random(1))
    expect = p["left"]
    assert p["left_text"] == {"A": "a0", "B": "b0"}[expect]
    assert store.record("u1", "p0", "left", "clearer") == expect
    (row,) = store.labels()
    assert (row["choice"], row["left"], row["reason"]) == (expect, expect, "clearer")


def test_assignment_survives_restart_and_labels_persist(store, tmp_path):
    p = store.next_pair("u1")
    store.record("u1", p["id"], "right")
    q = store.next_pair("u1")
    store.close()
    again = LabelStore(tmp_path / "labels.sqlite")
    assert again.k == 2
    assert again.next_pair("u1") == q  # same pair, same left/right order
    assert [r["pair_id"] for r in again.labels()] == ["p0"]
    assert again.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_record_refuses_unassigned_pair_and_bad_choice(store):
    with pytest.raises(LabelStoreError, match="not the pair assigned"):
        store.record("u1", "p0", "left")
    store.next_pair("u1")
    with pytest.raises(LabelStoreError, match="left, right, tie or skip"):
        store.record("u1", "p0", "A")
    store.record("u1", "p0", "tie")
    with pytest.raises(LabelStoreError):
        store.record("u1", "p0", "tie")  # no second label on the same pair
    with pytest.raises(sqlite3.IntegrityError):
        with store._tx() as db:
            db.execute("INSERT INTO labels VALUES ('p0', 'u1', 'A', 'A', '', 0)")
