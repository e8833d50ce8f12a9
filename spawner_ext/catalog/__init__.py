"""The catalogue: workspaces, members, images, instance types, resource groups."""

from .loader import CatalogError, load_catalog
from .models import Accelerator, Catalog, Image, InstanceType, Kind, ResourceGroup, Storage, Workspace

__all__ = ["Accelerator", "Catalog", "CatalogError", "Image", "InstanceType", "Kind",
           "ResourceGroup", "Storage", "Workspace", "load_catalog"]
