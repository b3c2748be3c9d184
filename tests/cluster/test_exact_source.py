"""The `exact` reward source through the real verifier pool on a local Ray cluster: training and
eval routing, knowledge files, data-load checks, config errors, and `threefold verify --knowledge`."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import ray
import yaml

from cluster.config import RewardConfig, SourceConfig
from cluster.config_loader import ConfigError, load_config
from cluster.data import DataError, read_rows
from cluster.reward_router import RewardRouter
from cluster.reward_sources import ExactSource, build_sources

pytestmark = pytest.mark.timeout(300)
ROOT = Path(__file__).resolve().parents[2]
KNOWLEDGE = [{"key": "capital/ru", "answers": ["Москва", "Moscow"]}, {"key": "independence/in", "answers": ["१९४७"]},
             {"key": "capital/jp", "answers": ["東京", "Tokyo"]}]


@pytest.fixture(scope="module")
def cluster():
    # the same local-cluster fixture as test_verifier_pool.py; an already running session cluster is reused
    owned = not ray.is_initialized()
    if owned:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    if owned:
        ray.shutdown()


@pytest.fixture
def knowledge(tmp_path) -> Path:
    path = tmp_path / "facts.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in KNOWLEDGE))
    return path


def rows_and_responses():
    """(row, response, expected status) across scripts, Unicode digits, aliases and keys."""
    return [
        ({"prompt": "Capital of Russia?", "kind": "exact", "key": "capital/ru"}, "Answer: москва.", "passed"),
        ({"prompt": "Capital of Russia?", "kind": "exact", "key": "capital/ru"}, "Answer: Санкт-Петербург", "failed"),
        ({"prompt": "भारत की स्वतंत्रता?", "kind": "exact", "key": "independence/in"}, "उत्तर:\n1947", "passed"),
        ({"prompt": "日本の首都は?", "kind": "exact", "key": "capital/jp"}, "考えます。\n東京。", "passed"),
        ({"prompt": "km in m?", "kind": "exact", "answers": ["3000", "3000 m"]}, "Answer: ٣٬٠٠٠ m", "passed"),
        ({"prompt": "km in m?", "kind": "exact", "answers": "3000"}, "Answer: ３０００", "passed"),
        ({"prompt": "القاهرة؟", "kind": "exact", "answers": ["القاهرة"]}, "Answer: القاهرة", "passed"),
        ({"prompt": "km in m?", "kind": "exact", "answers": ["3000"]}, "   ", "no_answer"),
    ]


def test_exact_source_scores_through_the_verifier_pool(cluster, knowledge):
    reward = RewardConfig(sources=[{"name": "facts", "type": "exact", "knowledge": str(knowledge)}], sandbox_slots=1)
    shared: dict = {}
    sources = build_sources(reward, reward.training_sources(), 0.25, shared)
    try:
        assert isinstance(sources[0], ExactSource) and sources[0].pool is shared["verifiers"]
        router = RewardRouter(sources)
        cases = rows_and_responses()
        rows = [r for r, _, _ in cases]
        assert all(router.row_problem(r) is None for r in rows)
        got = router.score([r["prompt"] for r in rows], [t for _, t, _ in cases], rows, list(range(len(rows))))
        assert got.statuses == [s for _, _, s in cases]
        assert got.rewards == [1.0 if s == "passed" else 0.0 for _, _, s in cases]
        m = got.metrics["facts"]
        assert (m["type"], m["samples"], m["failures"]) == ("exact", len(rows), 0)
        assert m["pass_rate"] == m["statuses"]["passed"] / m["samples"] == 6 / 8  # as code sources count it
        assert router.sizes() == {"verifiers": 1}  # `threefold scale --verifiers` resizes it
        # a key missing from the file at score time (rows are checked at load) is a failure, not a crash
        late = {"prompt": "?", "kind": "exact", "key": "capital/xx"}
        got = router.score(["?"], ["x"], [late], [0])
        assert got.statuses == ["invalid_input"] and got.metrics["facts"]["failures"] == 1
    finally:
        for s in sources:
            s.close()


def test_exact_as_the_eval_source_shares_the_pool(cluster, knowledge):
    reward = RewardConfig(sources=[{"name": "facts", "type": "exact", "knowledge": str(knowledge)}],
                          eval=[{"name": "facts-gold", "type": "exact", "knowledge": str(knowledge)}], sandbox_slots=1)
    shared: dict = {}
    train = build_sources(reward, reward.training_sources(), 0.25, shared)
    held_out = build_sources(reward, reward.eval_sources(), 0.25, shared)
    try:
        assert train[0].pool is held_out[0].pool
        cases = rows_and_responses()
        rows = [r for r, _, _ in cases]
        got = RewardRouter(held_out).score([r["prompt"] for r in rows], [t for _, t, _ in cases], rows,
                                           list(range(len(rows))))
        assert got.metrics["facts-gold"]["mean"] == pytest.approx(6 / 8)  # held-out accuracy
    finally:
        for s in train:
            s.close()


def test_rows_are_checked_at_data_load(tmp_path, knowledge):
    router = RewardRouter([ExactSource(SourceConfig(name="facts", type="exact", knowledge=knowledge), verifiers=None)])
    path = tmp_path / "train.jsonl"
    path.write_text('{"prompt": "a", "kind": "exact", "answers": ["x"]}\n{"prompt": "b", "kind": "exact", "key": "capital/ru"}\n'
                    '{"prompt": "c", "kind": "exact", "key": "capital/de"}\n')
    with pytest.raises(DataError, match=r"train.jsonl:3: source 'facts' \(exact\): key 'capital/de' is not in knowledge file"):
        read_rows(path, check=router.row_problem)
    path.write_text('{"prompt": "a", "kind": "exact"}\n')
    with pytest.raises(DataError, match=r"train.jsonl:1: source 'facts' \(exact\): .*'answers'.*'key'"):
        read_rows(path, check=router.row_problem)
    no_file = RewardRouter([ExactSource(SourceConfig(name="facts", type="exact"), verifiers=None)])
    path.write_text('{"prompt": "a", "kind": "exact", "key": "capital/ru"}\n')
    with pytest.raises(DataError, match=r"train.jsonl:1: .*needs 'knowledge'"):
        read_rows(path, check=no_file.row_problem)
    path.write_text(json.dumps({"prompt": "a", "kind": "exact", "key": "capital/ru", "knowledge": str(knowledge)}) + "\n")
    assert len(read_rows(path, check=no_file.row_problem)) == 1  # a row's own knowledge file


def test_a_bad_knowledge_file_stops_the_source_naming_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"key": "a", "answers": ["x"]}\n{"key": "b"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: 'answers' must be"):
        ExactSource(SourceConfig(name="facts", type="exact", knowledge=bad), verifiers=None)


@pytest.mark.parametrize("source, message", [
    ({"name": "f", "type": "exact", "knowledge": "missing.jsonl"}, "knowledge 'missing.jsonl' does not exist"),
    ({"name": "m", "type": "math", "knowledge": "x.jsonl"}, "knowledge applies to type exact only"),
])
def test_knowledge_config_errors_name_the_key(tmp_path, source, message):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (tmp_path / "d.jsonl").write_text('{"prompt": "q", "kind": "exact", "answers": ["a"]}\n')
    cfg = tmp_path / "run.yaml"
    data = {"train_path": str(tmp_path / "d.jsonl"), "eval_path": str(tmp_path / "d.jsonl")}
    cfg.write_text(yaml.safe_dump({"policy": {"model_dir": str(model)}, "data": data,
                                   "reward": {"sources": [{"name": "facts", "type": "exact"}, source]}}))
    with pytest.raises(ConfigError) as e:
        load_config(cfg)
    assert "reward.sources.1" in str(e.value) and message in str(e.value)
    cfg.write_text(yaml.safe_dump({"policy": {"model_dir": str(model)}, "data": data,
                                   "reward": {"sources": [{"name": "facts", "type": "exact"}]}}))
    loaded = load_config(cfg).reward
    assert [s.type for s in loaded.eval_sources()] == ["exact"]  # eval defaults to the exact source


def test_verify_command_with_knowledge(tmp_path, knowledge):
    rows = [{"id": "key", "kind": "exact", "response": "Answer: Moscow", "key": "capital/ru"},
            {"id": "alias", "kind": "exact", "response": "East of here.\nTokyo", "answers": ["東京", "Tokyo"]},
            {"id": "wrong", "kind": "exact", "response": "Answer: 1948", "key": "independence/in"},
            {"id": "missing", "kind": "exact", "response": "x", "key": "capital/xx"},
            {"id": "empty", "kind": "exact", "response": "", "answers": ["x"]}]
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    cmd = [sys.executable, "-m", "cluster.cli", "verify", str(src), "-o", str(out), "--workers", "1"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{}\n")
    proc = subprocess.run(cmd + ["--knowledge", str(bad)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and f"{bad}:1: field 'key'" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run(cmd + ["--knowledge", str(knowledge)], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = {g["id"]: g for g in map(json.loads, out.read_text().splitlines())}
    assert {k: g["status"] for k, g in got.items()} == {"key": "passed", "alias": "passed", "wrong": "failed",
                                                        "missing": "invalid_input", "empty": "no_answer"}
    assert "'capital/xx'" in got["missing"]["error"] and "facts.jsonl" in got["missing"]["error"]
    assert all(set(g) >= {"reward", "passed", "total", "status", "cases", "elapsed_s"} for g in got.values())
