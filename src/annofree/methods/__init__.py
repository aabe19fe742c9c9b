"""The glue of each method: build modules and losses from a config, one training step, data.

``get_method(name)`` is the one door to a method's class; the built-in methods register themselves when this
package is imported (a method of one's own: ``@register`` on its class, in a module imported before use).
"""

from annofree.errors import UserError
from annofree.methods import densesiam, groupvit  # noqa: F401  (registers the methods)
from annofree.methods.base import _REGISTRY, LoaderSpec, Method, register


def get_method(name: str) -> type[Method]:
    """The registered method called ``name``; a one-line error naming the known ones otherwise."""
    if name not in _REGISTRY:
        raise UserError(f"unknown method {name!r} (known: {', '.join(sorted(_REGISTRY)) or 'none'})")
    return _REGISTRY[name]


__all__ = ["LoaderSpec", "Method", "get_method", "register"]
