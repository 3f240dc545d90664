"""
Janus-Pro on the Hugging Face stack. Importing this package registers its classes with the Auto API.

The import itself is cheap: public names are resolved from their submodule on first access (as transformers'
`_LazyModule` does, but without importing transformers, so that `janus-pro --help` starts at once), and the Auto
registration runs as soon as transformers' Auto modules are imported (see [`registration`]).
"""

import importlib
import os
from typing import TYPE_CHECKING

from .registration import install_auto_registration, register_auto_classes


__version__ = "0.1.0"

# The model a fresh install runs with no network: a Janus-Pro trained from scratch on the shapes world
# (`training/shapes_recipe.py`, docs/shapes.md), shipped as package data. A local folder, so
# `JanusProImagePipeline.from_pretrained(DEFAULT_MODEL)` and `AutoModel...from_pretrained(DEFAULT_MODEL)` work offline.
DEFAULT_MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "janus-pro-shapes")

# Each public name, by the submodule that defines it. Only the top-level names: submodules import as usual.
_import_structure = {
    "configuration_janus_pro": ["JanusProConfig", "JanusProVQConfig"],
    "modeling_janus_pro": ["JanusProPreTrainedModel", "JanusProModel", "JanusProForConditionalGeneration"],
    "image_processing_janus_pro": ["JanusProImageProcessor"],
    "processing_janus_pro": ["JanusProProcessor"],
    "pipeline_janus_pro": ["JanusProImagePipeline"],
}

__all__ = [name for names in _import_structure.values() for name in names] + ["DEFAULT_MODEL", "register_auto_classes"]

if TYPE_CHECKING:
    from .configuration_janus_pro import JanusProConfig, JanusProVQConfig
    from .image_processing_janus_pro import JanusProImageProcessor
    from .modeling_janus_pro import JanusProForConditionalGeneration, JanusProModel, JanusProPreTrainedModel
    from .pipeline_janus_pro import JanusProImagePipeline
    from .processing_janus_pro import JanusProProcessor
else:
    _name_to_module = {name: module for module, names in _import_structure.items() for name in names}

    def __getattr__(name: str):
        if name not in _name_to_module:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{_name_to_module[name]}", __name__), name)
        globals()[name] = value  # later accesses skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(globals()) | set(__all__))


install_auto_registration()
