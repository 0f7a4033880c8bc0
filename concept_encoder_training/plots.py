"""Pictures of a set of runs (matplotlib, no display needed): training curves and task scores.

- `plot_training_curves`: effective rank (the seed's form, on the fixed batch of 320 training documents) and task
  loss against the training step, one line per pretraining run, read from its `trainer_state.json`;
- `plot_scores`: every task's score per model, bars with the standard deviation over fine-tuning seeds as error
  bars, and the random-init level of each task drawn as a dashed line.

`python -m concept_encoder_training.registry plot --runs_dir DIR` draws both from the run folders under DIR.
"""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a training machine
import matplotlib.pyplot as plt  # noqa: E402

RANK_KEY = "eval_concept_effective_rank"
LOSS_KEYS = ("task_loss", "loss")
LEVEL_COLORS = (
    "tab:red",
    "tab:orange",
    "tab:purple",
    "tab:brown",
)  # concept encoders log the task part of the loss; other models only `loss`


def training_curves(trainer_state: str | Path) -> dict[str, list[tuple[int, float]]]:
    """`{"effective_rank": [(step, value), ...], "task_loss": [...]}` from a run's `trainer_state.json`."""
    history = json.loads(Path(trainer_state).read_text(encoding="utf-8"))["log_history"]
    rank = [(entry["step"], entry[RANK_KEY]) for entry in history if RANK_KEY in entry]
    loss = []
    for entry in history:
        key = next((key for key in LOSS_KEYS if key in entry), None)
        if key is not None:
            loss.append((entry["step"], entry[key]))
    return {"effective_rank": rank, "task_loss": loss}


def plot_training_curves(curves: dict[str, dict[str, list[tuple[int, float]]]], path: str | Path) -> Path:
    """One figure, two panels (effective rank, task loss) against the step; `curves` maps a run's label to
    `training_curves(...)`. Runs without rank points (BERT) appear only in the loss panel."""
    figure, (rank_axis, loss_axis) = plt.subplots(1, 2, figsize=(12, 4.5))
    for label, curve in curves.items():
        for axis, name in ((rank_axis, "effective_rank"), (loss_axis, "task_loss")):
            if curve[name]:
                steps, values = zip(*curve[name])
                axis.plot(steps, values, marker="." if len(steps) < 30 else None, label=label)
    rank_axis.set(title="Concept effective rank (sum σ / max σ, 320 training documents)", xlabel="step", ylabel="rank")
    loss_axis.set(title="Task loss (training)", xlabel="step", ylabel="loss")
    for axis in (rank_axis, loss_axis):
        axis.grid(alpha=0.3)
    handles, labels = loss_axis.get_legend_handles_labels()
    if labels:
        figure.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), fontsize=8)
    else:
        loss_axis.text(0.5, 0.5, "no loss logged", ha="center", transform=loss_axis.transAxes)
    figure.tight_layout(rect=(0, 0.12, 1, 1))
    return _save(figure, path)


def plot_scores(
    scores: dict[str, dict[str, tuple[float, float]]],
    random_levels: dict[str, dict[str, float]],
    path: str | Path,
    title: str = "Scores per model (mean ± std over fine-tuning seeds)",
) -> Path:
    """One panel per task; `scores` maps a model to `{task: (mean, std)}`, `random_levels` a random-init model's
    label to `{task: mean}` (one dashed line each)."""
    tasks = list(dict.fromkeys(task for by_task in scores.values() for task in by_task))
    models = list(scores)
    columns = min(len(tasks), 3) or 1
    rows = -(-len(tasks) // columns) or 1
    figure, axes = plt.subplots(rows, columns, figsize=(max(5 * columns, 8), 3.8 * rows), squeeze=False)
    for axis, task in zip(axes.flat, tasks):
        present = [model for model in models if task in scores[model]]
        means = [scores[model][task][0] for model in present]
        stds = [scores[model][task][1] for model in present]
        axis.bar(range(len(present)), means, yerr=stds, capsize=3, color="tab:blue", alpha=0.8)
        for color, (label, levels) in zip(LEVEL_COLORS, random_levels.items()):
            if task in levels:
                axis.axhline(levels[task], color=color, linestyle="--", linewidth=1, label=label)
        if any(task in levels for levels in random_levels.values()):
            axis.legend(fontsize=6, loc="lower right")
        axis.set_xticks(range(len(present)), present, rotation=60, ha="right", fontsize=7)
        axis.set_title(task, fontsize=9)
        axis.grid(axis="y", alpha=0.3)
    for axis in list(axes.flat)[len(tasks) :]:
        axis.set_visible(False)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return _save(figure, path)


def _save(figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
