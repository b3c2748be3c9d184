"""`threefold judge`: JSONL in, verdicts + Parquet preference pairs out, against a test-double server;
per-row errors naming the line; config errors naming file, line and key; the API key never leaks."""
import argparse
import json
import logging

import pyarrow.parquet as pq
import pytest

from cluster import judge_cmd
from tests.doubles.openai_double import OpenAIDouble, Reply, by_model
from tests.doubles.judge_helpers import prefers

SECRET = "sk-test-Zq8VdW3rT1pLmN0x"
SCRIPTS: dict = {}


@pytest.fixture(scope="module")
def srv():
    with OpenAIDouble(by_model(SCRIPTS)) as server:
        yield server


def judge(*argv) -> int:
    parser = argparse.ArgumentParser(prog="threefold")
    judge_cmd.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["judge", *map(str, argv)])
    return args.fn(args)


def write_judges(path, base_url, *judges, **top):
    doc = {"judges": [{"base_url": base_url, **j} for j in judges],
           "retry": {"max_retries": 1, "backoff_base_s": 0.01}, **top}
    path.write_text(json.dumps(doc))  # JSON is YAML
    return path


ROWS = [
    {"id": "r1", "prompt": "2+2?", "response_a": "4, right", "response_b": "5"},
    {"id": 2, "prompt": "capital of France?", "response_a": "Lyon", "response_b": "Paris, right"},
    "this line is not JSON",
    {"id": "r4", "prompt": "x", "response_a": "y"},
    {"id": "r5", "prompt": 7, "response_a": "y", "response_b": "z"},
    {"id": "r6", "prompt": "tie?", "response_a": "same", "response_b": "same"},
]


def write_rows(path, rows=ROWS):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n\n")
    return path


def test_verdicts_pairs_and_per_row_errors(srv, tmp_path, capsys):
    SCRIPTS["cli-right"] = prefers("right")
    judges = write_judges(tmp_path / "judges.yaml", srv.base_url, {"model": "cli-right", "price_per_1k_tokens": 1.0})
    src = write_rows(tmp_path / "in.jsonl")
    out, parquet, metrics = tmp_path / "out.jsonl", tmp_path / "pairs.parquet", tmp_path / "m.json"
    assert judge(src, "-o", out, "--judges", judges, "--pairs", parquet, "--metrics", metrics) == 0
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in recs] == ["r1", 2, None, "r4", "r5", "r6"]
    assert [r["winner"] for r in recs] == ["A", "B", "abstain", "abstain", "abstain", "tie"]
    assert [r.get("error") for r in recs[2:5]] == [
        f"{src}:3: not valid JSON (Expecting value)",
        f"{src}:4: missing key(s) 'response_b'",
        f"{src}:5: 'prompt' must be a string, got int"]
    assert recs[0]["p_a"] == 1.0 and recs[1]["p_a"] == 0.0 and recs[5]["p_a"] == 0.5
    assert recs[0]["votes"][0]["judge"] == "cli-right" and recs[0]["votes"][0]["ab"] == "A"
    table = pq.read_table(parquet).to_pylist()
    assert table == [{"id": "r1", "prompt": "2+2?", "chosen": "4, right", "rejected": "5", "p_chosen": 1.0},
                     {"id": "2", "prompt": "capital of France?", "chosen": "Paris, right", "rejected": "Lyon",
                      "p_chosen": 1.0}]
    m = json.loads(metrics.read_text())["cli-right"]
    assert m["calls"] == 6 and m["error_rate"] == 0.0
    assert m["cost"] == pytest.approx(m["prompt_tokens"] / 1000 + m["completion_tokens"] / 1000, rel=1e-12)
    err = capsys.readouterr().err
    assert f"bad row: {src}:4: missing key(s) 'response_b'" in err
    assert "judged 3 rows (A 1, B 1, tie 1, abstain 0); 3 bad rows" in err


def test_config_errors_name_file_line_and_key(tmp_path, capsys):
    bad = tmp_path / "judges.yaml"
    bad.write_text("voting: majority\njudges:\n  - base_url: http://127.0.0.1:9/v1\n    model: m\n    temprature: 0.5\n")
    src = write_rows(tmp_path / "in.jsonl", ROWS[:1])
    assert judge(src, "-o", tmp_path / "o.jsonl", "--judges", bad) == 2
    err = capsys.readouterr().err
    assert f"{bad}:5: judges.0.temprature: unknown key; allowed here: name, base_url, serve, model," in err
    assert not (tmp_path / "o.jsonl").exists()
    assert judge(tmp_path / "missing.jsonl", "-o", tmp_path / "o.jsonl", "--judges", bad) == 2


def test_missing_key_variable_stops_before_sending(srv, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("THREEFOLD_TEST_NO_SUCH_KEY", raising=False)
    SCRIPTS["cli-keyless"] = prefers("right")
    judges = write_judges(tmp_path / "j.yaml", srv.base_url, {"model": "cli-keyless", "api_key_env": "THREEFOLD_TEST_NO_SUCH_KEY"})
    src = write_rows(tmp_path / "in.jsonl", ROWS[:2])
    assert judge(src, "-o", tmp_path / "o.jsonl", "--judges", judges) == 2
    assert "environment variable THREEFOLD_TEST_NO_SUCH_KEY (api_key_env) is not set" in capsys.readouterr().err
    assert srv.seen_by("cli-keyless") == []


def test_api_key_never_appears_in_output_errors_or_logs(srv, tmp_path, monkeypatch, capsys, caplog):
    monkeypatch.setenv("THREEFOLD_TEST_KEY", SECRET)
    # A careless server that echoes the Authorization header back in its error body.
    SCRIPTS["cli-echo"] = lambda seen: Reply(f"bad credentials: {seen.headers.get('Authorization')}", status=401)
    SCRIPTS["cli-keyed"] = prefers("right")
    judges = write_judges(tmp_path / "j.yaml", srv.base_url, {"model": "cli-echo", "api_key_env": "THREEFOLD_TEST_KEY"},
                          {"model": "cli-keyed", "api_key_env": "THREEFOLD_TEST_KEY"})
    src = write_rows(tmp_path / "in.jsonl", ROWS[:2])
    out, metrics = tmp_path / "o.jsonl", tmp_path / "m.json"
    caplog.set_level(logging.DEBUG)
    assert judge(src, "-o", out, "--judges", judges, "--metrics", metrics) == 0
    assert {s.headers["Authorization"] for s in srv.seen_by("cli-keyed")} == {f"Bearer {SECRET}"}
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    echo_vote = recs[0]["votes"][0]
    assert echo_vote["winner"] == "abstain" and "HTTP 401" in echo_vote["reason"] and "Bearer ***" in echo_vote["reason"]
    assert [r["winner"] for r in recs] == ["A", "B"]  # the other judge still decides
    captured = capsys.readouterr()
    for where, text in {"output": out.read_text(), "metrics": metrics.read_text(), "stdout": captured.out,
                        "stderr": captured.err, "logs": caplog.text}.items():
        assert SECRET not in text, where
        assert SECRET[:12] not in text, where


def test_example_config_is_valid():
    cfg = judge_cmd.load_judges(judge_cmd.Path(__file__).resolve().parents[2] / "configs/judges-example.yaml")
    assert [j.name for j in cfg.judges] == ["gpt-4o-mini", "local-qwen"]
    assert cfg.judges[0].api_key_env == "OPENAI_API_KEY" and cfg.judges[1].api_key_env is None
    assert cfg.judges[0].cost(1000, 1000) == pytest.approx(0.00015 + 0.0006, rel=1e-12)
    assert (cfg.voting, cfg.pool.size, cfg.retry.max_retries, cfg.circuit_breaker.failure_threshold) == ("majority", 2, 3, 5)


@pytest.mark.parametrize("judge, message", [
    ({"model": "m"}, "give a judge either base_url"),
    ({"model": "m", "base_url": "http://x/v1", "serve": {"model_dir": "."}}, "not both"),
    ({"model": "m", "serve": {"model_dir": ".", "max_model_len": 2}}, "max_model_len"),
])
def test_a_judge_has_one_endpoint(tmp_path, judge, message):
    import yaml

    from cluster.judge_cmd import JudgesConfigError, load_judges

    path = tmp_path / "judges.yaml"
    path.write_text(yaml.safe_dump({"judges": [judge]}))
    with pytest.raises(JudgesConfigError, match=message):
        load_judges(path)


def test_a_served_judge_without_its_url_is_refused_not_sent_to_a_default_endpoint(tmp_path):
    from rewards.judge.client import JudgeClient
    from rewards.judge.config import EnsembleConfig

    cfg = EnsembleConfig.model_validate({"judges": [{"model": "m", "serve": {"model_dir": str(tmp_path)}}]})
    with pytest.raises(ValueError, match="served by the run"):
        JudgeClient(cfg.judges[0], cfg.retry, cfg.circuit_breaker)
