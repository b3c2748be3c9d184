"""deploy/ as files: the README names each one, none holds a secret value, and no YAML repeats a key
(safe_load would keep the last of two silently). The manifests' meaning: test_manifests.py."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def test_no_secret_values_in_deploy():
    for path in DEPLOY.rglob("*"):
        if path.is_file():
            text = path.read_text()
            assert not re.search(r"RAY_AUTH_TOKEN\s*[=:]\s*[\"']?[\w-]{8,}", text), path
            assert not re.search(r"^\s*(ENV|ARG)\s+\w*(TOKEN|SECRET|PASSWORD|API_KEY)(?=[=\s])", text, re.M), path


def test_readme_covers_every_deploy_file():
    readme = (DEPLOY / "README.md").read_text()
    for path in sorted(DEPLOY.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.name != "README.md":
            assert str(path.relative_to(DEPLOY)) in readme, path
    assert not re.search(r"\]\((https?:)?//", readme)  # stands alone: no links out of the repo
    for cmd in ("kubectl apply", "ray up", "docker build"):
        assert cmd in readme, cmd


class _UniqueKeyLoader(yaml.SafeLoader):
    pass


def _unique_mapping(loader, node, deep=False):
    keys = [loader.construct_object(k, deep=deep) for k, _ in node.value]
    dup = sorted({str(k) for k in keys if keys.count(k) > 1})
    if dup:
        raise yaml.constructor.ConstructorError(None, None, f"duplicate key {dup[0]!r}", node.start_mark)
    return loader.construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


@pytest.mark.parametrize("rel", ["deploy/kuberay/raycluster.yaml", "deploy/kuberay/rayjob.yaml",
                                 "deploy/kuberay/rayservice.yaml", "deploy/serve.yaml",
                                 "deploy/cluster-launcher.yaml", "configs/cluster-gpu.yaml"])
def test_no_duplicate_keys(rel):
    """safe_load keeps the last of two equal keys, so a pasted second `resources:` would pass silently."""
    doc = yaml.load((ROOT / rel).read_text(), Loader=_UniqueKeyLoader)
    assert doc == yaml.safe_load((ROOT / rel).read_text())
