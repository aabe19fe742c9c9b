"""annofree: semantic segmentation without pixel labels (GroupViT and DenseSiam)."""

__version__ = "0.1.0"
