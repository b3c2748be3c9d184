"""The exact-answer verifier: each normalisation rule, extraction, aliases, knowledge files, and the
`exact` row of rewards/verify.py (no Ray, no sandbox)."""
import json
import os

import pytest

from rewards.exact import KnowledgeError, check_answer, extract_answer, load_knowledge, lookup, normalize
from rewards.exact import normalization as n
from rewards.exact.row import score_row
from rewards.verify import row_problem, verify_row, VerifySettings


@pytest.mark.parametrize("rule, text, want", [
    (n.nfkc, "３０００", "3000"),
    (n.nfkc, "ﬁsh\u00a0tank", "fish tank"),
    (n.ascii_digits, "٣٠٠٠", "3000"),
    (n.ascii_digits, "३०००", "3000"),
    (n.ascii_digits, "৩.৫", "3.5"),  # Bengali
    (n.ascii_digits, "٣٫٥", "3.5"),  # Arabic decimal separator
    (n.ascii_digits, "\u22125", "-5"),  # the Unicode minus sign
    (n.casefold, "Straße PARIS", "strasse paris"),
    (n.join_thousands, "3,000", "3000"),
    (n.join_thousands, "3 000 000 m", "3000000 m"),
    (n.join_thousands, "3_000", "3000"),
    (n.join_thousands, "-1,234.5", "-1234.5"),
    (n.join_thousands, "1,23", "1,23"),  # not a thousands group
    (n.join_thousands, "1,2345", "1,2345"),
    (n.canonical_numbers, "3000.0", "3000"),
    (n.canonical_numbers, "1e3", "1000"),
    (n.canonical_numbers, "2.5e-1 and 0.50", "0.25 and 0.5"),
    (n.canonical_numbers, "-0", "0"),
    (n.canonical_numbers, ".5", "0.5"),
    (n.canonical_numbers, "007", "007"),  # a code, not a number
    (n.canonical_numbers, "1.2.3", "1.2.3"),  # a version, not a number
    (n.canonical_numbers, "h2o", "h2o"),
    (n.canonical_numbers, "1e999999", "1e999999"),  # never spelled out in full
    (n.strip_punctuation, "paris!", "paris "),
    (n.strip_punctuation, "u.s.a.", "usa"),
    (n.strip_punctuation, "don’t", "dont"),
    (n.strip_punctuation, "jean-paul", "jean paul"),
    (n.strip_punctuation, "-3.5 ¿qué?", "-3.5  qué "),
    (n.strip_punctuation, "東京。", "東京 "),
    (n.strip_punctuation, "नई दिल्ली।", "नई दिल्ली "),
    (n.collapse_whitespace, "  new \t york\n", "new york"),
    (n.drop_article, "the nile", "nile"),
    (n.drop_article, "an apple", "apple"),
    (n.drop_article, "a", "a"),
    (n.drop_article, "theodore", "theodore"),
    (n.drop_article, "the the", "the"),  # one article only
])
def test_each_rule(rule, text, want):
    assert rule(text) == want


@pytest.mark.parametrize("a, b", [
    ("3,000", "3000"), ("3 000", "3000"), ("3_000", "3000"), ("3000.0", "3000"), ("1e3", "1000"),
    ("٣٠٠٠", "3000"), ("३०००", "3000"), ("３０００", "3,000"), ("The Nile.", "nile"), ("  PARIS  ", "paris"),
    ("U.S.A.", "USA"), ("−5", "-5"), ("3,000.50", "3000.5"),
])
def test_normalize_equal(a, b):
    assert normalize(a) == normalize(b)


@pytest.mark.parametrize("a, b", [("3000", "300"), ("-5", "5"), ("3.5", "35"), ("paris", "paris france"),
                                  ("007", "7"), ("theodore", "odore")])
def test_normalize_different(a, b):
    assert normalize(a) != normalize(b)


@pytest.mark.parametrize("response, want", [
    ("Paris", "Paris"),
    ("Let me think.\nThe capital is big.\nAnswer: Paris\nI am sure.", "Paris"),
    ("Answer: Lyon\nwait, no.\nAnswer: Paris", "Paris"),  # the last Answer line wins
    ("**Answer:** Paris", "Paris"),
    ("final answer: 42", "42"),
    ("ANSWER：東京", "東京"),
    ("Answer:\nParis", "Paris"),  # an empty Answer line does not count
    ("It is Paris\n\n---\n", "It is Paris"),  # trailing lines without text are skipped
    ("The answer is Paris", "The answer is Paris"),  # only an `Answer:` line is special
])
def test_extraction(response, want):
    assert extract_answer(response) == want


@pytest.mark.parametrize("response", ["", "   \n\t", "...", "?!\n—\n", "Answer: ..."])
def test_no_answer(response):
    assert extract_answer(response) is None
    got = check_answer(response, ["Paris"])
    assert (got.score, got.status) == (0.0, "no_answer")


def test_any_alias_matches_and_one_string_is_one_alias():
    aliases = ["Leonardo da Vinci", "da Vinci", "Leonardo"]
    for response in ("Answer: da vinci", "Leonardo.", "answer: LEONARDO DA VINCI!"):
        got = check_answer(response, aliases)
        assert (got.score, got.status) == (1.0, "passed"), response
    assert check_answer("Answer: da vinci", aliases).detail["matched"] == "da Vinci"
    got = check_answer("Answer: Michelangelo", aliases)
    assert (got.score, got.status, got.detail["matched"]) == (0.0, "failed", None)
    assert check_answer("Answer: the Nile", "Nile").status == "passed"


def write_jsonl(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in records))
    return path


KNOWLEDGE = [{"key": "capital/fr", "answers": ["Paris"]}, {"key": "boiling/c", "answers": ["100", "100 °C"]},
             {"key": "ru", "answers": "Москва"}]


def test_knowledge_jsonl(tmp_path):
    path = write_jsonl(tmp_path / "k.jsonl", KNOWLEDGE)
    assert lookup("capital/fr", path) == ["Paris"]
    assert lookup("ru", path) == ["Москва"]
    row = {"response": "Answer: 100.0", "key": "boiling/c", "knowledge": str(path)}
    assert score_row(row).status == "passed"


def test_knowledge_parquet(tmp_path):
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "k.parquet"
    pq.write_table(pa.table({"key": ["capital/fr", "boiling/c"], "answers": [["Paris"], ["100", "100 °C"]]}), path)
    assert lookup("boiling/c", path) == ["100", "100 °C"]
    assert score_row({"response": "Paris", "key": "capital/fr", "knowledge": str(path)}).status == "passed"
    pq.write_table(pa.table({"key": ["a", "b"], "answers": [["x"], []]}), path)
    with pytest.raises(KnowledgeError, match=r"k.parquet: row 1: 'answers' must be a non-empty list"):
        load_knowledge(path)


def test_knowledge_is_cached_by_path_and_mtime(tmp_path):
    path = write_jsonl(tmp_path / "k.jsonl", KNOWLEDGE)
    assert load_knowledge(path) is load_knowledge(str(path))
    write_jsonl(path, [{"key": "capital/fr", "answers": ["Paris", "Paname"]}])
    os.utime(path, ns=(1, 1))  # a new mtime even on a coarse clock
    assert lookup("capital/fr", path) == ["Paris", "Paname"]


def test_missing_key_is_invalid_input_naming_key_and_file(tmp_path):
    path = write_jsonl(tmp_path / "k.jsonl", KNOWLEDGE)
    got = score_row({"response": "Paris", "key": "capital/de", "knowledge": str(path)})
    assert got.status == "invalid_input"
    assert "'capital/de'" in got.detail["error"] and str(path) in got.detail["error"]


@pytest.mark.parametrize("line, message", [
    ("not json", "not valid JSON"),
    ('{"answers": ["x"]}', "field 'key' must be a non-empty string"),
    ('{"key": "k", "answers": 3}', "'answers' must be a non-empty list of strings"),
    ('{"key": "k", "answers": ["?"]}', "empty after normalisation"),
    ('{"key": "capital/fr", "answers": ["x"]}', "key 'capital/fr' appears twice"),
    ('[1, 2]', "a record must be an object"),
])
def test_bad_knowledge_file_names_file_and_line(tmp_path, line, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [KNOWLEDGE[0], "", line])
    with pytest.raises(KnowledgeError) as e:
        load_knowledge(path)
    assert f"{path}:3: " in str(e.value) and message in str(e.value)
    got = score_row({"response": "Paris", "key": "capital/fr", "knowledge": str(path)})
    assert got.status == "invalid_input" and f"{path}:3" in got.detail["error"]


def test_missing_knowledge_file(tmp_path):
    with pytest.raises(KnowledgeError, match="cannot read knowledge file"):
        load_knowledge(tmp_path / "nope.jsonl")


@pytest.mark.parametrize("row, field", [
    ({"kind": "exact", "answers": ["x"]}, "'response'"),
    ({"kind": "exact", "response": "x"}, "'answers'"),
    ({"kind": "exact", "response": "x", "answers": ["x"], "key": "k", "knowledge": "k.jsonl"}, "exactly one of"),
    ({"kind": "exact", "response": "x", "answers": []}, "'answers'"),
    ({"kind": "exact", "response": "x", "answers": [1]}, "'answers'"),
    ({"kind": "exact", "response": "x", "key": 5, "knowledge": "k.jsonl"}, "'key'"),
    ({"kind": "exact", "response": "x", "key": "k"}, "'knowledge'"),
    ({"kind": "nope"}, "'exact'"),
])
def test_row_problem_names_the_field(row, field):
    assert field in row_problem(row)


def test_verify_row_record_has_the_common_fields(tmp_path):
    settings = VerifySettings()
    got = verify_row({"id": 7, "kind": "exact", "response": "Answer: 3 000", "answers": ["3000"]}, None, None, settings)
    assert set(got) == {"id", "reward", "passed", "total", "status", "cases", "elapsed_s"}
    assert (got["id"], got["reward"], got["passed"], got["total"], got["status"]) == (7, 1.0, 1, 1, "passed")
    assert got["cases"][0]["extracted"] == "3 000"
    got = verify_row({"id": 8, "kind": "exact", "response": " ", "answers": "x"}, None, None, settings)
    assert (got["reward"], got["passed"], got["status"]) == (0.0, 0, "no_answer")
    got = verify_row({"id": 9, "kind": "exact", "response": "x", "key": "k", "knowledge": str(tmp_path / "no.jsonl")},
                     None, None, settings)
    assert got["status"] == "invalid_input" and "no.jsonl" in got["error"]


MULTILINGUAL = [  # (accepted answers, response, passes)
    (["Москва"], "Ответ дан ниже.\nAnswer: МОСКВА.", True),  # Cyrillic, case-folded
    (["3000 рублей"], "Answer: 3 000 рублей", True),
    (["नई दिल्ली"], "उत्तर:\nनई दिल्ली।", True),  # Devanagari with the danda
    (["१९४७"], "Answer: 1947", True),  # Devanagari digits in the gold
    (["1947"], "Answer: १,९४७", True),
    (["東京", "Tokyo"], "答えは次の通り。\n東京。", True),  # CJK punctuation
    (["３０００メートル"], "Answer: 3,000メートル", True),  # fullwidth digits
    (["القاهرة"], "Answer: القاهرة", True),  # Arabic
    (["3000"], "Answer: ٣٬٠٠٠", True),  # Arabic-Indic digits and thousands separator
    (["2.5"], "Answer: ٢٫٥", True),
    (["Москва"], "Answer: Санкт-Петербург", False),
    (["東京"], "Answer: 京都", False),
    (["१९४७"], "Answer: 1948", False),
]


@pytest.mark.parametrize("answers, response, passes", MULTILINGUAL)
def test_multilingual(answers, response, passes):
    got = check_answer(response, answers)
    assert got.status == ("passed" if passes else "failed"), got.detail


ACCEPTED = ["7000", "7000 m", "7000 metres", "7,000", "7,000 m"]


@pytest.mark.parametrize("cheat", [
    "7000 or 7001",                        # hedging on one line
    "7000/7001",                           # punctuation between two guesses
    "Answer: 7000\nAnswer: 7001",          # the right guess, then another one
    "7000\n7001",                          # the right guess on a non-final line
    "Answer: 7000 m, or maybe 7000 km",    # a right answer buried in more text
    "Answer: 7000 m 7000 metres 7,000",    # every alias at once
    "m",                                   # only the unit the aliases share
    "7000 " + "x" * 300_000,               # a huge reply is scored (its tail) and earns nothing
])
def test_gaming_the_extraction_earns_nothing(cheat):
    got = check_answer(cheat, ACCEPTED)
    assert (got.score, got.status) == (0.0, "failed"), (cheat[:60], got)


@pytest.mark.parametrize("honest", ["7000", "Answer: 7,000 m", "7 km is 7 × 1000 m.\nAnswer: 7000 metres",
                                    "The answer is below.\n7000 m"])
def test_honest_answers_pass_beside_the_cheats(honest):
    got = check_answer(honest, ACCEPTED)
    assert (got.score, got.status) == (1.0, "passed"), (honest, got)
