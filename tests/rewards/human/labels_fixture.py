"""Synthetic labels with agreement worked out by hand (used by the agreement and advisor tests)."""
import time

# pair i (1..10): choice of annotators x, y, z in the pair's A/B terms
X = "A A A A A B B B B tie".split()
Y = "A A A A B B B B tie tie".split()
Z = "A A B B A B B A tie B".split()
LEFT = {"x": "A", "y": "A", "z": "B"}  # which response each annotator saw on the left (all pairs)


def write_synthetic(store) -> None:
    """Pairs p1..p11; x, y, z label p1..p10 as above, x also skips p11 (skips count nowhere)."""
    store.add_pairs([{"id": f"p{i}", "prompt": f"prompt {i}", "response_a": f"a{i}", "response_b": f"b{i}"}
                     for i in range(1, 12)])
    rows = [(f"p{i + 1}", name, choice, LEFT[name], "", time.time())
            for name, choices in (("x", X), ("y", Y), ("z", Z)) for i, choice in enumerate(choices)]
    rows.append(("p11", "x", "skip", "A", "", time.time()))
    with store._tx() as db:
        db.executemany("INSERT INTO labels VALUES (?, ?, ?, ?, ?, ?)", rows)
