"""Pictures of a set of runs (matplotlib, no display needed): training curves and task scores.

- `plot_training_curves`: effective rank (the research log's form, on the evaluation batch the run measured) and task
  loss against the training step, one line per pretraining run in one colour across both panels, read from its
  `trainer_state.json`; the rank axis runs from 0 to the number of concepts C, drawn as the full-rank line;
- `plot_scores`: every task's score per model, bars with the standard deviation over fine-tuning seeds as error
  bars, the random-init level of each task as a dashed line and the majority-class level (always predicting the
  training set's most frequent label) as a dotted one. Every score given is drawn: none replaces another.

`distinguishing_labels` names runs by what differs between them (objective, recipe, ...), not by run ids that differ
only by their timestamp. `python -m concept_encoder.training.registry plot --runs_dir DIR` draws both from the run
folders under DIR.
"""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a training machine
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

RANK_KEY = "eval_concept_effective_rank"
LOSS_KEYS = ("task_loss", "loss")  # concept encoders log the task part of the loss; other models only `loss`
RUN_COLORS = "tab10"  # one colour per run, the same in every panel (then the 20 of tab20, then repeated)
LEVEL_COLORS = "Dark2"  # the random-init levels' dashed lines
MAJORITY_COLOR = "0.35"  # grey: the majority-class level's dotted line


def training_curves(trainer_state: str | Path, concept_num: int | None = None) -> dict:
    """`{"effective_rank": [(step, value), ...], "task_loss": [...], "concept_num": C}` from a run's
    `trainer_state.json`; `concept_num` (the most the rank can be) scales the rank axis."""
    history = json.loads(Path(trainer_state).read_text(encoding="utf-8"))["log_history"]
    rank = [(entry["step"], entry[RANK_KEY]) for entry in history if RANK_KEY in entry]
    loss = []
    for entry in history:
        key = next((key for key in LOSS_KEYS if key in entry), None)
        if key is not None:
            loss.append((entry["step"], entry[key]))
    return {"effective_rank": rank, "task_loss": loss, "concept_num": concept_num}


def colors_of(labels, palette: str = RUN_COLORS) -> dict[str, tuple]:
    """One colour per label, in order, from the qualitative `palette` (tab20 beyond tab10's ten, then repeated)."""
    labels = list(labels)
    colors = list(plt.get_cmap(palette).colors)
    if len(labels) > len(colors) and palette == RUN_COLORS:
        colors = list(plt.get_cmap("tab20").colors)
    return {label: colors[index % len(colors)] for index, label in enumerate(labels)}


def distinguishing_labels(descriptions: dict[str, dict]) -> dict[str, str]:
    """`{key: label}`: each run labelled by the fields whose values differ between the runs (`descriptions` maps a run
    id to its fields, e.g. objective, model type, concept losses), as `objective=tsdae, concept_losses=t_regs`. A run
    that no differing field tells apart from another keeps its key (the run id), so no two labels are equal."""
    fields = list(dict.fromkeys(field for description in descriptions.values() for field in description))
    differing = [field for field in fields if len({repr(d.get(field)) for d in descriptions.values()}) > 1]
    labels = {
        key: ", ".join(f"{field}={description.get(field)}" for field in differing) or key
        for key, description in descriptions.items()
    }
    repeated = {label for label in labels.values() if list(labels.values()).count(label) > 1}
    return {key: f"{label} ({key})" if label in repeated and label != key else label for key, label in labels.items()}


def plot_training_curves(curves: dict[str, dict], path: str | Path) -> Path:
    """One figure, two panels (effective rank, task loss) against the step; `curves` maps a run's label to
    `training_curves(...)`. Each run keeps one colour in both panels and in the one legend below them, which lists
    every run; runs without rank points (BERT) appear only in the loss panel."""
    figure, (rank_axis, loss_axis) = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = colors_of(curves)
    for label, curve in curves.items():
        for axis, name in ((rank_axis, "effective_rank"), (loss_axis, "task_loss")):
            if curve[name]:
                steps, values = zip(*curve[name])
                marker = "." if len(steps) < 30 else None
                axis.plot(steps, values, marker=marker, color=colors[label], label=label)
    concept_nums = sorted({curve["concept_num"] for curve in curves.values() if curve.get("concept_num")})
    for concept_num in concept_nums:  # the most a rank can be: where a run without collapse would sit
        rank_axis.axhline(concept_num, color="black", linestyle=":", linewidth=1)
        rank_axis.annotate(f"C = {concept_num}", (0, concept_num), xycoords=("axes fraction", "data"), fontsize=7,
                           xytext=(2, 2), textcoords="offset points")  # fmt: skip
    if concept_nums:
        rank_axis.set_ylim(0, max(concept_nums) * 1.08)
    else:
        rank_axis.set_ylim(bottom=0)
    rank_axis.set(title="Concept effective rank (sum σ / max σ) at each evaluation", xlabel="step", ylabel="rank")
    loss_axis.set(title="Task loss (training)", xlabel="step", ylabel="loss")
    for axis in (rank_axis, loss_axis):
        axis.grid(alpha=0.3)
    if not any(curve["task_loss"] for curve in curves.values()):
        loss_axis.text(0.5, 0.5, "no loss logged", ha="center", transform=loss_axis.transAxes)
    if curves:
        handles = [Line2D([], [], color=colors[label], marker=".", label=label) for label in curves]
        figure.legend(handles=handles, loc="lower center", ncol=min(len(handles), 3), fontsize=8)
    rows = -(-len(curves) // 3)
    figure.tight_layout(rect=(0, min(0.06 * rows + 0.04, 0.5), 1, 1))
    return _save(figure, path)


def plot_scores(
    scores: dict[str, dict[str, tuple[float, float]]],
    random_levels: dict[str, dict[str, float]],
    path: str | Path,
    title: str = "Scores per model (mean ± std over fine-tuning seeds)",
    majority_levels: dict[str, float] | None = None,
) -> Path:
    """One panel per task; `scores` maps a model to `{task: (mean, std)}` (one bar each, all drawn),
    `random_levels` a random-init model's label to `{task: mean}` (one dashed line each, every one drawn) and
    `majority_levels` a task to its majority-class score (a dotted line)."""
    majority_levels = majority_levels or {}
    tasks = list(dict.fromkeys(task for by_task in scores.values() for task in by_task))
    models = list(scores)
    level_colors = colors_of(random_levels, LEVEL_COLORS)
    columns = min(len(tasks), 3) or 1
    rows = -(-len(tasks) // columns) or 1
    figure, axes = plt.subplots(rows, columns, figsize=(max(5 * columns, 8), 3.8 * rows), squeeze=False)
    for axis, task in zip(axes.flat, tasks):
        present = [model for model in models if task in scores[model]]
        means = [scores[model][task][0] for model in present]
        stds = [scores[model][task][1] for model in present]
        axis.bar(range(len(present)), means, yerr=stds, capsize=3, color="tab:blue", alpha=0.8)
        for label, levels in random_levels.items():
            if task in levels:
                axis.axhline(levels[task], color=level_colors[label], linestyle="--", linewidth=1, label=label)
        if task in majority_levels:
            axis.axhline(majority_levels[task], color=MAJORITY_COLOR, linestyle=":", linewidth=1.5,
                         label="majority class")  # fmt: skip
        if axis.get_legend_handles_labels()[1]:
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
