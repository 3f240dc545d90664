"""
What makes a saved directory loadable where this package is not installed: the model card, `auto_map`, the code files
copied for `trust_remote_code=True`, and for a saved `JanusProImagePipeline` its loader module and the
`model_index.json` entries diffusers resolves through it.

This module imports nothing of the package but `model_card` (which imports nothing of it): `save_pretrained` copies
both (with the code that imports them) into saved directories, where they must run on transformers, diffusers and torch
alone. It works on the objects handed to it.
"""

import ast
import json
import os
import sys

from transformers.dynamic_module_utils import custom_object_save

from .model_card import write_model_card


# `register_for_auto_class` records one Auto class only; the full model answers both (see registration.py).
MODEL_AUTO_CLASSES = ("AutoModel", "AutoModelForImageTextToText")


def prepare_model_directory(model, save_directory: str | os.PathLike, training_summary=None) -> None:
    """
    Make what `PreTrainedModel.save_pretrained(save_directory)` is about to write loadable without this package: name
    the model's class in `config.auto_map` for `AutoModel` and `AutoModelForImageTextToText` (transformers then copies
    the model's module and the modules it imports next to the weights), and write the model card
    (`model_card.model_card_for`: base model, how to load, `training_summary` if given) unless the directory already
    has a README.md. Call it before `save_pretrained` writes `config.json`.
    """
    if model.is_remote_code():
        class_reference = f"{type(model).__module__.rsplit('.', 1)[-1]}.{type(model).__name__}"
        auto_map = dict(getattr(model.config, "auto_map", None) or {})
        auto_map.update(dict.fromkeys(MODEL_AUTO_CLASSES, class_reference))
        model.config.auto_map = auto_map
    os.makedirs(save_directory, exist_ok=True)
    if not os.path.exists(os.path.join(save_directory, "README.md")):
        write_model_card(save_directory, model, training_summary=training_summary)


def check_pipeline_can_be_saved(pipeline) -> None:
    """
    Refuse, before anything is written, a pipeline whose model diffusers would not save as a loadable component: a
    PEFT-wrapped model (`get_peft_model`) is no `PreTrainedModel`, so diffusers would log "cannot be saved" and record
    `"model": [null, null]`; a model carrying adapters through transformers' PEFT integration would save the adapter
    weights alone into `model/`, which the pipeline cannot load as a model.
    """
    model = pipeline.model
    how = (
        "Merge the adapter into the weights first, e.g. `pipe.model = pipe.model.merge_and_unload()` (PEFT), then save "
        "the pipeline; or save the adapter alone with `pipe.model.save_pretrained(adapter_directory)` and the base "
        "pipeline separately."
    )
    if "peft" in sys.modules and isinstance(model, sys.modules["peft"].PeftModel):
        raise ValueError(
            f"`save_pretrained` cannot save the pipeline's model: it is a PEFT `{type(model).__name__}` around a "
            f"`{type(model.get_base_model()).__name__}`, and a saved pipeline holds a plain model. {how}"
        )
    if getattr(model, "_hf_peft_config_loaded", False):
        raise ValueError(
            "`save_pretrained` cannot save the pipeline's model: it carries PEFT adapters "
            f"({sorted(model.peft_config)}), and `save_pretrained` would write the adapter weights alone into "
            f"`model/`. {how}"
        )


def _component_module_name(save_directory: str | os.PathLike, name: str, library: str | None) -> str | None:
    """The module file a saved component's folder carries for `library` (`pkg.modeling_x` -> `modeling_x`), if any."""
    if library is None:
        return None
    module = library.rsplit(".", 1)[-1]
    return module if os.path.isfile(os.path.join(save_directory, name, f"{module}.py")) else None


# The saved pipeline's loader module: named in `model_index.json` as diffusers names an out-of-tree pipeline class.
PIPELINE_LOADER_MODULE = "pipeline"

PIPELINE_LOADER_HEADER = '''"""
Loads `{class_name}` for `DiffusionPipeline.from_pretrained(<this directory>, trust_remote_code=True)`.
Written by transformers-janus, which need not be installed: the pipeline's module and the modules it imports sit
beside this file. diffusers copies only the modules that a loader imports itself (not the ones they import in turn),
hence one import per module. `model/` and `processor/` carry their own code (transformers remote code, named in `model_index.json`).
"""

'''


def _first_definition(path: str) -> str | None:
    """The first public class or function a module file defines (what the loader imports from it)."""
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), filename=path)
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and not node.name.startswith("_"):
            return node.name
    return None


def write_pipeline_loader(pipeline, save_directory: str | os.PathLike) -> str:
    """
    Copy the pipeline's module and every module it imports (relative imports, followed as transformers follows them
    for remote code) into `save_directory`, and write beside them the loader module that imports each of them. Returns
    the loader's module name. The copied code needs transformers, diffusers and torch only.
    """
    copied = custom_object_save(pipeline, save_directory) or []
    pipeline_module = type(pipeline).__module__.rsplit(".", 1)[-1]
    lines = []
    for path in sorted({os.path.basename(str(path)) for path in copied}):
        module = path[: -len(".py")]
        if module == pipeline_module:
            continue
        name = _first_definition(os.path.join(save_directory, path))
        if name is None:
            lines.append(f"from .{module} import *  # noqa: F401,F403")
        else:
            lines.append(f"from .{module} import {name}  # noqa: F401")
    lines.append(f"from .{pipeline_module} import {type(pipeline).__name__}")
    source = PIPELINE_LOADER_HEADER.format(class_name=type(pipeline).__name__) + "\n".join(lines)
    source += f'\n\n\n__all__ = ["{type(pipeline).__name__}"]\n'
    with open(os.path.join(save_directory, f"{PIPELINE_LOADER_MODULE}.py"), "w", encoding="utf-8") as handle:
        handle.write(source)
    return PIPELINE_LOADER_MODULE


def package_pipeline_directory(pipeline, save_directory: str | os.PathLike) -> None:
    """
    Make a directory just written by `DiffusionPipeline.save_pretrained` (its `model_index.json` included) load with
    diffusers' generic `DiffusionPipeline.from_pretrained(directory, trust_remote_code=True)` where this package cannot
    be imported:

    - the pipeline's code is copied beside `model_index.json` with its loader module (`write_pipeline_loader`), and
      `_class_name` becomes `[<loader module>, <class>]`, the form diffusers reads as "the class in `<module>.py` of
      this directory";
    - each component recorded under its full module path (`transformers_janus.modeling_janus_pro`) is recorded under
      the module file its own folder carries (`modeling_janus_pro`, copied there by the component's `save_pretrained`
      as transformers remote code), which diffusers loads as a custom component of that folder;
    - the pipeline's card (`model_card.model_card_for`) is written as README.md unless the directory has one.
    """
    loader_module = write_pipeline_loader(pipeline, save_directory)
    index_path = os.path.join(save_directory, pipeline.config_name)
    with open(index_path, encoding="utf-8") as handle:
        model_index = json.load(handle)
    model_index["_class_name"] = [loader_module, type(pipeline).__name__]
    for name, entry in model_index.items():
        if name.startswith("_") or not isinstance(entry, list) or len(entry) != 2:
            continue
        module = _component_module_name(save_directory, name, entry[0])
        if module is not None:
            model_index[name] = [module, entry[1]]
    with open(index_path, "w", encoding="utf-8") as handle:
        json.dump(model_index, handle, indent=2, sort_keys=True)
        handle.write("\n")
    if not os.path.exists(os.path.join(save_directory, "README.md")):
        write_model_card(save_directory, pipeline)


__all__ = [
    "check_pipeline_can_be_saved",
    "package_pipeline_directory",
    "prepare_model_directory",
    "write_pipeline_loader",
]
