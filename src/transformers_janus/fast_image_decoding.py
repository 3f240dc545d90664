"""
An opt-in fast path for the decoding steps of `generate_images` (`fast_decoding=True`, `prepack_weights=True`).

`generate_images` by default decodes with transformers' own pieces: a `DynamicCache` or `StaticCache` and the language
model's forward at every step. This module trades that generality for speed on the one shape it serves, a Llama
language model with full attention:

- keys and values are written in place into memory sized for the image (`JanusProInPlaceCacheLayer`), so a step
  neither copies the cache (as the dynamic cache's concatenation does) nor attends over unfilled positions (as a masked
  static cache does);
- with SDPA attention the decoder layers are called directly with the step's positions and mask, skipping the
  language model's mask building and output capturing;
- `prepack_weights=True` (CPU) also runs the step's matrix products on oneDNN with weights reordered once
  (`JanusProPrepackedLinear`).

The contract: the same image tokens as the plain path. The in-place cache and the direct calls compute exactly what the
plain path with a `DynamicCache` computes (bit for bit); prepacked float32 products round differently (see
`JanusProPrepackedLinear`). Models the fast path cannot serve get a fallback (other cache layer types: transformers'
caches; other attention or language models: the language model's forward) or, for prepacking, a `ValueError` that says
why (PEFT adapter layers, dtypes or devices oneDNN cannot run).
"""

import copy

import torch
from torch import nn
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer
from transformers.models.llama.modeling_llama import LlamaModel

from .jacobi_image_decoding import causal_slot_mask
from .utils import cpu_has_bf16_kernels


class JanusProInPlaceCacheLayer(DynamicLayer):
    """
    A `DynamicLayer` whose keys and values live in preallocated memory: `update` writes the new positions in place and
    returns views of the filled part. Attention sees exactly the tensors that `DynamicLayer` builds by concatenation
    (same values, same results) without a copy of the whole cache at every step.

    Args:
        capacity (`int`): Positions allocated on the first update.
        max_capacity (`int`, *optional*): When the memory is full it doubles, up to `max_capacity` (default: `capacity`)
            or to what the update needs if that is more.
    """

    def __init__(self, capacity: int, max_capacity: int | None = None):
        super().__init__()
        self.capacity = capacity
        self.max_capacity = max(capacity, max_capacity or capacity)
        self.key_memory = self.value_memory = None
        self.length = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self.key_memory = self._allocate(key_states, self.capacity)
        self.value_memory = self._allocate(value_states, self.capacity)

    @staticmethod
    def _allocate(states: torch.Tensor, capacity: int) -> torch.Tensor:
        return states.new_empty(*states.shape[:-2], capacity, states.shape[-1])

    def _grow(self, needed: int):
        capacity = max(needed, min(2 * self.key_memory.shape[-2], self.max_capacity))
        for name in ("key_memory", "value_memory"):
            memory = getattr(self, name)
            grown = self._allocate(memory, capacity)
            grown[..., : self.length, :].copy_(memory[..., : self.length, :])
            setattr(self, name, grown)

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if end > self.key_memory.shape[-2]:
            self._grow(end)
        self.key_memory[..., self.length : end, :].copy_(key_states)
        self.value_memory[..., self.length : end, :].copy_(value_states)
        self.length = end
        self.keys = self.key_memory[..., :end, :]
        self.values = self.value_memory[..., :end, :]
        return self.keys, self.values

    def crop(self, tokens_to_remove: int) -> None:
        """Forget the last `-tokens_to_remove` positions (a negative count, as transformers' layers take it): the next
        `update` writes over them (Jacobi decoding's rejected drafts)."""
        if tokens_to_remove > 0:
            raise ValueError(f"`crop` takes a negative number of positions to remove, got {tokens_to_remove}.")
        if tokens_to_remove == 0 or not self.is_initialized:
            return
        self.length -= min(-tokens_to_remove, self.length)
        self.keys = self.key_memory[..., : self.length, :]
        self.values = self.value_memory[..., : self.length, :]

    def reset(self) -> None:
        super().reset()
        self.length = 0


def in_place_cache(text_config, prompt_length: int, max_length: int, static: bool) -> Cache | None:
    """
    A KV cache of in-place layers holding the prompt and, for `static`, all `max_length` positions from the start
    (otherwise the memory doubles as the image grows). None for language models with other than plain full-attention
    layers (sliding windows, ...), which the caller then serves with transformers' caches.
    """
    reference = DynamicCache(config=text_config)
    if not reference.layers or any(type(layer) is not DynamicLayer for layer in reference.layers):
        return None
    capacity = max_length if static else prompt_length
    return Cache(layers=[JanusProInPlaceCacheLayer(capacity, max_length) for _ in reference.layers])


class JanusProPrepackedLinear(nn.Module):
    """
    An `nn.Linear` computed by oneDNN (CPU) from a copy of its weight reordered once into oneDNN's blocked layout.
    Shares the bias.

    Whether this wins depends on the CPU family, which is why `prepack_weights` is opt-in: on AMD EPYC (2 threads) the
    float32 decoding step ran 2-2.6x faster than on the default kernels, on an Intel Xeon with AMX it ran at 0.78x
    (slower). Measure on the machine you deploy to (`benchmarks/bench_generate.py`). float32 results round differently
    from `nn.Linear` (about 5e-6 on the logits); bfloat16 ones are the default ones (oneDNN computes both).

    Args:
        linear (`nn.Linear`): The layer to compute.
        batch_size (`int`): Rows of the inputs to expect (a hint for the layout).
    """

    def __init__(self, linear: nn.Linear, batch_size: int):
        super().__init__()
        self.packed_weight = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), batch_size)
        self.bias = linear.bias
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(hidden_states, self.packed_weight, self.bias, "none", [], "")


PREPACKED_MODULES = ("gen_aligner", "language_model", "gen_head")


def _is_fused_adapter_layer(module: nn.Module) -> bool:
    """A PEFT adapter layer whose updates are all merged into its base layer and that is enabled: its forward is its
    base layer's (`pipe.fuse_lora()`, `merge_adapter()`)."""
    return hasattr(module, "base_layer") and bool(getattr(module, "merged", False)) and not module.disable_adapters


def prepacking_unsupported_reason(model) -> str | None:
    """Why `prepack_weights=True` cannot serve `model` (None when it can): the device, the dtype or adapter layers
    that are not fused."""
    if model.device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return f"it runs oneDNN's CPU kernels, and the model is on {model.device}"
    if model.dtype == torch.bfloat16 and not cpu_has_bf16_kernels():
        return "this CPU lacks the bfloat16 instructions (avx512_bf16 / AMX) that oneDNN's bfloat16 products need"
    if model.dtype not in (torch.float32, torch.bfloat16):
        return f"oneDNN's products run float32 or bfloat16, and the model is {model.dtype}"
    for name in PREPACKED_MODULES:
        fused = []
        for path, module in getattr(model.model, name).named_modules():
            if any(path.startswith(prefix) for prefix in fused):  # inside a fused adapter layer: never run
                continue
            if _is_fused_adapter_layer(module):
                fused.append(f"{path}.")
                continue
            # PEFT's adapter layers (LoRA, ...) wrap the original linear as `base_layer` and add their own products
            if hasattr(module, "base_layer"):
                return (
                    f"`model.{name}.{path}` is a PEFT adapter layer ({type(module).__module__}."
                    f"{type(module).__name__}); fuse the adapter first (`pipe.fuse_lora()`, or `merge_and_unload()`)"
                )
            if isinstance(module, nn.Linear) and type(module) is not nn.Linear:
                return f"`model.{name}.{path}` is a {type(module).__name__}, not a plain `nn.Linear`"
    return None


def prepacked_copy(module: nn.Module, batch_size: int) -> nn.Module:
    """
    `module` with its `nn.Linear` layers prepacked: shallow copies of the modules that hold them (sharing their
    parameters), the other submodules themselves.
    """
    if isinstance(module, nn.Linear):
        return JanusProPrepackedLinear(module, batch_size)
    if _is_fused_adapter_layer(module):  # computes its base layer, which holds the fused update
        return JanusProPrepackedLinear(module.get_base_layer(), batch_size)
    if not any(isinstance(child, nn.Linear) for child in module.modules()):
        return module
    twin = copy.copy(module)
    twin._modules = {
        name: None if child is None else prepacked_copy(child, batch_size) for name, child in module._modules.items()
    }
    return twin


def prepacked_decoder(model, batch_size: int):
    """
    `model` as the decoding steps use it, with the image-token adaptor, the language model and the image head on
    prepacked weights (`JanusProPrepackedLinear`); a shallow copy sharing every other module and parameter. Raises a
    `ValueError` saying why for models it cannot serve (see `prepacking_unsupported_reason`).
    """
    reason = prepacking_unsupported_reason(model)
    if reason is not None:
        raise ValueError(f"`prepack_weights=True` cannot run this model: {reason}. Pass `prepack_weights=False`.")
    janus = copy.copy(model.model)
    janus._modules = dict(janus._modules)
    for name in PREPACKED_MODULES:
        janus._modules[name] = prepacked_copy(janus._modules[name], batch_size)
    decoder = copy.copy(model)
    decoder._modules = {**model._modules, "model": janus}
    return decoder


def supports_direct_decoding(language_model, cache: Cache) -> bool:
    """
    Whether the decoding steps can call the decoder layers directly: a Llama with SDPA attention (whose boolean step
    mask we build ourselves) over in-place cache layers (which hold only the filled positions, so no mask is needed
    without padding).
    """
    return (
        type(language_model) is LlamaModel
        and language_model.config._attn_implementation == "sdpa"
        and all(isinstance(layer, JanusProInPlaceCacheLayer) for layer in cache.layers)
    )


class JanusProFastImageDecoder:
    """
    The decoding steps of one `generate_images` call on the fast path: the in-place cache, direct decoder-layer calls
    where the model allows them, and optionally prepacked weights. `generate_images` prefills `cache` with the
    prompts (through the model's forward) and then calls `step` once per image token.

    Args:
        model (`JanusProForConditionalGeneration`): The model to decode with.
        rows (`int`): Rows of the batch (conditional and unconditional ones).
        prompt_length (`int`): Positions of the (padded) prompt rows.
        max_length (`int`): Prompt and image positions.
        attention_mask (`torch.LongTensor` of shape `(rows, max_length)`, *optional*):
            The padding mask over prompt and image positions; None when no row is padded.
        static (`bool`): Allocate the whole image's memory at once (otherwise it doubles as the image grows).
        prepack_weights (`bool`): Run the steps' products on prepacked oneDNN weights (CPU).
    """

    def __init__(
        self,
        model,
        rows: int,
        prompt_length: int,
        max_length: int,
        attention_mask: torch.Tensor | None,
        static: bool,
        prepack_weights: bool,
    ):
        self.decoder = prepacked_decoder(model, rows) if prepack_weights else model
        self.cache = in_place_cache(model.config.text_config, prompt_length, max_length, static)
        self.direct = self.cache is not None and supports_direct_decoding(model.model.language_model, self.cache)
        self.attention_mask = attention_mask
        # SDPA's boolean padding mask for direct layer calls, sliced to the filled length at every step
        self.step_mask = None
        if self.direct and attention_mask is not None:
            self.step_mask = attention_mask.bool()[:, None, None, :]

    def image_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.decoder.get_image_logits(hidden_states)

    def step(self, inputs_embeds: torch.Tensor, cache: Cache, length: int, position_ids: torch.LongTensor):
        """The last hidden states `[rows, hidden]` of one token per row, `inputs_embeds` `[rows, 1, hidden]`."""
        if not self.direct:
            mask = self.attention_mask[:, :length] if self.attention_mask is not None else None
            return self.decode_tokens(inputs_embeds, cache, mask, position_ids, length - 1)[:, -1]
        mask = self.step_mask[..., :length] if self.step_mask is not None else None
        return self.decoder_layers(inputs_embeds, mask, position_ids, cache)[:, -1]

    def decode_tokens(
        self,
        inputs_embeds: torch.Tensor,
        cache: Cache,
        attention_mask: torch.Tensor | None,
        position_ids: torch.LongTensor,
        cache_length: int,
    ) -> torch.Tensor:
        """The hidden states `[rows, window, hidden]` of several tokens per row (Jacobi decoding's passes);
        `attention_mask` `[rows, cache_length + window]` says which slots each row attends to (None: all)."""
        if not self.direct:
            return self.decoder.model.language_model(
                inputs_embeds=inputs_embeds,
                attention_mask=attention_mask,
                position_ids=position_ids,
                cache=cache,
                use_cache=True,
            ).last_hidden_state
        rows, window = inputs_embeds.shape[:2]
        mask = causal_slot_mask(attention_mask, rows, cache_length, window, inputs_embeds.device)
        return self.decoder_layers(inputs_embeds, mask, position_ids, cache)

    def decoder_layers(self, hidden_states: torch.Tensor, mask, position_ids: torch.LongTensor, cache: Cache):
        """The language model's decoder layers called directly with SDPA's boolean `mask`, then its final norm."""
        language_model = self.decoder.model.language_model
        position_embeddings = language_model.rotary_emb(hidden_states, position_ids=position_ids)
        for decoder_layer in language_model.layers[: language_model.config.num_hidden_layers]:
            hidden_states = decoder_layer(
                hidden_states,
                attention_mask=mask,
                position_embeddings=position_embeddings,
                position_ids=position_ids,
                cache=cache,
                use_cache=True,
            )
        return language_model.norm(hidden_states)

    def image_token_embeddings(self, image_tokens: torch.LongTensor) -> torch.Tensor:
        return self.decoder.get_image_token_embeddings(image_tokens)
