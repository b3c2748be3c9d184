"""deploy/grafana/threefold.json: valid, and in step with the metrics the run exports."""
import json
import re
from pathlib import Path

from cluster.ray_metrics import METRICS

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "threefold.json"


def queried() -> dict[str, set[str]]:
    """{metric name as the run declares it: the label names the dashboard uses with it}."""
    out: dict[str, set[str]] = {}
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel["targets"]:
            for name in re.findall(r"ray_(threefold_\w+)", target["expr"]):
                base = re.sub(r"_bucket$", "", name)
                out.setdefault(base, set()).update(re.findall(r"\{\{(\w+)\}\}", target["legendFormat"]))
                out[base].update(re.findall(r"by \(([^)]*)\)", target["expr"])[0].replace(" ", "").split(",")
                                 if "by (" in target["expr"] else [])
    return out


def test_dashboard_is_grafana_json_with_a_run_variable():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["panels"] and {v["name"] for v in dash["templating"]["list"]} == {"datasource", "run"}
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dash["panels"]:
        for target in panel["targets"]:
            assert 'run=~"$run"' in target["expr"], (panel["title"], target["expr"])
            assert target["expr"].count("(") == target["expr"].count(")")


def test_every_exported_metric_has_a_panel_and_every_panel_metric_exists():
    used = queried()
    assert set(used) == set(METRICS), (set(METRICS) ^ set(used))
    for name, labels in used.items():
        assert labels - {"le", "run"} <= set(METRICS[name][1]), (name, labels)
