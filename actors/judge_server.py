"""JudgeServer actor: owns one vLLM OpenAI-compatible server process on its node; logic in
rewards.judge.server. Killing the actor ends the server (it dies with its parent)."""
from __future__ import annotations

import os
import tempfile

import ray

from rewards.judge.config import ServeSpec
from rewards.judge.server import VLLMServer


@ray.remote
class JudgeServer:
    def __init__(self, spec: ServeSpec, served_name: str):
        self.label = f"judge-server[{served_name}]"  # its repr: what the dashboard and log lines show
        log = os.path.join(tempfile.gettempdir(), "threefold-judges", f"{served_name}-{os.getpid()}.log")
        self.server = VLLMServer(spec, served_name, log)
        self.server.start()

    def __repr__(self) -> str:
        return self.label

    def ready(self) -> str:
        """Blocks until the health check passes; returns the URL other nodes reach it at."""
        self.server.wait_ready()
        return f"http://{ray.util.get_node_ip_address()}:{self.server.port}/v1"

    def healthy(self) -> bool:
        return self.server.healthy()

    def restart(self) -> str:
        self.server.stop()
        self.server.start()
        return self.ready()

    def kill_server(self) -> None:
        """Stops the server but keeps the actor (fault injection in tests; `restart` brings it back)."""
        self.server.stop()

    def stop(self) -> None:
        self.server.stop()
