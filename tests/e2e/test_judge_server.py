"""A judge the run serves itself: a real vLLM OpenAI-compatible server owned by a Ray actor,
health-checked, reached through the OpenAI client, killed mid-run and brought back."""
import time

import pytest
import ray
import yaml

from cluster.config import SourceConfig
from cluster.reward_router import RewardRouter
from cluster.reward_sources import JudgeSource

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
TEMPLATE = "{prompt}|{response_a}|{response_b}|"  # the tiny model has 64 tokens (characters) of context


@pytest.fixture(scope="module")
def source(ray_cluster, tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("served")
    (tmp / "chat.jinja").write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    judges = {
        "pairwise_template": TEMPLATE,
        "retry": {"max_retries": 0},
        "circuit_breaker": {"failure_threshold": 2, "reset_after_s": 2.0},
        "pool": {"size": 1, "num_cpus": 0.1},
        "judges": [{"name": "served", "model": "tiny", "max_tokens": 20, "timeout_s": 20,
                    "extra_body": {"structured_outputs": {"regex": r"Verdict: \[\[(A|B)\]\]"}},
                    "serve": {"model_dir": str(tiny_model_dir), "max_model_len": 64, "dtype": "float32",
                              "chat_template": str(tmp / "chat.jinja"), "num_cpus": 0.5}}],
    }
    (tmp / "judges.yaml").write_text(yaml.safe_dump(judges))
    src = JudgeSource(SourceConfig(name="judge", type="judge", judges=tmp / "judges.yaml", judge_mode="group",
                                   failure_score=-1.0))
    yield src
    src.close()


ROWS = [{"prompt": "1+1="}] * 2 + [{"prompt": "2+5="}] * 2
TEXTS = ["2", "3", "7", "8"]


def score(src):
    return RewardRouter([src]).score([r["prompt"] for r in ROWS], TEXTS, ROWS, [0, 0, 1, 1])


def test_served_judge_is_healthy_and_judges_through_its_url(source):
    (server,) = source.servers.values()
    assert ray.get(server.healthy.remote())
    url = source.pool.config.judges[0].base_url
    assert url.startswith("http://") and url.endswith("/v1")
    got = score(source)
    assert got.statuses == ["judged"] * 4 and got.metrics["judge"]["failures"] == 0
    # group win rates of a 2-sample group: one wins, or both tie at 0.5 when the orders disagree
    assert all(got.rewards[i] + got.rewards[i + 1] == pytest.approx(1.0) for i in (0, 2))


def test_server_killed_mid_run_fails_over_then_comes_back(source):
    (server,) = source.servers.values()
    ray.get(server.kill_server.remote())
    assert not ray.get(server.healthy.remote())
    down = score(source)  # connection refused → the breaker opens → every sample abstains
    assert down.statuses == ["abstain"] * 4 and down.rewards == [-1.0] * 4 and down.metrics["judge"]["failures"] == 4
    states = ray.get(source.pool.actors[0].breaker_states.remote())
    assert states["served"] == "open"
    ray.get(server.restart.remote())  # the same port: the judges' URL still holds
    time.sleep(2.5)  # past reset_after_s: the breaker lets one probe through; the calls beside it still fail fast
    probe = score(source)
    assert probe.metrics["judge"]["statuses"].get("judged", 0) + probe.metrics["judge"]["failures"] == 4
    assert ray.get(source.pool.actors[0].breaker_states.remote())["served"] == "closed"  # the probe succeeded
    up = score(source)
    assert up.statuses == ["judged"] * 4 and up.metrics["judge"]["failures"] == 0


def test_close_stops_the_server(source, tiny_model_dir):
    (server,) = source.servers.values()
    url = source.pool.config.judges[0].base_url
    source.close()
    import urllib.request

    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/models", timeout=2)
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(server.healthy.remote())
