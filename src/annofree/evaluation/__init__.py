"""Evaluation: confusion-matrix metrics and zero-shot evaluation on segmentation folders."""

from annofree.evaluation.folder import evaluate_folder, evaluate_samples
from annofree.evaluation.metrics import ConfusionMatrix

__all__ = ["ConfusionMatrix", "evaluate_folder", "evaluate_samples"]
