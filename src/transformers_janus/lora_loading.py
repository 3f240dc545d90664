"""
LoRA adapters on `JanusProImagePipeline`, with diffusers' loader API (`load_lora_weights`, `set_adapters`,
`fuse_lora`, `unfuse_lora`, `unload_lora_weights`, `disable_lora`, `enable_lora`, `delete_adapters`,
`get_active_adapters`, `get_list_adapters`), implemented on PEFT's public API.

The adapters are PEFT adapter folders (`adapter_config.json` + `adapter_model.safetensors`, as `PeftModel.
save_pretrained` and `training/train.py --use_peft` write them), local or on the Hub. They are injected into
`pipe.model` in place (`peft.inject_adapter_in_model`), so `pipe.model` stays a `JanusProForConditionalGeneration`:
the chat pipeline (`pipeline("image-text-to-text", model=pipe.model, ...)`), `generate` and `generate_images` all
run with the active adapters. transformers' own PEFT integration (`model.load_adapter`, `set_adapter`, ...) is not
used: transformers 5.24 requires peft >= 0.22 for it and refuses 0.21.

This module imports only torch and diffusers at module level (peft when a method runs): a saved pipeline copies it.
"""

import warnings

import torch
from diffusers.utils import logging


logger = logging.get_logger(__name__)

# What `load_lora_weights` passes on to the Hub download of the adapter's files.
HUB_KWARGS = ("revision", "subfolder", "cache_dir", "force_download", "local_files_only", "token", "proxies")
# PEFT saves adapter weights under the names they have inside a `PeftModel` (which wraps the model twice).
PEFT_MODEL_PREFIX = "base_model.model."


def _adapter_layers(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """The PEFT adapter layers of `model` (LoRA layers; not the `modules_to_save` copies), by name."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [(name, module) for name, module in model.named_modules() if isinstance(module, BaseTunerLayer)]


def _full_copy_wrappers(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """The `modules_to_save` wrappers of `model` (a trained full copy of a module per adapter), by name."""
    from peft.utils import ModulesToSaveWrapper

    return [(name, module) for name, module in model.named_modules() if isinstance(module, ModulesToSaveWrapper)]


class JanusProLoraLoaderMixin:
    """
    diffusers' LoRA loading API for a pipeline whose one LoRA-loadable component is `model` (a transformers model).
    Adapter weights (`set_adapters`) and fusing scale the LoRA layers; a `modules_to_save` copy is a trained module
    in full, used as it is by the one adapter that holds it.
    """

    _lora_loadable_modules = ["model"]

    @property
    def fused_loras(self) -> set[str]:
        """The adapters fused into the weights (`fuse_lora`)."""
        return set(getattr(self, "_fused_adapters", ()))

    @property
    def num_fused_loras(self) -> int:
        return len(self.fused_loras)

    def get_list_adapters(self) -> dict[str, list[str]]:
        """The loaded adapters per component: `{"model": [names]}` (empty when none is loaded)."""
        names = list(getattr(self.model, "peft_config", {}) or {}) if self._has_adapters() else []
        return {"model": names} if names else {}

    def get_active_adapters(self) -> list[str]:
        """The adapters that the next call runs with (in the order given to `set_adapters`)."""
        layers = _adapter_layers(self.model)
        if layers:
            return list(layers[0][1].active_adapters)
        wrappers = _full_copy_wrappers(self.model)
        return list(wrappers[0][1].active_adapters) if wrappers else []

    def _has_adapters(self) -> bool:
        return bool(getattr(self.model, "_hf_peft_config_loaded", False))

    def _check_components(self, components: list[str] | None) -> None:
        unknown = sorted(set(components or []) - set(self._lora_loadable_modules))
        if unknown:
            raise ValueError(
                f"`components` {unknown} are not LoRA-loadable components of this pipeline; it has "
                f"{self._lora_loadable_modules}."
            )

    def _check_loaded(self, method: str) -> list[str]:
        loaded = self.get_list_adapters().get("model", [])
        if not loaded:
            raise ValueError(f"`{method}`: no LoRA adapter is loaded; load one with `load_lora_weights(path)` first.")
        return loaded

    def load_lora_weights(self, pretrained_model_name_or_path: str, adapter_name: str | None = None, **kwargs):
        """
        Load a PEFT LoRA adapter folder (local path or Hub id; `revision`, `subfolder`, `token`, ... as keywords)
        into `pipe.model` as `adapter_name` (`default_N` by default, N the number of adapters already loaded) and
        make it the active adapter, alone, at weight 1, as diffusers does. The base weights are not changed.
        """
        from peft import PeftConfig, inject_adapter_in_model, set_peft_model_state_dict
        from peft.utils import PeftType, load_peft_weights

        if isinstance(pretrained_model_name_or_path, dict):
            raise ValueError(
                "`load_lora_weights` takes a PEFT adapter folder or Hub id (adapter_config.json + "
                "adapter_model.safetensors), not a state dict: the adapter's config says which layers it wraps."
            )
        unknown = sorted(set(kwargs) - set(HUB_KWARGS))
        if unknown:
            raise ValueError(f"`load_lora_weights` got unknown keywords {unknown}; it takes {list(HUB_KWARGS)}.")
        loaded = self.get_list_adapters().get("model", [])
        if adapter_name is None:
            adapter_name = f"default_{len(loaded)}"
        if adapter_name in loaded:
            raise ValueError(
                f"An adapter named {adapter_name!r} is already loaded ({loaded}); pass another `adapter_name` or "
                f"`delete_adapters({adapter_name!r})` first."
            )
        if self.fused_loras:
            raise ValueError(
                f"Adapters {sorted(self.fused_loras)} are fused into the weights; `unfuse_lora()` (or "
                "`unload_lora_weights()` to keep them fused) before loading another."
            )
        config = PeftConfig.from_pretrained(pretrained_model_name_or_path, **kwargs)
        if config.peft_type != PeftType.LORA:
            raise ValueError(
                f"{pretrained_model_name_or_path} holds a {config.peft_type} adapter; `load_lora_weights` loads LoRA "
                "adapters (use `peft.PeftModel.from_pretrained(pipe.model, path)` for others)."
            )
        state_dict = load_peft_weights(pretrained_model_name_or_path, device=str(self.model.device), **kwargs)
        state_dict = {key.removeprefix(PEFT_MODEL_PREFIX): value for key, value in state_dict.items()}

        if not loaded:  # what trained before any adapter: restored by `unload_lora_weights`
            self._requires_grad_before_lora = {
                name for name, parameter in self.model.named_parameters() if parameter.requires_grad
            }
        config.inference_mode = True
        try:
            with warnings.catch_warnings():  # PEFT warns that a second adapter makes several: that is the point
                warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
                inject_adapter_in_model(config, self.model, adapter_name=adapter_name)
            result = set_peft_model_state_dict(self.model, state_dict, adapter_name=adapter_name)
        except Exception:  # e.g. no layer of this model matches the adapter's targets: leave the model as it was
            self._remove_adapter(adapter_name)
            raise
        missing = [key for key in result.missing_keys if f".{adapter_name}." in key or key.endswith(f".{adapter_name}")]
        if result.unexpected_keys or missing:
            self._remove_adapter(adapter_name)
            raise ValueError(
                f"The adapter weights of {pretrained_model_name_or_path} do not fit this model: unexpected "
                f"{sorted(result.unexpected_keys)[:5]}, missing {sorted(missing)[:5]} (first 5 of each). Is it an "
                "adapter of another base model?"
            )
        self.model.peft_config = {**getattr(self.model, "peft_config", {}), adapter_name: config}
        # Marks the model as carrying adapters for transformers (`save_pretrained` then saves the adapter alone) and
        # for the pipeline's own `save_pretrained`, which refuses it by name.
        self.model._hf_peft_config_loaded = True
        for name, parameter in self.model.named_parameters():
            if adapter_name in name.split("."):
                parameter.requires_grad_(False)
        self.set_adapters([adapter_name])
        logger.info(f"Loaded LoRA adapter {adapter_name!r} from {pretrained_model_name_or_path}")

    def set_adapters(
        self, adapter_names: list[str] | str, adapter_weights: float | list[float] | None = None
    ) -> None:
        """
        Run with `adapter_names` (their LoRA updates added together), each scaled by its weight in `adapter_weights`
        (one number for all, or one per adapter; 1.0 by default). Weight 0 gives the base model's outputs exactly for
        an adapter of LoRA layers only.
        """
        loaded = self._check_loaded("set_adapters")
        names = [adapter_names] if isinstance(adapter_names, str) else list(adapter_names)
        missing = sorted(set(names) - set(loaded))
        if missing or not names:
            raise ValueError(f"`adapter_names` {missing or names} are not loaded adapters; the loaded ones are {loaded}.")
        weights = adapter_weights if isinstance(adapter_weights, (list, tuple)) else [adapter_weights] * len(names)
        if len(weights) != len(names):
            raise ValueError(
                f"`adapter_weights` has {len(weights)} weights for {len(names)} `adapter_names`; pass one per adapter."
            )
        weights = [1.0 if weight is None else weight for weight in weights]
        if not all(isinstance(weight, (int, float)) for weight in weights):
            raise ValueError(f"`adapter_weights` must be numbers, got {weights!r}.")
        if self.fused_loras:
            raise ValueError(f"Adapters {sorted(self.fused_loras)} are fused; `unfuse_lora()` before `set_adapters`.")
        for _, wrapper in _full_copy_wrappers(self.model):
            holders = [name for name in names if name in wrapper.modules_to_save]
            scaled = [name for name, weight in zip(names, weights) if name in holders and weight != 1]
            if len(holders) > 1 or scaled:
                raise ValueError(
                    f"Adapters {holders} hold a full trained copy of a module (`modules_to_save`), which cannot be "
                    f"weighted ({scaled}) or combined with another adapter's copy; activate one of them at weight 1."
                )
            wrapper.set_adapter(holders, inference_mode=True)
        for _, layer in _adapter_layers(self.model):
            layer.set_adapter(names, inference_mode=True)
            for name, weight in zip(names, weights):
                layer.set_scale(name, weight)

    def disable_lora(self) -> None:
        """Run the base model (the adapters stay loaded; `enable_lora()` turns them back on)."""
        self._check_loaded("disable_lora")
        if self.fused_loras:
            raise ValueError(f"Adapters {sorted(self.fused_loras)} are fused; `unfuse_lora()` before `disable_lora`.")
        for _, module in _adapter_layers(self.model) + _full_copy_wrappers(self.model):
            module.enable_adapters(False)

    def enable_lora(self) -> None:
        """Turn the active adapters back on after `disable_lora()`."""
        self._check_loaded("enable_lora")
        for _, module in _adapter_layers(self.model) + _full_copy_wrappers(self.model):
            module.enable_adapters(True)

    def fuse_lora(
        self,
        components: list[str] | None = None,
        lora_scale: float = 1.0,
        safe_fusing: bool = False,
        adapter_names: list[str] | None = None,
        **kwargs,
    ) -> None:
        """
        Add the LoRA updates of `adapter_names` (the active adapters by default), at their `set_adapters` weights
        times `lora_scale`, into the base weights: the calls then cost what the base model costs, and run on the fast
        decoding path (`prepack_weights=True`). `unfuse_lora()` subtracts them again (equal to float rounding);
        `unload_lora_weights()` after fusing keeps them in the weights and drops the adapters. `safe_fusing` refuses
        updates that would make a weight non-finite.
        """
        self._check_components(components)
        self._check_loaded("fuse_lora")
        if not isinstance(lora_scale, (int, float)) or lora_scale == 0 or lora_scale != lora_scale:
            raise ValueError(f"`lora_scale` must be a non-zero number, got {lora_scale!r} (unload to drop an adapter).")
        if self.fused_loras:
            raise ValueError(f"Adapters {sorted(self.fused_loras)} are already fused; `unfuse_lora()` first.")
        active = self.get_active_adapters()
        names = active if adapter_names is None else list(adapter_names)
        inactive = sorted(set(names) - set(active))
        if inactive:
            raise ValueError(f"`adapter_names` {inactive} are not active (active: {active}); `set_adapters` them first.")
        layers = _adapter_layers(self.model)
        for _, layer in layers:
            present = [name for name in names if name in layer.scaling]
            for name in present:
                layer.scaling[name] *= lora_scale
            layer.merge(safe_merge=safe_fusing, adapter_names=present)
            for name in present:
                layer.scaling[name] /= lora_scale
        self._fused_adapters = set(names)
        self._fused_lora_scale = lora_scale

    def unfuse_lora(self, components: list[str] | None = None, **kwargs) -> None:
        """Subtract the fused LoRA updates from the weights again (the adapters stay loaded and active)."""
        self._check_components(components)
        scale = getattr(self, "_fused_lora_scale", 1.0)
        for _, layer in _adapter_layers(self.model):
            if not layer.merged:
                continue
            merged = list(layer.merged_adapters)
            for name in merged:
                layer.scaling[name] *= scale
            layer.unmerge()
            for name in merged:
                layer.scaling[name] /= scale
        self._fused_adapters = set()

    def delete_adapters(self, adapter_names: list[str] | str) -> None:
        """Remove adapters (their layers and weights); the last one removed restores the base model's modules."""
        loaded = self._check_loaded("delete_adapters")
        names = [adapter_names] if isinstance(adapter_names, str) else list(adapter_names)
        missing = sorted(set(names) - set(loaded))
        if missing:
            raise ValueError(f"`adapter_names` {missing} are not loaded adapters; the loaded ones are {loaded}.")
        if set(names) & self.fused_loras:
            raise ValueError(f"Adapters {sorted(self.fused_loras)} are fused; `unfuse_lora()` before deleting them.")
        for name in names:
            self._remove_adapter(name)

    def _remove_adapter(self, adapter_name: str) -> None:
        remaining = [name for name in getattr(self.model, "peft_config", {}) if name != adapter_name]
        if not remaining:
            self.unload_lora_weights()
            return
        for _, layer in _adapter_layers(self.model):
            layer.delete_adapter(adapter_name)
        for _, wrapper in _full_copy_wrappers(self.model):
            active = [name for name in wrapper.active_adapters if name != adapter_name]
            wrapper.delete_adapter(adapter_name, new_active_adapters=active[:1])
        self.model.peft_config.pop(adapter_name, None)

    def unload_lora_weights(self) -> None:
        """
        Remove every adapter: `pipe.model` gets its original modules back, with the base weights untouched (so the
        base model's outputs exactly), or, after `fuse_lora()`, with the fused updates kept in them.
        """
        model = self.model
        for name, module in _adapter_layers(model) + _full_copy_wrappers(model):
            parent_name, _, child_name = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            original = module.get_base_layer() if hasattr(module, "get_base_layer") else module.original_module
            setattr(parent, child_name, original)
        if hasattr(model, "peft_config"):
            del model.peft_config
        model._hf_peft_config_loaded = False
        trained = getattr(self, "_requires_grad_before_lora", None)
        if trained is not None:
            for name, parameter in model.named_parameters():
                parameter.requires_grad_(name in trained)
        self._fused_adapters = set()


__all__ = ["JanusProLoraLoaderMixin"]
