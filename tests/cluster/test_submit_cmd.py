"""`threefold submit` without a cluster: the job it builds (entrypoint, runtime_env, working_dir), the
config checked first, Ray's token authentication (the token never printed), and the exit codes, with a
stand-in for Ray's JobSubmissionClient."""
import shlex
import shutil
import socket
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from cluster import submit_cmd
from cluster.cli import HELP, build_parser

REAL_ROOT = Path(__file__).resolve().parents[2]
TOKEN = "tok-0123456789abcdef-SECRET"


@pytest.fixture
def inputs(tmp_path) -> dict:
    """A model directory and data files that exist (what the config loader checks)."""
    model = tmp_path / "inputs" / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    for name in ("train.jsonl", "eval.jsonl"):
        (tmp_path / "inputs" / name).write_text('{"prompt": "1+1=", "answer": "2"}\n')
    return {"model": model, "train": tmp_path / "inputs" / "train.jsonl", "eval": tmp_path / "inputs" / "eval.jsonl"}


def config_text(inputs, **logging) -> str:
    cfg = {"steps": 3,
           "policy": {"model_dir": str(inputs["model"])},
           "data": {"train_path": str(inputs["train"]), "eval_path": str(inputs["eval"])},
           "rollout": {"num_generators": 1},
           "logging": {"output_dir": "runs", **logging}}
    return yaml.safe_dump(cfg, sort_keys=False)


@pytest.fixture
def repo(tmp_path, monkeypatch, inputs) -> Path:
    """A repository root with the real deploy/runtime_env.yaml and a few configs."""
    root = tmp_path / "repo"
    (root / "configs").mkdir(parents=True)
    (root / "deploy").mkdir()
    shutil.copy(REAL_ROOT / "deploy" / "runtime_env.yaml", root / "deploy" / "runtime_env.yaml")
    (root / "configs" / "good.yaml").write_text(config_text(inputs))
    monkeypatch.setattr(submit_cmd, "ROOT", root)
    for var in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.ray/auth_token unless a test writes one
    return root


class FakeClient:
    """Stands in for ray.job_submission.JobSubmissionClient."""

    def __init__(self, address, headers, status="SUCCEEDED", logs=("step 1\n", "held-out score 40% → 60%\n")):
        from ray.job_submission import JobStatus

        self.address, self.headers, self.logs = address, headers, logs
        self.status = JobStatus(status)
        self.submitted, self.stopped, self.metadata = [], [], {}

    def submit_job(self, *, entrypoint, runtime_env, metadata):
        self.submitted.append({"entrypoint": entrypoint, "runtime_env": runtime_env, "metadata": metadata})
        self.metadata = metadata
        return "raysubmit_test123"

    def get_address(self):
        return self.address

    async def tail_job_logs(self, job_id):
        for chunk in self.logs:
            yield chunk

    def get_job_status(self, job_id):
        return self.status

    def get_job_info(self, job_id):
        return SimpleNamespace(status=self.status, message="boom" if self.status.value == "FAILED" else None,
                               metadata=self.metadata)

    def get_job_logs(self, job_id):
        return "".join(self.logs)

    def stop_job(self, job_id):
        self.stopped.append(job_id)
        return True


def run(argv, **client_kw):
    """cmd_submit through the real parser; the fake client it made (or None)."""
    made = []

    def factory(address, headers):
        made.append(FakeClient(address, headers, **client_kw))
        return made[-1]

    rc = submit_cmd.cmd_submit(build_parser().parse_args(["submit", *argv]), client_factory=factory)
    return rc, (made[0] if made else None)


def test_help_lists_submit():
    assert "submit CONFIG" in HELP


def test_entrypoint_and_runtime_env(repo, tmp_path):
    store = tmp_path / "store"
    plan = submit_cmd.prepare(str(repo / "configs" / "good.yaml"), ["learner.lr=5e-5", "logging.eval_every=5"],
                              str(store), now=datetime(2026, 1, 2, 3, 4, 5))
    assert shlex.split(plan.entrypoint) == [
        "python", "-m", "cluster.cli", "train", "configs/good.yaml",
        "--set", "learner.lr=5e-5", "--set", "logging.eval_every=5",
        "--set", f"logging.storage={store}", "--set", "logging.run_name=good-20260102-030405"]
    shipped = yaml.safe_load((REAL_ROOT / "deploy" / "runtime_env.yaml").read_text())
    assert plan.runtime_env["working_dir"] == str(repo)
    assert plan.runtime_env["excludes"] == shipped["excludes"]
    assert {".venv", ".cache", "runs", ".git"} <= set(plan.runtime_env["excludes"])
    assert plan.runtime_env["pip"] == shipped["pip"] and plan.runtime_env["env_vars"] == shipped["env_vars"]
    assert plan.outputs == f"{store}/good-20260102-030405"
    assert plan.warnings == []


def test_the_real_repository_is_the_working_dir(inputs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # run from elsewhere: the config and runtime_env are found in the repo
    plan = submit_cmd.prepare(str(REAL_ROOT / "configs" / "rlvr-arith.yaml"),
                              [f"policy.model_dir={inputs['model']}", f"data.train_path={inputs['train']}",
                               f"data.eval_path={inputs['eval']}"], "s3://bucket/threefold")
    assert plan.runtime_env["working_dir"] == str(REAL_ROOT)
    assert set(plan.runtime_env["excludes"]) >= {".venv", ".cache", "runs", ".git"}
    assert plan.run_name == "rlvr-arith" and plan.outputs == "s3://bucket/threefold/rlvr-arith"
    assert shlex.split(plan.entrypoint)[4:6] == ["configs/rlvr-arith.yaml", "--set"]
    assert "--set logging.storage=s3://bucket/threefold" in plan.entrypoint


def test_set_values_are_quoted_for_the_shell(repo, tmp_path):
    nasty = "my run; rm -rf / $(echo hi) 'q' \"d\""
    store = tmp_path / "a store with spaces"
    plan = submit_cmd.prepare(str(repo / "configs" / "good.yaml"), [f"logging.run_name={nasty}"], str(store))
    words = shlex.split(plan.entrypoint)
    assert words[5:] == ["--set", f"logging.run_name={nasty}", "--set", f"logging.storage={store}"]
    assert plan.run_name == nasty


def test_config_from_the_file_is_used_and_relative_storage_is_pinned(repo, inputs, monkeypatch, tmp_path):
    (repo / "configs" / "named.yaml").write_text(config_text(inputs, run_name="exp1", storage="results"))
    monkeypatch.chdir(tmp_path)
    plan = submit_cmd.prepare("repo/configs/named.yaml", [])
    assert plan.run_name == "exp1"
    assert plan.storage == str(tmp_path / "results")  # the submitting shell's directory, not the job's temp dir
    assert shlex.split(plan.entrypoint)[5:] == ["--set", f"logging.storage={tmp_path / 'results'}"]


def test_bad_config_exits_2_naming_file_and_line(repo, inputs, capsys):
    text = config_text(inputs).replace("  num_generators: 1\n", "  num_generators: 1\n  sample_per_prompt: 3\n")
    (repo / "configs" / "bad.yaml").write_text(text)
    line = text.splitlines().index("  sample_per_prompt: 3") + 1
    rc, client = run([str(repo / "configs" / "bad.yaml"), "--storage", "/tmp/x"])
    err = capsys.readouterr().err
    assert rc == 2 and client is None
    assert f"configs/bad.yaml:{line}: rollout.sample_per_prompt: unknown key" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("argv, expect", [
    (["--set", "steps", "--storage", "/s"], "write KEY.PATH=VALUE"),
    (["--set", "steps=0", "--storage", "/s"], "steps: Input should be greater than or equal to 1"),
    ([], "no storage location"),
    (["--storage", "/s", "--runtime-env", "missing.yaml"], "cannot read the runtime_env file"),
])
def test_refusals_exit_2_before_contacting_the_cluster(repo, capsys, argv, expect):
    rc, client = run([str(repo / "configs" / "good.yaml"), *argv])
    assert rc == 2 and client is None
    assert expect in capsys.readouterr().err


def test_a_config_outside_the_repository_or_excluded_is_refused(repo, tmp_path, inputs, capsys):
    (tmp_path / "elsewhere.yaml").write_text(config_text(inputs))
    assert run([str(tmp_path / "elsewhere.yaml"), "--storage", "/s"])[0] == 2
    assert "outside the repository" in capsys.readouterr().err
    (repo / "runs").mkdir()
    (repo / "runs" / "c.yaml").write_text(config_text(inputs))
    assert run([str(repo / "runs" / "c.yaml"), "--storage", "/s"])[0] == 2
    assert "left out of the working_dir" in capsys.readouterr().err


def test_relative_inputs_the_working_dir_leaves_out_are_refused_with_the_fix(repo, inputs, capsys):
    cache = repo / ".cache" / "demo"
    shutil.copytree(inputs["model"], cache / "model")
    text = config_text(inputs).replace(str(inputs["model"]), ".cache/demo/model")
    (repo / "configs" / "cached.yaml").write_text(text)
    rc, client = run([str(repo / "configs" / "cached.yaml"), "--storage", "/s"])
    err = capsys.readouterr().err
    assert rc == 2 and client is None
    assert f"--set policy.model_dir={cache / 'model'}" in err and "'.cache'" in err


def test_inputs_missing_here_only_warn(repo, inputs, capsys):
    text = config_text(inputs).replace(str(inputs["model"]), "/models/on-the-cluster")
    (repo / "configs" / "remote.yaml").write_text(text)
    rc, client = run([str(repo / "configs" / "remote.yaml"), "--storage", "s3://b/p"])
    out, err = capsys.readouterr()
    assert rc == 0 and len(client.submitted) == 1
    assert "warning:" in err and "/models/on-the-cluster" in err and "cluster's nodes" in err


def test_submit_prints_job_dashboard_outputs_and_streams_logs(repo, capsys):
    rc, client = run([str(repo / "configs" / "good.yaml"), "--storage", "s3://AKIA:secretkey@bucket/runs",
                      "--address", "http://head.example:8265"])
    out = capsys.readouterr().out
    assert rc == 0
    job = client.submitted[0]
    assert job["runtime_env"]["working_dir"] == str(repo)
    assert job["metadata"]["threefold_outputs"].startswith("s3://bucket/runs/good-")
    assert "job id: raysubmit_test123" in out
    assert "http://head.example:8265/#/jobs/raysubmit_test123" in out
    assert "outputs:    s3://bucket/runs/good-" in out
    assert "held-out score 40% → 60%" in out  # the streamed log
    assert "job raysubmit_test123 SUCCEEDED; outputs: s3://bucket/runs/good-" in out
    assert "secretkey" not in out  # credentials inside a URI are not echoed


def test_no_wait_returns_after_submitting(repo, capsys):
    rc, client = run([str(repo / "configs" / "good.yaml"), "--storage", "/s", "--no-wait"])
    out = capsys.readouterr().out
    assert rc == 0 and "job id: raysubmit_test123" in out and "step 1" not in out


@pytest.mark.parametrize("status, rc", [("SUCCEEDED", 0), ("FAILED", 1), ("STOPPED", 1)])
def test_exit_code_follows_the_jobs_end(repo, capsys, status, rc):
    assert run([str(repo / "configs" / "good.yaml"), "--storage", "/s"], status=status)[0] == rc
    assert f"job raysubmit_test123 {status}" in capsys.readouterr().out


def test_stop_status_and_logs(repo, capsys):
    rc, client = run(["--stop", "raysubmit_a", "--address", "http://h:8265"])
    assert rc == 0 and client.stopped == ["raysubmit_a"]
    assert "stop requested for job raysubmit_a" in capsys.readouterr().out
    rc, _ = run(["--logs", "raysubmit_a", "--no-wait"])
    assert rc == 0 and "held-out score" in capsys.readouterr().out
    rc, _ = run(["--logs", "raysubmit_a"], status="FAILED")
    out = capsys.readouterr().out
    assert rc == 1 and "step 1" in out and "job raysubmit_a FAILED: boom" in out
    rc, _ = run(["--status", "raysubmit_a"])
    assert rc == 0 and "job raysubmit_a: SUCCEEDED" in capsys.readouterr().out
    assert run(["--stop", "raysubmit_a", str(repo / "configs" / "good.yaml")])[0] == 2


def test_the_token_is_sent_as_a_header_and_never_printed(repo, capsys, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_TOKEN", TOKEN)
    rc, client = run([str(repo / "configs" / "good.yaml"), "--storage", "/s", "--address", "http://head:8265"])
    out, err = capsys.readouterr()
    assert rc == 0
    assert client.headers == {"Authorization": f"Bearer {TOKEN}"}
    assert "token from $RAY_AUTH_TOKEN" in out
    assert TOKEN not in out + err
    assert TOKEN not in repr(client.submitted)  # nor handed to the job

    class Leaky(FakeClient):
        def submit_job(self, **kw):
            raise RuntimeError(f"server said: bad header Bearer {TOKEN}")

    rc = submit_cmd.cmd_submit(build_parser().parse_args(["submit", str(repo / "configs" / "good.yaml"),
                                                          "--storage", "/s"]),
                               client_factory=lambda a, h: Leaky(a, h))
    out, err = capsys.readouterr()
    assert rc == 2 and "server said" in err and TOKEN not in out + err


def test_auth_headers(tmp_path):
    home = tmp_path / "home"
    (home / ".ray").mkdir(parents=True)
    local, remote = "http://127.0.0.1:8265", "http://head.example:8265"
    h = submit_cmd.auth_headers
    assert h(remote, {}, home) == ({}, "none")
    assert h(remote, {"RAY_AUTH_TOKEN": TOKEN}, home)[0] == {"Authorization": f"Bearer {TOKEN}"}
    assert h(remote, {"RAY_AUTH_TOKEN": TOKEN, "RAY_AUTH_MODE": "disabled"}, home)[0] == {}
    (tmp_path / "tok").write_text(TOKEN + "\n")
    assert h(remote, {"RAY_AUTH_TOKEN_PATH": str(tmp_path / "tok")}, home)[0] == {"Authorization": f"Bearer {TOKEN}"}
    with pytest.raises(submit_cmd.SubmitError, match="RAY_AUTH_TOKEN_PATH"):
        h(remote, {"RAY_AUTH_TOKEN_PATH": str(tmp_path / "missing")}, home)
    with pytest.raises(submit_cmd.SubmitError, match="no token found") as e:
        h(remote, {"RAY_AUTH_MODE": "token"}, home)
    (home / ".ray" / "auth_token").write_text(TOKEN)  # what ray.init() / `ray get-auth-token --generate` write
    assert h(local, {}, home) == ({"Authorization": f"Bearer {TOKEN}"}, "token from ~/.ray/auth_token")
    assert h(f"http://{socket.gethostname()}:8265", {}, home)[0] == {"Authorization": f"Bearer {TOKEN}"}
    assert h(remote, {}, home)[0] == {}  # like Ray: a remote address gets the file's token only with token mode
    assert h(remote, {"RAY_AUTH_MODE": "token"}, home)[0] == {"Authorization": f"Bearer {TOKEN}"}
    assert TOKEN not in str(e.value)


def test_address_flag_wins_over_ray_address(repo, capsys, monkeypatch):
    """Ray's client prefers $RAY_ADDRESS to its argument; --address must reach the server it names."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once the socket closes
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:1")
    assert submit_cmd.resolve_address(None) == "http://127.0.0.1:1"
    rc = submit_cmd.cmd_submit(build_parser().parse_args(
        ["submit", "--status", "raysubmit_x", "--address", f"http://127.0.0.1:{port}"]))
    err = capsys.readouterr().err
    assert rc == 2 and f"127.0.0.1:{port}" in err and "127.0.0.1:1 " not in err and "Traceback" not in err
    assert submit_cmd.resolve_address(None, {}) == "http://127.0.0.1:8265"


def test_is_excluded():
    ex = [".venv", ".cache", "runs", ".git", "**/__pycache__", "docs/*.png"]
    assert submit_cmd.is_excluded(".cache/demo/model", ex) == ".cache"
    assert submit_cmd.is_excluded("cluster/__pycache__/x.pyc", ex) == "**/__pycache__"
    assert submit_cmd.is_excluded("docs/a.png", ex) == "docs/*.png"
    assert submit_cmd.is_excluded("configs/rlvr-arith.yaml", ex) is None
    assert submit_cmd.is_excluded("data/runs.jsonl", ex) is None
