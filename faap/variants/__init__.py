"""The variant registry: one small file per variant, looked up by name."""

from __future__ import annotations

from faap.errors import ConfigError, did_you_mean
from faap.variants.adversarial import Adversarial
from faap.variants.base import StepState, Variant
from faap.variants.infonce import InfoNCE

VARIANTS: dict[str, type[Variant]] = {v.name: v for v in (Adversarial, InfoNCE)}


def get_variant(name: str) -> type[Variant]:
    if name not in VARIANTS:
        raise ConfigError(f"unknown variant '{name}' (known: {', '.join(VARIANTS)})" + did_you_mean(name, VARIANTS))
    return VARIANTS[name]


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


__all__ = ["VARIANTS", "Variant", "StepState", "get_variant", "make_config"]
