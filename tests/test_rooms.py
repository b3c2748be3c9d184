"""DESIGN.md's rooms: learners/ and rewards/ never import ray (directly or via another room)."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {"learners": {"ray", "actors", "cluster", "vllm"}, "rewards": {"ray", "actors", "cluster", "learners", "vllm"}}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    mods = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            mods.add(node.module.split(".")[0])
    return mods


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_room_imports(room):
    files = sorted((ROOT / room).rglob("*.py"))
    assert files, f"{room}/ has no Python files"
    bad = {str(f.relative_to(ROOT)): sorted(imported_modules(f) & FORBIDDEN[room]) for f in files}
    assert not {k: v for k, v in bad.items() if v}
