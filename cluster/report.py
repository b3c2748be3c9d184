"""Run report: Markdown summary plus a PNG of held-out accuracy and reward against step."""
from __future__ import annotations

from pathlib import Path

from cluster.metrics import read_metrics


def plot(records: list[dict], out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in records if r.get("reward_mean") is not None]
    evals = [r for r in records if r.get("eval_accuracy") is not None]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    ax.plot([r["step"] for r in train], [r["reward_mean"] for r in train], color="tab:blue",
            alpha=0.45, label="rollout reward (mean)")
    ax.plot([r["step"] for r in evals], [r["eval_accuracy"] for r in evals], "o-", color="tab:red",
            label="held-out greedy accuracy")
    ax.set_xlabel("RL step (policy version)")
    ax.set_ylabel("fraction correct")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title("threefold RLVR run")
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)


def write_report(run_dir: Path, title: str, wall_s: float) -> Path:
    records = read_metrics(run_dir / "metrics.jsonl")
    plot(records, run_dir / "report.png")
    train = [r for r in records if r.get("reward_mean") is not None]
    evals = [r for r in records if r.get("eval_accuracy") is not None]
    first, last = evals[0]["eval_accuracy"], evals[-1]["eval_accuracy"]
    phases = ("generate", "reward", "learn", "sync")
    mean = {p: sum(r[f"time_{p}"] for r in train) / max(len(train), 1) for p in phases}
    lines = [
        f"# {title}", "",
        f"- steps: {len(train)}; wall time: {wall_s / 60:.1f} min",
        f"- held-out greedy accuracy: {first:.1%} at step 0 → {last:.1%} at step {evals[-1]['step']} "
        f"({(last - first) * 100:+.1f} points)",
        f"- rollout reward, last 10 steps: {sum(r['reward_mean'] for r in train[-10:]) / max(len(train[-10:]), 1):.3f}",
        "- mean seconds per step: " + ", ".join(f"{p} {mean[p]:.2f}" for p in phases),
        "", "![accuracy and reward](report.png)", "",
        "| step | held-out accuracy |", "|---:|---:|",
        *[f"| {r['step']} | {r['eval_accuracy']:.1%} |" for r in evals],
    ]
    out = run_dir / "report.md"
    out.write_text("\n".join(lines) + "\n")
    return out
