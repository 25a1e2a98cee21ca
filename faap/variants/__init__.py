"""The variant registry: one small file per variant, looked up by name.

Every module of this package is imported here, and defining a :class:`Variant` subclass with a
``name`` registers it: a new variant is one new file, nothing else to edit.
"""

from __future__ import annotations

import importlib
import pkgutil

from faap.errors import ConfigError, did_you_mean
from faap.variants.base import REGISTRY, StepState, Variant

for _module in pkgutil.iter_modules(__path__):  # sorted by name: the registry's order
    importlib.import_module(f"{__name__}.{_module.name}")

VARIANTS: dict[str, type[Variant]] = REGISTRY
"""name -> variant class (the same dict as ``base.REGISTRY``)."""


def get_variant(name: str) -> type[Variant]:
    if name not in VARIANTS:
        raise ConfigError(f"unknown variant '{name}' (known: {', '.join(VARIANTS)})" + did_you_mean(name, VARIANTS))
    return VARIANTS[name]


def variant_of_original(checkpoint: dict) -> str:
    """The variant an original training checkpoint came from (by the module state it holds), or ''."""
    found = [n for n, v in VARIANTS.items() if v.original_checkpoint_key and v.original_checkpoint_key in checkpoint]
    return found[0] if found else ""


def config_class(name: str):
    return get_variant(name).Config


def make_config(name: str, values: dict):
    """The validated config of variant ``name`` from a flat ``values`` mapping.

    A dataset folder may carry its own settings (``faap_config.yaml``, e.g. the synthetic
    benchmark's image sizes and budget): they apply beneath ``values``.
    """
    from faap.config import build_config, dataset_settings

    if values.get("data"):
        values = {**dataset_settings(values["data"]), **values}
    others = {n: v.Config for n, v in VARIANTS.items() if n != name}
    return build_config(config_class(name), values, others)


__all__ = ["VARIANTS", "Variant", "StepState", "get_variant", "make_config", "variant_of_original"]
