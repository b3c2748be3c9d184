"""deploy/: every manifest parses, has the fields its consumer requires, and agrees with the others,
with pyproject.toml and with configs/cluster-gpu.yaml. Pure file checks: no Ray, no Kubernetes."""
from __future__ import annotations

import importlib.util
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
IMAGE = "threefold:latest"
SECRET = ("threefold-ray-auth", "auth_token")
GPU, VERIFIERS, JUDGES = "gpu", "cpu-verifiers", "cpu-judges"
MARKERS = {VERIFIERS: "verifier_node", JUDGES: "judge_node"}
ENTRYPOINT = ["python", "-m", "cluster.cli", "train"]


def load(rel: str):
    return yaml.safe_load((ROOT / rel).read_text())


@pytest.fixture(scope="module")
def raycluster():
    return load("deploy/kuberay/raycluster.yaml")


@pytest.fixture(scope="module")
def rayjob():
    return load("deploy/kuberay/rayjob.yaml")


@pytest.fixture(scope="module")
def rayservice():
    return load("deploy/kuberay/rayservice.yaml")


@pytest.fixture(scope="module")
def launcher():
    return load("deploy/cluster-launcher.yaml")


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return (DEPLOY / "Dockerfile").read_text()


@pytest.fixture(scope="module")
def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def run_config(rayjob, tmp_path_factory):
    """The RayJob's config, validated by the real schema. Its demo paths must exist at validation
    time: used as is when `threefold demo-assets` has run here, else pointed at stand-ins."""
    import os

    from cluster.config_loader import load_config

    path = ROOT / shlex.split(rayjob["spec"]["entrypoint"])[len(ENTRYPOINT)]
    raw = yaml.safe_load(path.read_text())
    paths = {"policy.model_dir": raw["policy"]["model_dir"], "data.train_path": raw["data"]["train_path"],
             "data.eval_path": raw["data"]["eval_path"]}
    overrides = {}
    if not all((ROOT / p).exists() for p in paths.values()):
        stub = tmp_path_factory.mktemp("assets")
        (stub / "model").mkdir()
        (stub / "model" / "config.json").write_text("{}")
        (stub / "rows.jsonl").write_text("")
        overrides = {"policy.model_dir": str(stub / "model"), "data.train_path": str(stub / "rows.jsonl"),
                     "data.eval_path": str(stub / "rows.jsonl")}
    cwd = os.getcwd()
    os.chdir(ROOT)  # relative paths resolve where the driver runs: the repository root
    try:
        return load_config(path, overrides)
    finally:
        os.chdir(cwd)


def cluster_specs(raycluster, rayjob, rayservice=None):
    return [("RayCluster", raycluster["spec"]), ("RayJob", rayjob["spec"]["rayClusterSpec"])] + \
        ([("RayService", rayservice["spec"]["rayClusterConfig"])] if rayservice else [])


def groups(spec) -> dict:
    return {g["groupName"]: g for g in spec["workerGroupSpecs"]}


def quantity(q) -> float:
    s = str(q)
    return float(s[:-1]) / 1000 if s.endswith("m") else float(s)


def start_resources(group) -> dict:
    """rayStartParams `resources`: a JSON object inside a quoted JSON string, as KubeRay wants it."""
    raw = group["rayStartParams"].get("resources")
    if raw is None:
        return {}
    value = json.loads(raw)
    return json.loads(value) if isinstance(value, str) else value


def containers(spec) -> list[dict]:
    pods = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
    return [c for p in pods for c in p["spec"]["containers"] + p["spec"].get("initContainers", [])]


def ray_version(dockerfile: str) -> str:
    m = re.search(r"^ARG RAY_VERSION=(\S+)$", dockerfile, re.M)
    assert m, "deploy/Dockerfile must pin ARG RAY_VERSION=<version>"
    return m.group(1)


# --- KubeRay -------------------------------------------------------------------------------------

@pytest.mark.parametrize("rel, kind", [("deploy/kuberay/raycluster.yaml", "RayCluster"),
                                       ("deploy/kuberay/rayjob.yaml", "RayJob"),
                                       ("deploy/kuberay/rayservice.yaml", "RayService")])
def test_kuberay_header(rel, kind):
    doc = load(rel)
    assert doc["apiVersion"] == "ray.io/v1"
    assert doc["kind"] == kind
    assert doc["metadata"]["name"]


def test_cluster_specs_have_head_and_the_three_groups(raycluster, rayjob):
    for where, spec in cluster_specs(raycluster, rayjob):
        head = spec["headGroupSpec"]
        assert isinstance(head["rayStartParams"], dict), where
        assert head["template"]["spec"]["containers"][0]["image"], where
        assert set(groups(spec)) == {GPU, VERIFIERS, JUDGES}, where
        for name, g in groups(spec).items():
            assert isinstance(g["rayStartParams"], dict), (where, name)
            assert g["template"]["spec"]["containers"][0]["image"], (where, name)
            assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"], (where, name)


def test_rayjob_cluster_equals_raycluster(raycluster, rayjob):
    assert rayjob["spec"]["rayClusterSpec"] == raycluster["spec"]


def test_rayservice_runs_deploy_serve_yaml_on_the_raycluster(raycluster, rayservice):
    """Same cluster spec, serveConfigV2 = deploy/serve.yaml, its builders exist, its custom resources
    are the worker groups' markers, and the head exposes the Serve HTTP port."""
    spec = rayservice["spec"]
    assert spec["rayClusterConfig"] == raycluster["spec"]
    serve = yaml.safe_load(spec["serveConfigV2"])
    assert serve == load("deploy/serve.yaml")
    apps = {a["name"]: a for a in serve["applications"]}
    assert set(apps) == {"verifiers", "rm", "judges"}
    builders = (DEPLOY / "serve_apps.py").read_text()
    for name, app in apps.items():
        module, _, fn = app["import_path"].partition(":")
        assert module == "deploy.serve_apps" and re.search(rf"^def {fn}\(", builders, re.M), name
        assert app["route_prefix"] == f"/{name}"
        for dep in app["deployments"]:
            assert set(dep["ray_actor_options"].get("resources", {})) <= set(MARKERS.values()), name
    assert apps["verifiers"]["deployments"][0]["ray_actor_options"]["resources"] == {MARKERS[VERIFIERS]: 0.01}
    assert apps["judges"]["deployments"][0]["ray_actor_options"]["resources"] == {MARKERS[JUDGES]: 0.01}
    head = raycluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert {"containerPort": serve["http_options"]["port"], "name": "serve"} in head["ports"]


def test_head_takes_no_work_and_serves_the_dashboard(raycluster):
    head = raycluster["spec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    c = head["template"]["spec"]["containers"][0]
    assert 8265 in [p["containerPort"] for p in c["ports"]]
    for kind in ("requests", "limits"):
        assert "nvidia.com/gpu" not in c["resources"].get(kind, {})
    assert "num-gpus" not in head["rayStartParams"]


def test_start_params_match_pod_resources(raycluster):
    for name, g in groups(raycluster["spec"]).items():
        params, res = g["rayStartParams"], g["template"]["spec"]["containers"][0]["resources"]
        assert quantity(params["num-cpus"]) == quantity(res["limits"]["cpu"]), name
        gpus = res["limits"].get("nvidia.com/gpu")
        if name == GPU:
            assert gpus is not None and int(params["num-gpus"]) == int(gpus) > 0
            assert int(res["requests"].get("nvidia.com/gpu", gpus)) == int(gpus)
        else:
            assert gpus is None and "num-gpus" not in params, name


def test_custom_resources_in_kuberay(raycluster):
    gs = groups(raycluster["spec"])
    for name, marker in MARKERS.items():
        assert start_resources(gs[name]) == {marker: 1}, name
    assert not set(start_resources(gs[GPU])) & set(MARKERS.values())


def test_rayjob_entrypoint_lifecycle_and_runtime_env(rayjob):
    spec = rayjob["spec"]
    argv = shlex.split(spec["entrypoint"])
    assert argv[:len(ENTRYPOINT)] == ENTRYPOINT and len(argv) == len(ENTRYPOINT) + 1
    assert (ROOT / "cluster" / "cli.py").is_file()
    assert (ROOT / argv[-1]).is_file()
    # KubeRay pastes the entrypoint into a shell line in the submitter; operators would run there.
    assert not re.search(r"[;&|<>`$]", spec["entrypoint"])
    assert spec["shutdownAfterJobFinishes"] is True

    env = yaml.safe_load(spec["runtimeEnvYAML"])
    shared = load("deploy/runtime_env.yaml")
    assert {".venv", ".cache", "runs"} <= set(env["excludes"])
    assert set(shared["excludes"]) <= set(env["excludes"])
    assert env["env_vars"] == shared["env_vars"]
    assert "working_dir" not in env  # the code and demo assets come from the image (see rayjob.yaml)


def test_runtime_env_packages_are_in_the_image(pyproject):
    """deploy/runtime_env.yaml's pip list is left out of the RayJob because the image installs
    pyproject's dependencies; that holds only while each of them is one."""
    deps = {Requirement(r).name.lower() for r in pyproject["project"]["dependencies"]}
    for req in load("deploy/runtime_env.yaml")["pip"]:
        assert Requirement(req).name.lower() in deps, req


def test_ray_token_comes_from_a_secret(raycluster, rayjob):
    envs = [("autoscaler", raycluster["spec"]["autoscalerOptions"]["env"])]
    for where, spec in cluster_specs(raycluster, rayjob):
        envs += [(f"{where}:{c['name']}", c.get("env", [])) for c in containers(spec)]
    envs += [("submitter", c.get("env", [])) for c in rayjob["spec"]["submitterPodTemplate"]["spec"]["containers"]]
    for where, env in envs:
        by_name = {e["name"]: e for e in env}
        assert by_name["RAY_AUTH_MODE"]["value"] == "token", where
        token = by_name["RAY_AUTH_TOKEN"]
        assert "value" not in token, where
        ref = token["valueFrom"]["secretKeyRef"]
        assert (ref["name"], ref["key"]) == SECRET, where


# --- cluster launcher ----------------------------------------------------------------------------

def test_launcher_required_fields(launcher):
    assert launcher["cluster_name"]
    assert launcher["provider"]["type"]
    types = launcher["available_node_types"]
    assert launcher["head_node_type"] in types
    assert set(types) == {launcher["head_node_type"], GPU, VERIFIERS, JUDGES}
    assert types[launcher["head_node_type"]]["resources"]["CPU"] == 0
    assert launcher["max_workers"] >= sum(t.get("max_workers", 0) for t in types.values())


def test_launcher_matches_ray_schema(launcher):
    jsonschema = pytest.importorskip("jsonschema")
    spec = importlib.util.find_spec("ray")  # locates the package without importing Ray
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("ray is not installed")
    schema = Path(spec.submodule_search_locations[0]) / "autoscaler" / "ray-schema.json"
    jsonschema.validate(launcher, json.loads(schema.read_text()))


def test_launcher_mirrors_kuberay(launcher, raycluster):
    types, gs = launcher["available_node_types"], groups(raycluster["spec"])
    for name, g in gs.items():
        t = types[name]
        assert (t["min_workers"], t["max_workers"]) == (g["minReplicas"], g["maxReplicas"]), name
        assert t["resources"]["CPU"] == quantity(g["rayStartParams"]["num-cpus"]), name
        assert t["resources"].get("GPU", 0) == int(g["rayStartParams"].get("num-gpus", 0)), name
    for name, marker in MARKERS.items():
        assert types[name]["resources"][marker] == start_resources(gs[name])[marker] == 1
    for name in (launcher["head_node_type"], GPU):
        assert not set(types[name]["resources"]) & set(MARKERS.values()), name


# --- everything together -------------------------------------------------------------------------

def test_one_image_everywhere(raycluster, rayjob, rayservice, launcher, dockerfile):
    images = {c["image"] for _, spec in cluster_specs(raycluster, rayjob, rayservice) for c in containers(spec)}
    images |= {c["image"] for c in rayjob["spec"]["submitterPodTemplate"]["spec"]["containers"]}
    docker = launcher["docker"]
    images |= {docker[k] for k in ("image", "head_image", "worker_image") if k in docker}
    images |= {t["docker"][k] for t in launcher["available_node_types"].values() if "docker" in t
               for k in ("image", "worker_image") if k in t["docker"]}
    assert images == {IMAGE}
    assert set(re.findall(r"docker build .*-t (\S+)", dockerfile)) == {IMAGE}
    assert IMAGE in (DEPLOY / "README.md").read_text()


def test_ray_version_agrees_with_pyproject(dockerfile, pyproject, raycluster):
    version = ray_version(dockerfile)
    ray = [Requirement(r) for r in pyproject["project"]["dependencies"] if Requirement(r).name == "ray"]
    assert len(ray) == 1 and ray[0].specifier, "pyproject.toml must require ray with a version"
    assert ray[0].specifier.contains(version), f"Ray {version} does not satisfy pyproject's {ray[0]}"
    assert re.search(r"^FROM rayproject/ray:\$\{RAY_VERSION\}-", dockerfile, re.M)
    assert 'echo "ray==${RAY_VERSION}"' in dockerfile  # pip may not replace the base image's Ray
    assert raycluster["spec"]["rayVersion"] == version


def test_dockerfile_installs_what_the_nodes_need(dockerfile, pyproject):
    extras = pyproject["project"]["optional-dependencies"]
    assert re.search(r"^ARG EXTRAS=gpu$", dockerfile, re.M)
    assert "vllm" in {Requirement(r).name for r in extras["gpu"]} and "cpu" in extras
    assert re.search(r"apt-get install .*bubblewrap", dockerfile)
    assert re.search(r"^WORKDIR /home/ray/threefold$", dockerfile, re.M)
    copied = set()
    for line in re.findall(r"^COPY (.+)$", dockerfile, re.M):
        args = [a for a in line.split() if not a.startswith("--")]
        copied |= {a.rstrip("/") for a in args[:-1]}
    packages = {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages | {"configs", "pyproject.toml", "README.md"} <= copied
    assert not copied & {".", "", ".venv", ".cache", "runs", ".git"}  # keep those out of the image


def test_run_config_fits_the_gpu_group(run_config, raycluster, launcher):
    res, n = run_config.resources, run_config.rollout.num_generators
    assert res.generator_gpus > 0 and res.learner_gpus > 0
    need_gpus = n * res.generator_gpus + res.learner_gpus
    gpu = groups(raycluster["spec"])[GPU]
    per_node = int(gpu["rayStartParams"]["num-gpus"])
    assert per_node * gpu["maxReplicas"] >= need_gpus
    assert max(res.generator_gpus, res.learner_gpus) <= per_node  # an actor cannot span nodes
    assert launcher["available_node_types"][GPU]["resources"]["GPU"] * \
        launcher["available_node_types"][GPU]["max_workers"] >= need_gpus


def test_run_config_passes_the_capacity_check_at_minimum_size(run_config, raycluster):
    """cluster.run.check_capacity compares the actors' CPUs with the cluster's at start, before any
    autoscaling: the minReplicas workers must hold them."""
    verifiers = run_config.reward.verifiers
    need = run_config.resources.cpus_needed(run_config.rollout.num_generators, verifiers)
    have = sum(quantity(g["rayStartParams"]["num-cpus"]) * g["minReplicas"]
               for g in raycluster["spec"]["workerGroupSpecs"])
    assert have >= need


ROLE_GROUPS = {"verifiers": VERIFIERS, "judges": JUDGES, "reward_models": JUDGES}  # the group meant for a role


def test_run_config_custom_resources_match_the_manifests(run_config, raycluster, launcher):
    """resources.custom asks only for markers the node groups declare, each role for its own group's
    marker, in amounts a node holds; a verifier's CPUs fit one verifier node; nothing is pinned to the
    gpu nodes or the head."""
    res, gs, types = run_config.resources, groups(raycluster["spec"]), launcher["available_node_types"]
    assert {role: set(wants) for role, wants in res.custom.items()} == {
        role: {MARKERS[group]} for role, group in ROLE_GROUPS.items()}
    for role, wants in res.custom.items():
        group = ROLE_GROUPS[role]
        assert getattr(res.placement, role) is not None, role  # the schema insists; the test says why it matters
        for name, amount in wants.items():
            assert 0 < amount <= start_resources(gs[group])[name] == types[group]["resources"][name], (role, name)
    verifier_node = quantity(gs[VERIFIERS]["rayStartParams"]["num-cpus"])
    assert res.verifier_cpus <= verifier_node == types[VERIFIERS]["resources"]["CPU"]
    for name in (GPU, launcher["head_node_type"]):
        assert not {k for wants in res.custom.values() for k in wants} & set(types[name]["resources"]), name


def test_run_config_places_the_trainers_on_the_gpu_group(run_config, raycluster):
    """generators and learner share one PACK group: at the configured size it fits one gpu node."""
    res, n = run_config.resources, run_config.rollout.num_generators
    assert res.placement.generators == res.placement.learner == "PACK"
    gpu = groups(raycluster["spec"])[GPU]["rayStartParams"]
    assert n * res.generator_gpus + res.learner_gpus <= int(gpu["num-gpus"])
    assert n * res.generator_cpus + res.learner_cpus <= quantity(gpu["num-cpus"])
