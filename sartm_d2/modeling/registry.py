"""Looking a registered part up by the name a config gives, with an error that lists the choices."""

from __future__ import annotations

from detectron2.utils.registry import Registry

__all__ = ["lookup", "registered_names"]


def registered_names(registry: Registry) -> list[str]:
    """The names a config may use: each part's short ``name`` when it has one, else its class name."""
    return sorted(getattr(obj, "name", "") or key for key, obj in registry)


def lookup(registry: Registry, name: str, key: str):
    """The object registered as ``name`` (a short ``name`` attribute or the registered class name).

    Args:
        registry: a detectron2 Registry.
        name: the config value.
        key: the config key, for the error message.
    """
    for registered, obj in registry:
        if name in (registered, getattr(obj, "name", None)):
            return obj
    raise ValueError(
        f"{key} {name!r} is not registered; choose one of {registered_names(registry)} (or register your "
        "own part with the registry's @register() before building the model)."
    )
