"""The labelling app's HTTP API (FastAPI TestClient; the browser tests are in tests/e2e)."""
import pytest
from fastapi.testclient import TestClient

from cluster.label_app import create_app
from rewards.human.store import LabelStore

XSS = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">'


@pytest.fixture
def setup(tmp_path):
    db = tmp_path / "labels.sqlite"
    s = LabelStore(db, k=2)
    s.add_pairs([{"id": "p0", "prompt": "q0", "response_a": XSS, "response_b": "plain"},
                 {"id": "p1", "prompt": "q1", "response_a": "a1", "response_b": "b1"}])
    tokens = {n: s.add_annotator(n) for n in ("ann", "bob")}
    s.close()
    return TestClient(create_app(str(db))), tokens, db


def auth(token):
    return {"Authorization": f"Bearer {token}"}


def test_no_or_wrong_token_is_refused(setup):
    client, tokens, _ = setup
    for headers in ({}, auth("nope"), {"Authorization": tokens["ann"]}, auth(tokens["ann"] + "x")):
        for method, path in (("get", "/api/me"), ("get", "/api/next"), ("post", "/api/label")):
            r = getattr(client, method)(path, headers=headers, **({"json": {"pair_id": "p0", "choice": "left"}}
                                                                    if method == "post" else {}))
            assert r.status_code == 401, (path, headers)
    assert client.get("/api/me", headers=auth(tokens["ann"])).json()["annotator"] == "ann"


def test_label_flow_and_progress(setup):
    client, tokens, db = setup
    h = auth(tokens["ann"])
    first = client.get("/api/next", headers=h).json()
    assert first["progress"] == {"labelled": 0, "remaining": 2}
    assert first["pair"]["id"] == "p0" and {first["pair"]["left"], first["pair"]["right"]} == {XSS, "plain"}
    r = client.post("/api/label", headers=h, json={"pair_id": "p0", "choice": "left", "reason": "why"})
    assert r.status_code == 200 and r.json()["progress"] == {"labelled": 1, "remaining": 1}
    assert r.json()["choice"] == ("A" if first["pair"]["left"] == XSS else "B")
    # labelled pair is never shown again, and a stale answer for it is refused
    assert client.get("/api/next", headers=h).json()["pair"]["id"] == "p1"
    assert client.post("/api/label", headers=h, json={"pair_id": "p0", "choice": "left"}).status_code == 409
    # the other annotator still gets p0 (k = 2) and never sees ann's labels
    other = client.get("/api/next", headers=auth(tokens["bob"])).json()
    assert other["pair"]["id"] == "p0" and other["progress"]["labelled"] == 0
    assert [(row["annotator"], row["reason"]) for row in LabelStore(db).labels()] == [("ann", "why")]


def test_bad_body_is_rejected(setup):
    client, tokens, _ = setup
    h = auth(tokens["ann"])
    client.get("/api/next", headers=h)
    assert client.post("/api/label", headers=h, json={"pair_id": "p0", "choice": "A"}).status_code == 409
    assert client.post("/api/label", headers=h, json={"pair_id": "p0"}).status_code == 422
    assert client.post("/api/label", headers=h, json={"pair_id": "p0", "choice": "tie", "reason": "x" * 501}).status_code == 422


def test_page_has_no_inline_script_and_strict_csp(setup):
    client, _, _ = setup
    r = client.get("/")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "img-src 'none'" in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert '<script src="/static/label.js" defer></script>' in r.text
    assert r.text.count("<script") == 1
    js = client.get("/static/label.js").text
    assert "innerHTML" not in js and "textContent = current.left" in js
    assert client.get("/static/../label_app.py").status_code == 404
