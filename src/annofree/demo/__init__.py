"""The main job (``annofree demo``): segmentation without pixel labels, learned on a laptop CPU.

Two demos, each a short script around the library: :mod:`annofree.demo.groupvit` (zero-shot segmentation
that emerges from captions) and :mod:`annofree.demo.densesiam` (unsupervised segmentation from unlabelled
images, against k-means baselines). Their recipes and shared steps are in :mod:`annofree.demo.recipes`.
"""

from annofree.demo.densesiam import run_densesiam_demo
from annofree.demo.groupvit import run_groupvit_demo
from annofree.demo.recipes import METHODS, default_config_path, load_demo_config, route_overrides

__all__ = ["METHODS", "default_config_path", "load_demo_config", "route_overrides", "run_densesiam_demo",
           "run_groupvit_demo"]  # fmt: skip
