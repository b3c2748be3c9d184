import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cluster.config_loader import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def good(tmp_path, tiny_model_dir) -> dict:
    for name in ("train.jsonl", "eval.jsonl"):
        (tmp_path / name).write_text('{"prompt": "1+1=", "answer": "2"}\n')
    return {
        "steps": 3,
        "policy": {"model_dir": str(tiny_model_dir)},
        "data": {"train_path": str(tmp_path / "train.jsonl"), "eval_path": str(tmp_path / "eval.jsonl")},
        "rollout": {"num_generators": 2, "samples_per_prompt": 4},
        "learner": {"lr": 1e-4},
    }


def write(tmp_path, raw: dict) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def error_of(tmp_path, raw: dict) -> str:
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, raw))
    return str(e.value)


def test_good_config_loads_with_defaults(tmp_path, good):
    cfg = load_config(write(tmp_path, good))
    assert cfg.rollout.samples_per_prompt == 4
    assert cfg.algorithm.name == "grpo" and cfg.algorithm.kl_estimator() == "k3"
    assert cfg.algorithm.aggregation() == "token_mean" and not cfg.algorithm.kl_in_reward()
    assert cfg.learner.lr == 1e-4


def test_parity_tolerance_defaults_to_the_generators_precision(tmp_path, good):
    assert load_config(write(tmp_path, good)).parity_tolerance() == 1e-3
    for rollout in ({"dtype": "bfloat16"}, {"dtype": "float16"}, {"sync_dtype": "bfloat16"}):
        assert load_config(write(tmp_path, {**good, "rollout": {**good.get("rollout", {}), **rollout}})).parity_tolerance() == 0.1
    chosen = {**good, "rollout": {**good.get("rollout", {}), "dtype": "bfloat16"}, "logging": {"parity_tol": 0.05}}
    assert load_config(write(tmp_path, chosen)).parity_tolerance() == 0.05
    assert "rollout.dtype" in error_of(tmp_path, {**good, "rollout": {**good.get("rollout", {}), "dtype": "fp8"}})


def test_learner_compile_is_off_by_default_and_refused_with_fsdp2(tmp_path, good):
    assert load_config(write(tmp_path, good)).learner.compile is False
    assert load_config(write(tmp_path, {**good, "learner": {"compile": True}})).learner.compile is True
    both = {**good, "learner": {"compile": True}, "resources": {"learners": 2, "learner_sharding": "fsdp2"}}
    msg = error_of(tmp_path, both)
    assert "learner.compile" in msg and "learner_sharding: replicate" in msg


def test_algorithm_defaults_follow_the_name(tmp_path, good):
    good["algorithm"] = {"name": "dr_grpo"}
    assert load_config(write(tmp_path, good)).algorithm.aggregation() == "seq_mean_token_sum_norm"
    good["algorithm"] = {"name": "ppo", "kl": {"estimator": "k2", "target": 0.05}}
    a = load_config(write(tmp_path, good)).algorithm
    assert a.kl_in_reward() and a.kl.target == 0.05 and a.critic.lam == 0.95 and a.kl_estimator() == "k2"
    good["algorithm"] = {"name": "reinforce_pp"}
    assert load_config(write(tmp_path, good)).algorithm.kl_estimator() == "k1"


def test_critic_fields_refused_without_ppo(tmp_path, good):
    good["algorithm"] = {"name": "grpo", "critic": {"lr": 1e-3}}
    msg = error_of(tmp_path, good)
    assert "algorithm.critic.lr applies to ppo only" in msg


def test_kl_estimator_must_be_known(tmp_path, good):
    good["algorithm"] = {"kl": {"estimator": "k7"}}
    msg = error_of(tmp_path, good)
    assert "algorithm.kl.estimator" in msg and "'k1', 'k2' or 'k3'" in msg


@pytest.mark.parametrize("name", ["rlvr-arith.yaml", "rlvr-arith-ppo.yaml", "rlhf-arith.yaml", "hybrid-arith.yaml"])
def test_demo_config_validates_when_assets_exist(name, monkeypatch):
    demo = ROOT / "configs" / name
    raw = yaml.safe_load(demo.read_text())
    assert raw["rollout"]["num_generators"] >= 2
    paths = [raw["policy"]["model_dir"], raw["data"]["train_path"]]
    paths += [s["model_dir"] for s in raw["reward"].get("sources", []) if "model_dir" in s]
    if all((ROOT / p).exists() for p in paths):
        monkeypatch.chdir(ROOT)
        load_config(demo)


def test_reward_model_demo_config_validates_when_pairs_exist(monkeypatch):
    from cluster.rm_config import RewardModelConfig

    if (ROOT / ".cache/demo/rlhf/train.jsonl").is_file():
        monkeypatch.chdir(ROOT)
        assert load_config(ROOT / "configs/rlhf-rm.yaml", schema=RewardModelConfig).train.steps == 300


def test_unknown_key_names_path_line_and_allowed_keys(tmp_path, good):
    good["rollout"]["sample_per_prompt"] = 8
    msg = error_of(tmp_path, good)
    # rollout: is on line 7 of the dumped YAML, the typo on the line after its two siblings
    line = next(i for i, l in enumerate(write(tmp_path, good).read_text().splitlines(), 1) if "sample_per_prompt" in l)
    assert f"run.yaml:{line}: rollout.sample_per_prompt: unknown key" in msg
    assert "samples_per_prompt" in msg and "num_generators" in msg


def test_negative_learning_rate(tmp_path, good):
    good["learner"]["lr"] = -1e-4
    msg = error_of(tmp_path, good)
    assert "learner.lr" in msg and "greater than 0" in msg


def test_missing_model_directory(tmp_path, good):
    good["policy"]["model_dir"] = str(tmp_path / "nope")
    msg = error_of(tmp_path, good)
    assert "policy.model_dir" in msg and "does not exist" in msg and "nope" in msg


@pytest.mark.parametrize("section,key,value,expect", [
    ("algorithm", "name", "ppo2", "'ppo', 'grpo', 'dr_grpo', 'rloo' or 'reinforce_pp'"),
    ("algorithm", "loss_agg", "mean", "'token_mean', 'seq_mean_token_mean' or 'seq_mean_token_sum_norm'"),
    ("algorithm", "dual_clip", 0.5, "greater than 1"),
    ("reward", "kind", "judge", "'math'"),
    ("rollout", "samples_per_prompt", 1, "greater than or equal to 2"),
    ("rollout", "temperature", "hot", "valid number"),
    ("learner", "epochs", 0, "greater than or equal to 1"),
])
def test_bad_values_name_key_and_allowed(tmp_path, good, section, key, value, expect):
    good.setdefault(section, {})[key] = value
    msg = error_of(tmp_path, good)
    assert f"{section}.{key}" in msg and expect in msg


def test_cuda_ipc_needs_the_learner_and_generators_on_gpus(tmp_path, good):
    good.setdefault("rollout", {})["sync_transport"] = "cuda_ipc"
    msg = error_of(tmp_path, good)
    assert "cuda_ipc" in msg and "resources.learner_gpus" in msg and "generator_gpus" in msg
    good["resources"] = {"learner_gpus": 0.5, "generator_gpus": 0.5}
    assert load_config(write(tmp_path, good)).rollout.sync_transport == "cuda_ipc"


def test_missing_required_section(tmp_path, good):
    del good["data"]
    assert "data: required key is missing" in error_of(tmp_path, good)


def test_yaml_syntax_error_names_line(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("steps: 3\npolicy:\n  model_dir: [unclosed\n")
    with pytest.raises(ConfigError, match=r"run.yaml:\d+: invalid YAML"):
        load_config(path)


@pytest.mark.parametrize("mutate,expect", [
    (lambda c: c.update(bogus=1), "bogus: unknown key"),
    (lambda c: c["learner"].update(lr=-0.1), "learner.lr"),
    (lambda c: c["policy"].update(model_dir="/no/such/model"), "/no/such/model"),
])
def test_cli_exits_nonzero_without_traceback(tmp_path, good, mutate, expect):
    mutate(good)
    proc = subprocess.run([sys.executable, "-m", "cluster.cli", "train", str(write(tmp_path, good))],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert expect in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert len(proc.stderr.splitlines()) <= 4


def test_readme_config_reference_matches_schema():
    from cluster.config_loader import reference_markdown

    assert reference_markdown() in (ROOT / "README.md").read_text(), \
        "README's config reference is stale: paste the output of `threefold config-reference`"


def test_readme_names_the_two_commands_and_ci_calls_the_test_one():
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()



def test_readme_reward_model_config_reference_matches_schema():
    from cluster.config_loader import reference_markdown
    from cluster.rm_config import RewardModelConfig

    assert reference_markdown(RewardModelConfig) in (ROOT / "README.md").read_text(), \
        "README's reward-model config reference is stale: paste `threefold config-reference --rm`"


def test_scale_requests_merge_and_bad_sizes_are_refused(tmp_path, capsys):
    import json

    from cluster.cli import main

    (tmp_path / "metrics.jsonl").write_text("")
    assert main(["scale", str(tmp_path), "--verifiers", "3"]) == 0
    assert main(["scale", str(tmp_path), "--rm", "2"]) == 0
    assert json.loads((tmp_path / "scale.json").read_text()) == {"verifiers": 3, "rm": 2}
    assert main(["scale", str(tmp_path), "--judges", "0"]) == 2 and "--judges must be at least 1" in capsys.readouterr().err
    assert main(["scale", str(tmp_path)]) == 2 and "at least one of" in capsys.readouterr().err
