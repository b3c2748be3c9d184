"""The reward router with real rule sources (plain Python functions, no Ray): routing by kind,
weighted sums, failure policies, per-source metrics, and the config forms."""
import pytest

from cluster.config import RewardConfig, SourceConfig
from cluster.config_loader import ConfigError, load_config
from cluster.data import DataError, read_rows
from cluster.reward_router import RewardRouter
from cluster.reward_sources import RuleSource


def length(prompt, response, row):
    return float(len(response))


def digits(prompt, response, row):
    if response == "boom":
        raise ValueError("this sample breaks the rule")
    return float(sum(ch.isdigit() for ch in response))


def rule(name, fn, kinds=("*",), weight=1.0, **kw):
    return RuleSource(SourceConfig(name=name, type="rule", function=f"{__name__}:{fn}", kinds=list(kinds),
                                   weight=weight, **kw))


ROWS = [{"prompt": "p", "kind": "a"}, {"prompt": "p", "kind": "b"}, {"prompt": "p", "kind": "a"}, {"prompt": "p"}]
TEXTS = ["12", "abc", "x1y2z3", "7"]


def route(router, texts=TEXTS, rows=ROWS):
    return router.score([r["prompt"] for r in rows], texts, rows, list(range(len(rows))))


def test_each_row_goes_to_the_sources_of_its_kind():
    router = RewardRouter([rule("len", "length", kinds=["a"]), rule("dig", "digits", kinds=["b"], weight=0.5),
                           rule("all", "length", kinds=["*"], weight=0.1)])
    got = route(router)
    assert [sorted(d) for d in got.by_source] == [["all", "len"], ["all", "dig"], ["all", "len"], ["all"]]
    # row 0: len 2 + 0.1·2; row 1: 0.5·0 + 0.1·3; row 2: 6 + 0.6; row 3 (no kind): 0.1·1
    assert got.rewards == pytest.approx([2.2, 0.3, 6.6, 0.1])
    m = got.metrics
    assert (m["len"]["samples"], m["dig"]["samples"], m["all"]["samples"]) == (2, 1, 4)
    assert m["len"]["mean"] == pytest.approx(4.0) and m["all"]["statuses"] == {"scored": 4}
    # the per-source weighted sums add up to the batch's rewards
    assert sum(x["weighted_sum"] for x in m.values()) == pytest.approx(sum(got.rewards))
    assert all(x["seconds"] >= 0 for x in m.values())


def test_failure_scores_the_configured_value_and_is_counted():
    router = RewardRouter([rule("dig", "digits", failure_score=-1.0)])
    got = route(router, ["12", "boom", "3", "boom"])
    assert got.rewards == [2.0, -1.0, 1.0, -1.0] and got.keep == [True] * 4
    assert got.statuses == ["scored", "error", "scored", "error"]
    m = got.metrics["dig"]
    assert (m["failures"], m["dropped"], m["mean"]) == (2, 0, 1.5)


def test_failure_can_drop_the_sample_from_the_batch():
    router = RewardRouter([rule("dig", "digits", on_failure="drop"), rule("len", "length", weight=2.0)])
    got = route(router, ["12", "boom", "3", "x"])
    assert got.keep == [True, False, True, True] and got.statuses[1] == "dropped"
    assert (got.metrics["dig"]["dropped"], got.metrics["dig"]["failures"]) == (1, 0)
    assert [r for r, k in zip(got.rewards, got.keep) if k] == [6.0, 3.0, 2.0]


def test_rows_no_source_serves_fail_the_load_naming_the_line(tmp_path):
    router = RewardRouter([rule("len", "length", kinds=["a"])])
    path = tmp_path / "rows.jsonl"
    path.write_text('{"prompt": "x", "kind": "a"}\n{"prompt": "y", "kind": "c"}\n')
    with pytest.raises(DataError, match=r"rows.jsonl:2: no reward source serves kind 'c'; the sources serve \['a'\]"):
        read_rows(path, check=router.row_problem)


def test_math_rows_need_an_answer(tmp_path):
    from cluster.reward_sources import MathSource

    router = RewardRouter([MathSource(SourceConfig(name="m", type="math"), verifiers=None)])
    path = tmp_path / "rows.jsonl"
    path.write_text('{"prompt": "1+1=", "answer": "2"}\n{"prompt": "1+2="}\n')
    with pytest.raises(DataError, match=r"rows.jsonl:2: source 'm' \(math\) needs field\(s\) answer"):
        read_rows(path, check=router.row_problem)


def test_a_rule_function_that_cannot_be_imported_is_named():
    with pytest.raises(ValueError, match="rule function 'nope.mod:fn' cannot be loaded"):
        RuleSource(SourceConfig(name="x", type="rule", function="nope.mod:fn"))


def test_old_kind_math_keeps_working_and_sources_default_to_math():
    old = RewardConfig(kind="math")
    assert [(s.name, s.type, s.kinds) for s in old.training_sources()] == [("math", "math", ["*"])]
    assert old.eval_sources() == old.training_sources()
    with pytest.raises(ValueError, match="remove `kind: math` and keep `sources`"):
        RewardConfig(kind="math", sources=[{"name": "m", "type": "math"}])


@pytest.mark.parametrize("source, message", [
    ({"name": "r", "type": "rm"}, "a source of type rm needs `model_dir`"),
    ({"name": "m", "type": "math", "model_dir": "."}, "model_dir applies to type rm only"),
    ({"name": "j", "type": "judge", "judges": "missing.yaml"}, "judges 'missing.yaml' does not exist"),
    ({"name": "x", "type": "rule", "function": "no colon"}, "should match pattern"),
    ({"name": "m", "type": "math", "kinds": []}, "kinds is empty"),
])
def test_source_config_errors_name_the_key(tmp_path, source, message):
    cfg = tmp_path / "run.yaml"
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (tmp_path / "d.jsonl").write_text('{"prompt": "1+1=", "answer": "2"}\n')
    import yaml

    cfg.write_text(yaml.safe_dump({"policy": {"model_dir": str(model)},
                                   "data": {"train_path": str(tmp_path / "d.jsonl"), "eval_path": str(tmp_path / "d.jsonl")},
                                   "reward": {"sources": [{"name": "ok", "type": "math"}, source]}}))
    with pytest.raises(ConfigError) as e:
        load_config(cfg)
    assert "reward.sources.1" in str(e.value) and message in str(e.value)


def test_a_learned_reward_needs_a_separate_gold_metric(tmp_path):
    (tmp_path / "rm").mkdir()
    with pytest.raises(ValueError, match="set reward.eval to the gold metric"):
        RewardConfig(sources=[{"name": "rm", "type": "rm", "model_dir": str(tmp_path / "rm")}])
    ok = RewardConfig(sources=[{"name": "rm", "type": "rm", "model_dir": str(tmp_path / "rm")}],
                      eval=[{"name": "gold", "type": "math"}])
    assert [s.name for s in ok.eval_sources()] == ["gold"]


def test_duplicate_source_names_are_refused():
    with pytest.raises(ValueError, match="source name 'a' is used twice"):
        RewardConfig(sources=[{"name": "a", "type": "math"}, {"name": "a", "type": "code"}])


def test_capacity_counts_judge_pools_and_served_judges(tmp_path):
    import yaml

    from cluster.run import judge_cpus

    path = tmp_path / "judges.yaml"
    path.write_text(yaml.safe_dump({"pool": {"size": 2, "num_cpus": 0.5}, "judges": [
        {"model": "a", "base_url": "http://127.0.0.1:1/v1"},
        {"model": "b", "serve": {"model_dir": str(tmp_path), "num_cpus": 1.5}}]}))
    src = SourceConfig(name="j", type="judge", judges=path)
    # pool 2 × 0.5 + one served judge 1.5 = 2.5 per judge source (each starts its own)
    assert judge_cpus([src, SourceConfig(name="m", type="math")]) == 2.5
    assert judge_cpus([src, src.model_copy(update={"name": "k"})]) == 5.0
