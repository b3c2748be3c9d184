"""Starts or joins Ray, runs the controller, writes the report."""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from cluster.config import RunConfig
from cluster.config_loader import ConfigError
from cluster.control import NAMESPACE

# What never travels to a cluster with the code (the Ray working_dir limit is 500 MiB).
SHIP_EXCLUDES = [".venv", ".cache", "runs", ".git", "**/__pycache__"]


def run_dir_for(cfg: RunConfig, default_name: str) -> Path:
    name = cfg.logging.run_name or f"{default_name}-{datetime.now():%Y%m%d-%H%M%S}"
    path = cfg.logging.output_dir / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def init_ray(address: str | None, quiet: bool = False) -> None:
    import ray

    if ray.is_initialized():
        return
    root = str(Path(__file__).resolve().parent.parent)
    # Actors import the top-level packages; ship the repo root as working_dir when joining a
    # cluster, and put it on PYTHONPATH for the embedded one. The namespace is where `threefold
    # status` finds the run's control actor.
    if "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ:  # inside `ray job submit`: inherit the job's runtime_env
        ray.init(address=address or "auto", namespace=NAMESPACE)
    elif address:
        from cluster.control_link import use_token
        from cluster.ray_jobs import SubmitError, auth_headers

        try:  # the token, looked up as `threefold submit` and `status` do
            use_token(auth_headers(address)[0])
        except SubmitError as e:
            raise ValueError(str(e)) from None
        ray.init(address=address, namespace=NAMESPACE, runtime_env={"working_dir": root, "excludes": SHIP_EXCLUDES})
    else:
        env = {"PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
        ctx = ray.init(runtime_env={"env_vars": env}, namespace=NAMESPACE, log_to_driver=False,
                       include_dashboard=not quiet or None, logging_level="WARNING" if quiet else "INFO")
        if ctx.dashboard_url and not quiet:
            print(f"Ray dashboard: http://{ctx.dashboard_url} (threefold_* metrics under Metrics)", flush=True)


def check_capacity(cfg: RunConfig) -> None:
    """Fail fast instead of waiting forever for actors that cannot be placed."""
    import ray

    have = ray.cluster_resources().get("CPU", 0.0)
    rw = cfg.reward
    # sources a Serve application scores start no actors of the run's
    sources = [s for s in rw.training_sources() + (rw.eval or []) if not s.serve_app]
    verifiers = rw.verifiers if any(s.type in ("math", "code", "exact") for s in sources) else 0
    reward_cpus = sum(s.cpus * s.scorers for s in sources if s.type == "rm") + judge_cpus(sources)
    need = cfg.resources.cpus_needed(cfg.rollout.num_generators, verifiers, reward_cpus)
    if need > have:
        raise ConfigError(
            f"the actors need {need:g} Ray CPUs (rollout.num_generators × resources.generator_cpus + "
            f"resources.learners × resources.learner_cpus + reward.verifiers × resources.verifier_cpus + each rm source's "
            f"scorers × cpus + each judge source's pool and served judges) but this cluster has {have:g}; "
            "lower those values (fractions are fine) or add nodes"
        )


def judge_cpus(sources) -> float:
    """CPUs of the judge pools and of the judge servers a run starts (from each judges YAML)."""
    from cluster.judge_cmd import load_judges

    total = 0.0
    for src in sources:  # each judge source starts its own pool and servers
        if src.type != "judge":
            continue
        ens = load_judges(src.judges)
        total += ens.pool.size * ens.pool.num_cpus + sum(j.serve.num_cpus for j in ens.judges if j.serve)
    return total


def train(cfg: RunConfig, default_name: str, address: str | None = None, resume: str | None = None) -> dict:
    """A run from scratch, or (`resume`: a run directory or URI) from its newest complete checkpoint."""
    from cluster.controller import Controller, write_config
    from cluster.report import write_report

    start = time.time()
    found = None
    if resume:
        from cluster import resume as resume_mod

        found = resume_mod.locate(resume)
        resume_mod.check_config(found[0].manifest(found[1]), cfg, resume)
        run_dir = resume_run_dir(cfg, resume, default_name)
    else:
        run_dir = run_dir_for(cfg, default_name)
    write_config(cfg, run_dir)
    init_ray(address)
    if not address:
        check_capacity(cfg)
    controller = Controller(cfg, run_dir, resume=found)
    try:
        with stop_signals(controller, cfg.checkpoint.on_signal):
            summary = controller.run(cfg.logging.progress)
    finally:
        controller.shutdown()
    summary["report"] = str(write_report(run_dir, f"threefold run {run_dir.name}", time.time() - start,
                                         summary["eval_sources"]))
    summary["run_dir"] = str(run_dir)
    return summary


def resume_run_dir(cfg: RunConfig, source: str, default_name: str) -> Path:
    """A local run directory continues in place; a run on storage continues in a local directory
    named after it, starting from its metrics.jsonl."""
    from cluster.storage import _resolve, is_uri

    if not is_uri(source) and (Path(source) / "config.json").is_file():
        return Path(source)
    name = cfg.logging.run_name or source.rstrip("/").rsplit("/", 1)[-1] or default_name
    run_dir = cfg.logging.output_dir / name
    run_dir.mkdir(parents=True, exist_ok=True)
    fs, root = _resolve(source)
    try:
        with fs.open_input_stream(root.rstrip("/") + "/metrics.jsonl") as f:
            (run_dir / "metrics.jsonl").write_bytes(f.read())
    except (FileNotFoundError, OSError):
        pass  # a store without the run's record: the metrics start at the checkpoint
    return run_dir


@contextmanager
def stop_signals(controller, enabled: bool):
    """SIGTERM/SIGINT (what `ray job stop` and Ctrl-C send) ask the controller to checkpoint after the
    current step and stop; a second one stops at once."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, _frame):
        if controller.stop_signal:
            raise KeyboardInterrupt
        controller.stop_signal = signal.Signals(signum).name
        print(f"threefold: {controller.stop_signal}: writing a checkpoint after this step, then stopping "
              "(send it again to stop at once)", file=sys.stderr, flush=True)

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
