// Model text is untrusted: it is only ever set with textContent, never as HTML.
"use strict";
let token = sessionStorage.getItem("threefold-token") || "";
let current = null;
let busy = false;

const $ = (id) => document.getElementById(id);

async function api(path, body) {
  const opts = { headers: { Authorization: "Bearer " + token } };
  if (body) {
    opts.method = "POST";
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw Object.assign(new Error(data.detail || r.statusText), { status: r.status });
  return data;
}

function showProgress(p) {
  $("done").textContent = String(p.labelled);
  $("remaining").textContent = String(p.remaining);
}

async function loadNext() {
  const data = await api("/api/next");
  showProgress(data.progress);
  current = data.pair;
  $("pair").hidden = !current;
  $("empty").hidden = !!current;
  if (current) {
    $("prompt").textContent = current.prompt;
    $("left").textContent = current.left;
    $("right").textContent = current.right;
    $("reason").value = "";
  }
}

async function answer(choice) {
  if (!current || busy) return;
  busy = true;
  try {
    await api("/api/label", { pair_id: current.id, choice: choice, reason: $("reason").value });
    $("error").textContent = "";
    await loadNext();
  } catch (e) {
    $("error").textContent = "Not saved: " + e.message;
  } finally {
    busy = false;
  }
}

async function signIn() {
  token = $("token").value.trim() || token;
  try {
    const me = await api("/api/me");
    sessionStorage.setItem("threefold-token", token);
    $("who").textContent = me.annotator;
    $("signin").hidden = true;
    $("work").hidden = false;
    $("signin-error").textContent = "";
    await loadNext();
  } catch (e) {
    sessionStorage.removeItem("threefold-token");
    $("signin-error").textContent = e.status === 401 ? "Unknown token: access refused." : "Error: " + e.message;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("signin-btn").addEventListener("click", signIn);
  $("token").addEventListener("keydown", (e) => { if (e.key === "Enter") signIn(); });
  for (const c of ["left", "right", "tie", "skip"]) $("btn-" + c).addEventListener("click", () => answer(c));
  document.addEventListener("keydown", (e) => {
    if ($("work").hidden || e.target === $("reason")) return;
    const choice = { "1": "left", "2": "right", "3": "tie", " ": "skip" }[e.key];
    if (choice) { e.preventDefault(); answer(choice); }
  });
  if (token) signIn();
});
