"""PNG plots of a run, drawn with matplotlib's object API on the Agg canvas: no display, no pyplot state.

Each function writes one file and returns its path; the report embeds whatever a head's `plots` returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..core.lazy import skm
from .metrics import ECE_BINS, confusion, expected_calibration_error

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 110
# Above this many labels, per-cell numbers and per-class legends stop being readable.
MAX_ANNOTATED = 12


def save(fig: Figure, path: Path) -> Path:
    """Every PNG a run writes goes through here: same resolution, folder made, margins fitted."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    return path


def curves(log_history: list[dict], metric: str | None, folder: Path) -> list[tuple[str, Path]]:
    """Training and validation loss over steps, and the chosen validation metric over steps (Trainer's log_history)."""
    out = []
    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e and "step" in e]
    valid = [(e["step"], e["eval_loss"]) for e in log_history if "eval_loss" in e and "step" in e]
    if train or valid:
        fig = new_figure(figsize=(6.4, 4.0))
        ax = fig.add_subplot()
        for points, name, style in ((train, "train", "-"), (valid, "validation", "o-")):
            if points:
                ax.plot(*zip(*points), style, label=name)
        ax.set(title="Loss", xlabel="optimizer step", ylabel="cross-entropy loss")
        ax.grid(alpha=0.3)
        ax.legend()
        out.append(("Loss", save(fig, folder / "loss.png")))
    key = f"eval_{metric}"
    points = [(e["step"], e[key]) for e in log_history if e.get(key) is not None and "step" in e]
    if metric and metric != "loss" and points:
        fig = new_figure(figsize=(6.4, 4.0))
        ax = fig.add_subplot()
        ax.plot(*zip(*points), "o-", color="tab:green")
        ax.set(title=f"Validation {metric}", xlabel="optimizer step", ylabel=metric)
        ax.grid(alpha=0.3)
        out.append((f"Validation {metric}", save(fig, folder / f"{metric.replace(':', '_')}.png")))
    return out


def gap(rows: list[tuple[int, float, float]], path: Path) -> Path:
    """Validation minus training loss at each evaluation: a gap that widens while training loss falls is overfitting."""
    fig = new_figure(figsize=(6.4, 4.0))
    ax = fig.add_subplot()
    steps = [r[0] for r in rows]
    ax.plot(steps, [r[2] - r[1] for r in rows], "o-", color="tab:red")
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set(title="Generalisation gap", xlabel="optimizer step", ylabel="validation loss - training loss")
    ax.grid(alpha=0.3)
    return save(fig, path)


def confusion_matrix(matrix, labels: list[str], path: Path, split: str) -> Path:
    """Counts beside row-normalised rates (each row sums to 1: the recall of that gold label on the diagonal)."""
    matrix = np.asarray(matrix)
    rows = matrix.sum(axis=1, keepdims=True)
    rates = np.divide(matrix, rows, out=np.zeros(matrix.shape, dtype=float), where=rows > 0)
    n = len(labels)
    side = min(10.0, max(4.0, 0.45 * n + 2.0))  # inches per panel; 28 labels still fit at font size 7
    fig = new_figure(figsize=(2 * side + 1.0, side))
    for ax, values, title, fmt in (
        (fig.add_subplot(1, 2, 1), matrix, f"Confusion matrix ({split}, counts)", "d"),
        (fig.add_subplot(1, 2, 2), rates, f"Confusion matrix ({split}, row-normalised)", ".2f"),
    ):
        image = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if fmt != "d" else None)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        ax.set(title=title, xlabel="predicted label", ylabel="gold label", xticks=range(n), yticks=range(n))
        small = {"fontsize": 7} if n > MAX_ANNOTATED else {}
        ax.set_xticklabels(labels, rotation=45 if n > 2 else 0, ha="right" if n > 2 else "center", **small)
        ax.set_yticklabels(labels, **small)
        if n <= MAX_ANNOTATED:
            top = values.max() if values.size else 0
            for i in range(n):
                for j in range(n):
                    ax.text(j, i, format(values[i, j], fmt), ha="center", va="center",
                            color="white" if values[i, j] > top / 2 else "black")
    return save(fig, path)


def _one_vs_rest_curves(y_true, probs, labels):
    """(name, y_binary, scores) per curve: the second label for two classes, each class present in gold otherwise."""
    if probs.shape[1] == 2:
        return [(labels[1], y_true == 1, probs[:, 1])]
    return [(labels[c], y_true == c, probs[:, c]) for c in np.unique(y_true)]


def _draw_roc(ax, name, positive, scores, style, many) -> float:
    fpr, tpr, _ = skm.roc_curve(positive, scores)
    area = skm.auc(fpr, tpr)
    ax.plot(fpr, tpr, label=f"{name} (AUC {area:.3f})", **style)
    return area


def _draw_pr(ax, name, positive, scores, style, many) -> float:
    precision, recall, _ = skm.precision_recall_curve(positive, scores)
    area = skm.average_precision_score(positive, scores)
    line = ax.step(recall, precision, where="post", label=f"{name} (AP {area:.3f}, base rate {positive.mean():.2f})", **style)
    if not many:
        # A random ranking scores the positive rate: the floor to compare a curve against.
        ax.axhline(positive.mean(), ls=":", color=line[0].get_color(), alpha=0.6)
    return area


@dataclass(frozen=True)
class Curve:
    """What differs between one-vs-rest curve plots: how one label's curve is drawn, and the words around it."""

    title: str  # of the plot with one curve or a legend; also the report's caption
    many_title: str  # of the plot with too many classes for a legend
    area: str  # the summary `draw` returns, averaged over classes in `many_title`
    file: str
    draw: Callable  # (ax, name, positive, scores, line style, many) -> that curve's area
    xlabel: str
    ylabel: str
    legend: str  # where the legend sits: the corner the curves leave empty
    chance: bool = False  # draw the diagonal a random ranking follows


ROC = Curve("ROC curve", "ROC curves", "AUC", "roc.png", _draw_roc, "false positive rate", "true positive rate", "lower right", chance=True)
PR = Curve("Precision-recall curve", "Precision-recall", "AP", "pr.png", _draw_pr, "recall", "precision", "lower left")


def one_vs_rest(curve: Curve, y_true, probs, labels: list[str], path: Path, split: str) -> Path | None:
    """`curve` of the positive (second) label, or one-vs-rest per class; None when gold has a single class."""
    if len(np.unique(y_true)) < 2:
        return None
    fig = new_figure(figsize=(6.0, 5.5))
    ax = fig.add_subplot()
    chosen = _one_vs_rest_curves(y_true, probs, labels)
    many = len(chosen) > MAX_ANNOTATED
    style = {"lw": 0.8, "alpha": 0.6} if many else {}
    areas = [curve.draw(ax, name, positive, scores, style, many) for name, positive, scores in chosen]
    if curve.chance:
        ax.plot([0, 1], [0, 1], "--", color="grey", label="chance")
    # Too many classes for a legend: the title gives their one-vs-rest macro mean instead.
    title = f"{curve.many_title}, one vs rest ({split}, {len(chosen)} classes, macro {curve.area} {np.mean(areas):.3f})" if many else f"{curve.title} ({split})"
    ax.set(title=title, xlabel=curve.xlabel, ylabel=curve.ylabel, xlim=(0, 1), ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    if not many:
        ax.legend(loc=curve.legend, fontsize="small")
    return save(fig, path)


def reliability(y_true, probs, path: Path, split: str, bins: int = ECE_BINS) -> Path:
    """Accuracy against confidence per bin (the diagonal is perfect calibration), with how many examples fall in each bin."""
    confidence = probs.max(axis=-1)
    correct = probs.argmax(axis=-1) == y_true
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.searchsorted(edges[1:-1], confidence)
    counts = np.bincount(which, minlength=bins)
    accuracy = np.divide(np.bincount(which, weights=correct, minlength=bins), counts, out=np.zeros(bins), where=counts > 0)
    fig = new_figure(figsize=(6.0, 6.5))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    width = edges[1] - edges[0]
    top.bar(edges[:-1][counts > 0], accuracy[counts > 0], width=width, align="edge", edgecolor="black", alpha=0.8, label="accuracy in bin")
    top.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    # The top probability is never below 1/classes (0.5 for two): start the axis at the bin holding that.
    low = edges[np.searchsorted(edges, 1.0 / probs.shape[1], side="right") - 1]
    ece = expected_calibration_error(y_true, probs, bins)
    top.set(title=f"Reliability diagram ({split}, ECE {ece:.3f})", ylabel="accuracy", ylim=(0, 1), xlim=(low, 1))
    top.grid(alpha=0.3)
    top.legend(loc="upper left", fontsize="small")
    bottom.bar(edges[:-1], counts, width=width, align="edge", edgecolor="black", color="tab:gray")
    bottom.set(xlabel="confidence (top predicted probability)", ylabel="examples")
    return save(fig, path)


def classification(y_true, probs, labels: list[str], folder: Path, split: str, y_pred=None) -> list[tuple[str, Path]]:
    y_true = np.asarray(y_true)
    probs = np.asarray(probs, dtype=np.float64)
    out = [("Confusion matrix", confusion_matrix(confusion(y_true, probs.argmax(axis=-1) if y_pred is None else y_pred, labels), labels, folder / "confusion_matrix.png", split))]
    for curve in (ROC, PR):
        path = one_vs_rest(curve, y_true, probs, labels, folder / curve.file, split)
        if path is not None:
            out.append((curve.title, path))
    out.append(("Reliability diagram", reliability(y_true, probs, folder / "reliability.png", split)))
    return out


def regression_scatter(y_true, y_pred, path: Path, split: str) -> Path:
    """Predicted against true values: points on the diagonal are exact; a flat cloud means the model learned the mean."""
    y_true, y_pred = np.asarray(y_true, dtype=float).reshape(-1), np.asarray(y_pred, dtype=float).reshape(-1)
    fig = new_figure(figsize=(6.0, 6.0))
    ax = fig.subplots()
    ax.scatter(y_true, y_pred, s=12, alpha=0.6, edgecolors="none")
    low, high = float(min(y_true.min(), y_pred.min())), float(max(y_true.max(), y_pred.max()))
    ax.plot([low, high], [low, high], "--", color="grey", label="predicted = true")
    rmse = float(np.sqrt(np.mean((y_true - y_pred) ** 2)))
    ax.set(title=f"Predicted vs true ({split}, RMSE {rmse:.3g}, n={len(y_true)})", xlabel="true value", ylabel="predicted value")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize="small")
    return save(fig, path)


def compare(runs: dict[str, list[dict]], metric: str, path: Path) -> Path:
    """Validation loss and validation `metric` over steps, one line per run."""
    fig = new_figure(figsize=(11.0, 4.2))
    for ax, key, title in ((fig.add_subplot(1, 2, 1), "eval_loss", "Validation loss"), (fig.add_subplot(1, 2, 2), f"eval_{metric}", f"Validation {metric}")):
        for name, history in runs.items():
            points = [(e["step"], e[key]) for e in history if e.get(key) is not None and "step" in e]
            if points:
                ax.plot(*zip(*points), "o-", label=name)
        ax.set(title=title, xlabel="optimizer step", ylabel=key.removeprefix("eval_"))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    return save(fig, path)


def new_figure(**kwargs) -> Figure:
    from matplotlib.figure import Figure

    return Figure(**kwargs)
