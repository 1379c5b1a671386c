"""Registry models: the network's catalogue (specs, templates, components, container
registries, assets and asset registries, inference servers)."""

from apps.registries.models.assets import Asset, AssetRegistry
from apps.registries.models.components import Component
from apps.registries.models.containers import ContainerRegistry
from apps.registries.models.inference import InferenceServer
from apps.registries.models.specs import Spec, Template

__all__ = [
    "Asset",
    "AssetRegistry",
    "Component",
    "ContainerRegistry",
    "InferenceServer",
    "Spec",
    "Template",
]
