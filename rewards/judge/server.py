"""A judge model served with vLLM's OpenAI-compatible API in a child process (no Ray here; the
actor that owns one on a cluster node is actors.judge_server.JudgeServer).

The server runs in its own process group and dies with its owner (PR_SET_PDEATHSIG), so a
killed actor never leaves a server holding a port or memory. Judges reach it only through its
HTTP API, the path a hosted judge takes.
"""
from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from rewards.judge.config import ServeSpec

# vLLM on CPU next to other actors: small KV cache, no thread pinning.
CPU_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind", "TOKENIZERS_PARALLELISM": "false"}
PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    os.setsid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: stop() still ends it


class VLLMServer:
    def __init__(self, spec: ServeSpec, served_name: str, log_path: str | Path, host: str = "0.0.0.0"):
        self.spec, self.name, self.host, self.log_path = spec, served_name, host, Path(log_path)
        self.port = spec.port or free_port()
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        s = self.spec
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(s.model_dir),
               "--served-model-name", self.name, "--dtype", s.dtype, "--max-model-len", str(s.max_model_len),
               "--host", self.host, "--port", str(self.port)]
        if s.enforce_eager:
            cmd.append("--enforce-eager")
        if s.chat_template:
            cmd += ["--chat-template", str(s.chat_template)]
        return cmd + list(s.args)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command(), env={**os.environ, **CPU_ENV}, stdout=log,
                                         stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)

    def healthy(self, timeout_s: float = 2.0) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v1/models", timeout=timeout_s) as r:
                return r.status == 200
        except OSError:
            return False

    def wait_ready(self) -> None:
        """Until /v1/models answers; raises with the log's tail if the server exits or is too slow."""
        deadline = time.monotonic() + self.spec.startup_timeout_s
        while not self.healthy():
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"judge server {self.name!r} exited (code {self.proc and self.proc.returncode}):\n"
                                   + self.log_tail())
            if time.monotonic() > deadline:
                raise RuntimeError(f"judge server {self.name!r} not ready after {self.spec.startup_timeout_s:g} s:\n"
                                   + self.log_tail())
            time.sleep(1.0)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """SIGTERM the server's process group (the API server and its engine), SIGKILL after 30 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        except ProcessLookupError:
            pass
