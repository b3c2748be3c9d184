"""Run report: Markdown summary plus a PNG of the held-out score, the rollout reward and the KL
against step, with a table per reward source."""
from __future__ import annotations

from pathlib import Path

from cluster.metrics import read_metrics


def plot(records: list[dict], out_png: Path, eval_label: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in records if r.get("reward_mean") is not None]
    evals = [r for r in records if r.get("eval_accuracy") is not None]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    rewards = [r["reward_mean"] for r in train]
    ax.plot([r["step"] for r in train], rewards, color="tab:blue", alpha=0.45, label="rollout reward (mean)")
    ax.plot([r["step"] for r in evals], [r["eval_accuracy"] for r in evals], "o-", color="tab:red", label=eval_label)
    ax.set_xlabel("RL step (policy version)")
    ax.set_ylabel("score")
    ax.set_ylim(min([0.0, *rewards]) - 0.02, max([1.0, *rewards]) + 0.02)
    ax.grid(alpha=0.3)
    kl = [r for r in train if r.get("kl") is not None]
    if kl:
        ax2 = ax.twinx()
        ax2.plot([r["step"] for r in kl], [r["kl"] for r in kl], color="tab:green", alpha=0.6, label="KL to reference (per token)")
        ax2.set_ylabel("KL (nats per token)")
        ax2.set_ylim(bottom=0)
        ax2.legend(loc="lower right", bbox_to_anchor=(1.0, 0.18))
    ax.legend(loc="lower right")
    ax.set_title("threefold run")
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)


def source_table(train: list[dict]) -> list[str]:
    names = sorted({n for r in train for n in (r.get("sources") or {})})
    if not names:
        return []
    lines = ["", "| reward source | type | samples | mean score | failures | dropped | seconds per step |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for name in names:
        rows = [r["sources"][name] for r in train if name in (r.get("sources") or {})]
        means = [m["mean"] for m in rows if m["mean"] is not None]
        lines.append(f"| {name} | {rows[0]['type']} | {sum(m['samples'] for m in rows)} | "
                     f"{sum(means) / len(means) if means else float('nan'):.3f} | {sum(m['failures'] for m in rows)} | "
                     f"{sum(m['dropped'] for m in rows)} | {sum(m['seconds'] for m in rows) / len(rows):.3f} |")
    return lines


def eval_table(evals: list[dict]) -> list[str]:
    """Held-out score per evaluation, with one column per eval source when there are several."""
    names = sorted({n for r in evals for n in (r.get("eval_by_source") or {})})
    names = names if len(names) > 1 else []
    cell = lambda v: "–" if v is None else f"{v:.1%}"  # noqa: E731
    return [f"| step | held-out score |{''.join(f' {n} |' for n in names)}",
            f"|---:|---:|{'---:|' * len(names)}",
            *[f"| {r['step']} | {r['eval_accuracy']:.1%} |"
              + "".join(f" {cell((r.get('eval_by_source') or {}).get(n))} |" for n in names) for r in evals]]


def write_report(run_dir: Path, title: str, wall_s: float, eval_sources: str = "math") -> Path:
    records = read_metrics(run_dir / "metrics.jsonl")
    eval_label = f"held-out greedy score ({eval_sources})"
    plot(records, run_dir / "report.png", eval_label)
    train = [r for r in records if r.get("reward_mean") is not None]
    evals = [r for r in records if r.get("eval_accuracy") is not None]
    first, last = evals[0]["eval_accuracy"], evals[-1]["eval_accuracy"]
    phases = ("generate", "reward", "learn", "sync")
    mean = {p: sum(r[f"time_{p}"] for r in train) / max(len(train), 1) for p in phases}
    kl = [r["kl"] for r in train[-50:] if r.get("kl") is not None]
    lines = [
        f"# {title}", "",
        f"- steps: {len(train)}; wall time: {wall_s / 60:.1f} min",
        f"- {eval_label}: {first:.1%} at step 0 → {last:.1%} at step {evals[-1]['step']} "
        f"({(last - first) * 100:+.1f} points)",
        f"- rollout reward, last 10 steps: {sum(r['reward_mean'] for r in train[-10:]) / max(len(train[-10:]), 1):.3f}",
        *([f"- KL to the reference, mean of the last {len(kl)} steps: {sum(kl) / len(kl):.4f} nats per token"] if kl else []),
        "- mean seconds per step: " + ", ".join(f"{p} {mean[p]:.2f}" for p in phases),
        *source_table(train),
        "", "![held-out score, reward and KL](report.png)", "",
        *eval_table(evals),
    ]
    out = run_dir / "report.md"
    out.write_text("\n".join(lines) + "\n")
    return out
