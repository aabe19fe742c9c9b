"""Evaluation: confusion-matrix metrics, zero-shot evaluation on segmentation folders, and Hungarian
cluster-to-class matching for unsupervised segmentation."""

from annofree.evaluation.clusters import evaluate_cluster_folder, evaluate_cluster_samples
from annofree.evaluation.folder import evaluate_folder, evaluate_samples
from annofree.evaluation.hungarian import ClusterScores, evaluate_clusters, match_clusters, remap_predictions
from annofree.evaluation.metrics import ConfusionMatrix

__all__ = [
    "ClusterScores",
    "ConfusionMatrix",
    "evaluate_cluster_folder",
    "evaluate_cluster_samples",
    "evaluate_clusters",
    "evaluate_folder",
    "evaluate_samples",
    "match_clusters",
    "remap_predictions",
]
