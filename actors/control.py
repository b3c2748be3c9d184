"""RunControl: a run's mailbox, reachable by name from any machine that can reach the cluster. It holds
the latest status the controller pushed and the scale requests clients left; the rules (names,
validation, merging, formatting) live in cluster/control.py."""
from __future__ import annotations

import ray


@ray.remote(num_cpus=0)
class RunControl:
    def __init__(self, status: dict):
        self.label = f"run-control[{status.get('run', '')}]"  # its repr: what the dashboard shows
        self._status = dict(status)
        self._pending: dict[str, int] = {}

    def __repr__(self) -> str:
        return self.label

    def update(self, fields: dict) -> None:
        """The controller's push: these fields replace the ones held."""
        self._status.update(fields)

    def status(self) -> dict:
        return dict(self._status)

    def request_scale(self, sizes: dict[str, int]) -> dict[str, int]:
        """A client's request (validated on its side); an earlier one for another pool stays. Returns
        everything pending."""
        self._pending.update(sizes)
        return dict(self._pending)

    def take_scale(self) -> dict[str, int]:
        """The pending requests, once: the controller takes them before a step."""
        out, self._pending = self._pending, {}
        return out
