"""Reward pools as Ray Serve applications on a real local Ray cluster: deploy/serve.yaml deployed by
`threefold serve`, verdicts over HTTP and through DeploymentHandles equal to the in-job pools', a
run's sources scoring through a Serve app, and one app redeployed with new replicas while the other
keeps its replicas."""
import copy
import json
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import ray
import torch
import yaml
from ray import serve
from ray.serve.schema import ServeDeploySchema

from cluster.cli import main
from cluster.config import RewardConfig, SourceConfig
from cluster.reward_router import RewardRouter
from cluster.reward_sources import build_sources
from cluster.serve_cmd import load_serve_config
from cluster.serve_pools import ServeVerifierPool
from cluster.verifier_pool import VerifierPool
from rewards.rm.model import load_backbone, save_reward_model
from rewards.rm.scorer import RMScorer

pytestmark = pytest.mark.timeout(300)
ROOT = Path(__file__).resolve().parents[2]
SERVE_YAML = ROOT / "deploy" / "serve.yaml"

ADD = "def add(a, b):\n    return a {} b\n"
FN_TESTS = {"type": "function", "entry_point": "add", "cases": [{"args": [2, 3], "expected": 5}, {"args": [0, 0], "expected": 0}]}
ROWS = [
    {"id": "pass", "kind": "code", "program": ADD.format("+"), "tests": FN_TESTS},
    {"id": "fail", "kind": "code", "program": ADD.format("-"), "tests": FN_TESTS},
    {"id": "syntax", "kind": "code", "program": "def add(a, b) return a", "tests": FN_TESTS},
    {"id": "stdio", "kind": "code", "program": "print(int(input()) * 2)",
     "tests": {"type": "stdio", "cases": [{"stdin": "21\n", "stdout": "42\n"}]}},
    {"id": "math-ok", "kind": "math", "response": "so \\boxed{\\frac{1}{2}}", "answer": "0.5"},
    {"id": "math-no", "kind": "math", "response": "I think 7", "answer": "8"},
    {"id": "exact", "kind": "exact", "response": "Answer: Paris", "answers": ["paris"]},
    {"id": "bad", "kind": "poetry"},
]
STATUSES = ["passed", "failed", "syntax_error", "passed", "passed", "failed", "passed", "invalid_input"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def without_timing(value):
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k != "elapsed_s"}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


def post(url: str, body) -> tuple[int, dict]:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def app(cfg: dict, name: str) -> dict:
    return next(a for a in cfg["applications"] if a["name"] == name)


@pytest.fixture(scope="module")
def rm_dir(tiny_model_dir, tmp_path_factory):
    model, tok = load_backbone(tiny_model_dir, seed=0)
    torch.nn.init.normal_(model.score.weight, std=0.5)  # a head that tells texts apart
    out = tmp_path_factory.mktemp("serve_rm")
    save_reward_model(model, tok, out)
    return out


@pytest.fixture(scope="module")
def test_config(rm_dir, tmp_path_factory) -> tuple[Path, dict]:
    """deploy/serve.yaml with test overrides: a free port, small replicas, the tiny reward model."""
    cfg = yaml.safe_load(SERVE_YAML.read_text())
    cfg["http_options"] = {"host": "127.0.0.1", "port": free_port()}
    cfg["applications"] = [a for a in cfg["applications"] if a["name"] != "judges"]
    v = app(cfg, "verifiers")
    v["args"]["sandbox_slots"] = 2
    v["deployments"][0]["autoscaling_config"].update(min_replicas=1, max_replicas=2, upscale_delay_s=1)
    v["deployments"][0]["ray_actor_options"]["num_cpus"] = 0.5
    v["deployments"][0]["graceful_shutdown_timeout_s"] = 1  # teardown need not wait for slow requests
    r = app(cfg, "rm")
    r["args"]["model_dir"] = str(rm_dir)
    r["deployments"][0]["autoscaling_config"].update(min_replicas=1, max_replicas=1)
    r["deployments"][0]["ray_actor_options"]["num_cpus"] = 0.5
    path = tmp_path_factory.mktemp("serve_cfg") / "serve.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, cfg


@pytest.fixture(scope="module")
def deployed(test_config, monkeypatch_module):
    monkeypatch_module.delenv("RAY_ADDRESS", raising=False)
    ray.init(num_cpus=8, resources={"verifier_node": 4, "judge_node": 4}, include_dashboard=False,
             log_to_driver=False)
    path, cfg = test_config
    assert main(["serve", str(path), "--wait", "180"]) == 0  # every app RUNNING
    yield path, cfg, f"http://127.0.0.1:{cfg['http_options']['port']}"
    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_serve_yaml_is_a_valid_serve_config_for_the_three_pools():
    raw = yaml.safe_load(SERVE_YAML.read_text())
    ServeDeploySchema.model_validate(raw)
    assert load_serve_config(SERVE_YAML) == raw  # the args fit deploy/serve_apps.py's models too
    paths = {a["name"]: a["import_path"] for a in raw["applications"]}
    assert paths == {"verifiers": "deploy.serve_apps:verifier_app", "rm": "deploy.serve_apps:rm_app",
                     "judges": "deploy.serve_apps:judge_app"}
    for a in raw["applications"]:
        auto = a["deployments"][0]["autoscaling_config"]
        assert 1 <= auto["min_replicas"] <= auto["max_replicas"] and auto["target_ongoing_requests"] > 0
    assert app(raw, "verifiers")["deployments"][0]["ray_actor_options"]["resources"] == {"verifier_node": 0.01}
    assert app(raw, "judges")["deployments"][0]["ray_actor_options"]["resources"] == {"judge_node": 0.01}


def test_serve_app_in_the_run_config_replaces_the_pool_keys():
    assert SourceConfig(name="rm", type="rm", serve_app="rm").model_dir is None  # no model_dir needed
    assert SourceConfig(name="j", type="judge", serve_app="judges", judge_mode="pointwise").judges is None
    for kw, msg in [({"type": "rule", "function": "m:f"}, "serve_app applies to math, code, exact, rm and judge"),
                    ({"type": "rm", "scorers": 2}, "scorers does not apply with serve_app"),
                    ({"type": "judge", "judges": str(SERVE_YAML)}, "judges does not apply with serve_app")]:
        with pytest.raises(ValueError, match=msg):
            SourceConfig(name="s", serve_app="x", **kw)
    with pytest.raises(ValueError, match="needs `model_dir`"):
        SourceConfig(name="s", type="rm")  # without serve_app it still does


def test_a_bad_serve_config_exits_2_naming_file_line_and_key(tmp_path, capsys):
    bad = copy.deepcopy(yaml.safe_load(SERVE_YAML.read_text()))
    app(bad, "verifiers")["args"]["sandbox_slot"] = 3
    app(bad, "rm")["deployments"][0]["autoscaling_config"]["target_ongoing_requests"] = "many"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad, sort_keys=False))
    assert main(["serve", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:" in err and "applications.0.args.sandbox_slot: unknown key" in err
    assert "applications.1.deployments.0.autoscaling_config.target_ongoing_requests" in err
    assert main(["serve", str(SERVE_YAML), "--app", "nope"]) == 2
    assert "no application 'nope' (applications: verifiers, rm, judges)" in capsys.readouterr().err


def test_verdicts_over_http_and_handle_equal_the_in_job_pool(deployed):
    _, _, url = deployed
    in_job = VerifierPool(1, 2)
    want = in_job.verify(ROWS)
    assert [v["status"] for v in want] == STATUSES
    status, body = post(f"{url}/verifiers", {"rows": ROWS})
    assert status == 200 and without_timing(body["verdicts"]) == without_timing(want)
    by_handle = serve.get_app_handle("verifiers").verify.remote(ROWS).result(timeout_s=120)
    assert without_timing(by_handle) == without_timing(want)
    math = post(f"{url}/verifiers", {"responses": ["\\boxed{4}", "5"], "answers": ["4", "4"]})[1]["results"]
    assert [(r["score"], r["status"]) for r in math] == [(1.0, "passed"), (0.0, "failed")]
    # the sandbox mode: the replica's is the in-job actor's (the strongest available here)
    mode = ray.get(in_job.actors[0].info.remote())["mode"]
    with urllib.request.urlopen(f"{url}/verifiers", timeout=60) as r:
        assert json.loads(r.read())["mode"] == mode
    assert ServeVerifierPool("verifiers").sandbox_modes() == [mode]
    for actor in in_job.actors:
        ray.kill(actor)


def jsonl(path: Path, rows=None) -> list:
    if rows is not None:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_offline_verify_sends_rows_to_the_app_and_never_loses_one(deployed, tmp_path):
    _, _, url = deployed
    jsonl(tmp_path / "in.jsonl", ROWS)
    assert main(["verify", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"), "--url", f"{url}/verifiers"]) == 0
    got = jsonl(tmp_path / "out.jsonl")
    assert [g["status"] for g in got] == STATUSES and [g["id"] for g in got] == [r["id"] for r in ROWS]
    dead = f"http://127.0.0.1:{free_port()}/verifiers"  # nothing listens there
    assert main(["verify", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "lost.jsonl"), "--url", dead]) == 0
    lost = jsonl(tmp_path / "lost.jsonl")
    assert [g["status"] for g in lost] == ["sandbox_error"] * len(ROWS) and [g["id"] for g in lost] == [r["id"] for r in ROWS]
    assert all(dead in g["error"] for g in lost)


def test_bad_requests_get_400_with_the_reason(deployed):
    _, _, url = deployed
    assert post(f"{url}/verifiers", {"rows": "x"}) == (400, {"error": "'rows' must be a list of row objects"})
    assert post(f"{url}/rm", {"prompts": ["a"], "responses": []}) == \
        (400, {"error": "'prompts', 'responses' must have the same length"})


def test_sources_with_serve_app_score_through_the_router(deployed):
    reward = RewardConfig(sources=[SourceConfig(name="code", type="code", kinds=["code"], serve_app="verifiers"),
                                   SourceConfig(name="math", type="math", kinds=["math"], serve_app="verifiers")])
    shared: dict = {}
    sources = build_sources(reward, reward.training_sources(), 0.25, shared)
    assert list(shared) == ["serve:verifiers"] and sources[0].pool is sources[1].pool  # one pool, no actors
    router = RewardRouter(sources)
    rows = [{"kind": "code", "tests": FN_TESTS}] * 3 + [{"kind": "math", "answer": "12"}] * 2
    responses = ["```python\n" + ADD.format("+") + "```", ADD.format("*"), "def add(", "\\boxed{12}", "13"]
    routed = router.score([""] * 5, responses, rows, [0, 0, 0, 1, 1])
    assert routed.rewards == [1.0, 0.5, 0.0, 1.0, 0.0]  # add(0,0) == 0 also for a*b
    assert routed.statuses == ["passed", "failed", "syntax_error", "passed", "failed"]
    assert routed.metrics["code"]["sandbox_mode"] == ServeVerifierPool("verifiers").sandbox_modes()[0]
    assert router.pools() == {"verifiers": [], "rm": [], "judges": []}  # nothing for `threefold scale`
    assert router.serve_apps() == {"verifiers": ["verifiers"]} and router.sizes()["verifiers"] >= 1
    refused = scale_refused(router.serve_apps())
    assert refused.returncode == 2, refused.stderr
    assert "scores verifiers with the Serve application(s) verifiers: change min_replicas/max_replicas" in refused.stderr
    for src in sources:
        src.close()  # leaves the app alone
    assert post(deployed[2] + "/verifiers", {"rows": ROWS[:1]})[1]["verdicts"][0]["status"] == "passed"


def scale_refused(serve_apps: dict):
    """`threefold scale --run` (another process) against a run whose verifiers are a Serve app."""
    import subprocess
    import sys

    from cluster.control import initial_status
    from cluster.control_link import ControlLink

    link = ControlLink.open(initial_status("serve-run", 10, "/tmp/serve-run", None, {"generators": 1}))
    link.push(pools={"generators": 1, "verifiers": 1}, serve_apps=serve_apps)
    ray.get(link.actor.status.remote())  # the push is in (one caller's calls run in order) before the CLI reads
    try:
        return subprocess.run([sys.executable, "-m", "cluster.cli", "scale", "--run", "serve-run", "--verifiers", "3",
                               "--address", ray.get_runtime_context().gcs_address], cwd=ROOT, capture_output=True,
                              text=True, timeout=120)
    finally:
        link.close("finished")


def test_rm_app_scores_like_the_in_process_scorer(deployed, rm_dir):
    _, _, url = deployed
    prompts, responses = [f"{i}+{i}=" for i in range(10)], [str(2 * i) for i in range(10)]
    want = [r.score for r in RMScorer(rm_dir).score(prompts, responses)]
    status, body = post(f"{url}/rm", {"prompts": prompts, "responses": responses})
    assert status == 200 and [r["status"] for r in body["results"]] == ["scored"] * 10
    assert [r["score"] for r in body["results"]] == pytest.approx(want, abs=1e-5)
    reward = RewardConfig(sources=[SourceConfig(name="rm", type="rm", serve_app="rm")],
                          eval=[SourceConfig(name="math", type="math")])
    (src,) = build_sources(reward, reward.training_sources(), 0.25, {})
    routed = RewardRouter([src]).score(prompts, responses, [{}] * 10, list(range(10)))
    assert routed.rewards == pytest.approx(want, abs=1e-5) and len(set(round(w, 4) for w in want)) > 3
    jsonl(rm_dir.parent / "rm_in.jsonl", [{"prompt": p, "response": r} for p, r in zip(prompts, responses)])
    out = rm_dir.parent / "rm_out.jsonl"
    assert main(["rm", "score", str(rm_dir.parent / "rm_in.jsonl"), "-o", str(out), "--url", f"{url}/rm"]) == 0
    assert [g["reward"] for g in jsonl(out)] == pytest.approx(want, abs=1e-5)


def test_a_failed_request_gives_error_results_for_its_samples(deployed):
    pool = ServeVerifierPool("verifiers", max_retries=1)
    got = pool.calls("no_such_method", [(1,), (2,)], lambda p, e: ["lost", p[0]])
    assert got == [["lost", 1], ["lost", 2]]
    with pytest.raises(ValueError, match="Serve application 'nope' is not running"):
        ServeVerifierPool("nope")


def test_judge_app_rewards_like_the_in_job_judge_pool(deployed, tmp_path):
    """The judges are a scripted OpenAI-compatible test double (tests/doubles), not a real model."""
    from cluster.judge_cmd import load_judges
    from cluster.judge_pool import JudgePool
    from tests.doubles.judge_helpers import prefers
    from tests.doubles.openai_double import OpenAIDouble

    path, cfg, url = deployed
    with OpenAIDouble(prefers("right")) as judge_double:
        judges = tmp_path / "judges.yaml"
        judges.write_text(yaml.safe_dump({"judges": [{"name": "double", "base_url": judge_double.base_url,
                                                      "model": "m"}], "pool": {"size": 1, "num_cpus": 0.1}}))
        with_judges = copy.deepcopy(cfg)
        j = copy.deepcopy(app(yaml.safe_load(SERVE_YAML.read_text()), "judges"))
        j["args"]["judges"] = str(judges)
        j["deployments"][0]["autoscaling_config"].update(min_replicas=1, max_replicas=1)
        j["deployments"][0]["ray_actor_options"]["num_cpus"] = 0.1
        with_judges["applications"].append(j)
        new = tmp_path / "serve.yaml"
        new.write_text(yaml.safe_dump(with_judges))
        rm_before = replicas("rm")
        assert main(["serve", str(new), "--app", "judges", "--wait", "120"]) == 0
        assert replicas("rm") == rm_before  # adding an app leaves the others' replicas alone
        prompts, responses, groups = ["q"] * 4, ["right 1", "wrong 1", "right 2", "wrong 2"], [0, 0, 0, 0]
        status, body = post(f"{url}/judges", {"mode": "group", "prompts": prompts, "responses": responses,
                                             "third": groups})
        pool = JudgePool(load_judges(judges))
        want = pool.rewards("group", prompts, responses, groups)
        pool.shutdown()
        assert status == 200 and [(r["score"], r["status"]) for r in body["results"]] == \
            [(w.score, w.status) for w in want]
        scores = [r["score"] for r in body["results"]]
        assert scores[0] == scores[2] > 0.5 > scores[1] == scores[3]  # the judge prefers "right"
        pairs = post(f"{url}/judges", {"pairs": [["q", "wrong", "right"]]})[1]["verdicts"]
        assert pairs[0]["winner"] == "B"
        rows = [{"id": i, "prompt": "q", "response_a": a, "response_b": b}
                for i, (a, b) in enumerate([("right", "wrong"), ("wrong", "right")])]
        jsonl(tmp_path / "pairs.jsonl", rows)
        assert main(["judge", str(tmp_path / "pairs.jsonl"), "-o", str(tmp_path / "v.jsonl"), "--url", f"{url}/judges"]) == 0
        assert [(v["id"], v["winner"]) for v in jsonl(tmp_path / "v.jsonl")] == [(0, "A"), (1, "B")]
        reward = RewardConfig(sources=[SourceConfig(name="judge", type="judge", serve_app="judges")],
                              eval=[SourceConfig(name="math", type="math")])
        (src,) = build_sources(reward, reward.training_sources(), 0.25, {})
        routed = RewardRouter([src]).score(prompts, responses, [{}] * 4, groups)
        assert routed.rewards == [w.score for w in want]
        assert routed.metrics["judge"]["calls"] > 0 and "double" in routed.metrics["judge"]["judges"]
        assert main(["serve", str(new), "--shutdown", "--app", "judges"]) == 0


def replicas(name: str) -> dict:
    details = serve.context._get_global_client().get_serve_details()
    deps = details["applications"][name]["deployments"]
    return {r["replica_id"]: r["pid"] for d in deps.values() for r in d["replicas"] if r["state"] == "RUNNING"}


def test_scaling_one_app_leaves_the_other_app_running(deployed, tmp_path, capsys):
    path, cfg, url = deployed
    rm_before, v_before = replicas("rm"), replicas("verifiers")
    assert len(rm_before) == 1 and len(v_before) >= 1
    bigger = copy.deepcopy(cfg)
    auto = app(bigger, "verifiers")["deployments"][0]["autoscaling_config"]
    auto.update(min_replicas=2, max_replicas=3)
    app(bigger, "rm")["args"]["batch_size"] = 7  # would restart rm, were it deployed: --app leaves it out
    new = tmp_path / "serve.yaml"
    new.write_text(yaml.safe_dump(bigger))
    assert main(["serve", str(new), "--app", "verifiers", "--wait", "120"]) == 0
    out = capsys.readouterr().out
    assert f"verifiers: RUNNING  {url}/verifiers  Verifier 2 replica(s)" in out
    assert replicas("rm") == rm_before  # same replica, same process
    assert set(v_before) <= set(replicas("verifiers")) and len(replicas("verifiers")) == 2  # grown, not restarted
    applied = serve.status().applications["verifiers"].deployments["Verifier"]
    assert sum(applied.replica_states.values()) == 2
    details = serve.context._get_global_client().get_serve_details()["applications"]
    got = details["verifiers"]["deployments"]["Verifier"]["deployment_config"]["autoscaling_config"]
    assert (got["min_replicas"], got["max_replicas"], got["target_ongoing_requests"]) == (2, 3, 4)
    assert details["rm"]["deployed_app_config"]["args"]["batch_size"] == 64
    assert main(["serve", str(new), "--status", "--app", "rm"]) == 0
    assert "rm: RUNNING" in capsys.readouterr().out
    assert main(["serve", str(new), "--shutdown", "--app", "rm"]) == 0
    assert "rm" not in serve.status().applications and replicas("verifiers")  # verifiers untouched


def test_verifiers_scale_up_under_load(deployed):
    """After the redeploy above: min 2, max 3 replicas, target 4 ongoing requests each. Twelve slow
    requests in flight ask for 3; Serve adds the third within a minute (metrics pushed every 10 s)."""
    import time

    handle = serve.get_app_handle("verifiers")
    slow = {"kind": "code", "program": "import time\ntime.sleep(8)\n" + ADD.format("+"), "tests": FN_TESTS,
            "limits": {"timeout_s": 60}}
    t0 = time.monotonic()
    responses = [handle.verify.remote([{**slow, "id": i}]) for i in range(12)]
    while len(replicas("verifiers")) < 3 and time.monotonic() - t0 < 60:
        time.sleep(1)
    assert len(replicas("verifiers")) == 3, f"no upscale after {time.monotonic() - t0:.0f} s"
    print(f"upscaled to 3 replicas in {time.monotonic() - t0:.1f} s")
    assert responses[0].result(timeout_s=120)[0]["status"] == "passed"
