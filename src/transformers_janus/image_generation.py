"""
Text(+image)-to-image decoding with classifier-free guidance (SPEC §4), as a mixin of the Janus-Pro model.

Speed comes from the shape of the loop: conditional and unconditional rows run as one batch, the prompt is prefilled
once, every step is one pass of the decoder layers over one token per row, and the per-step work is a fixed number of
tensor ops whatever the batch size (random numbers are drawn up front). Keys and values are written in place into
memory sized for the whole image, so a step neither copies the cache (as concatenation does) nor attends over unfilled
positions (as a masked static cache does); the layers are called directly with the step's positions and mask, without
rebuilding them. `prepack_weights=True` (CPU) also runs the step's products on oneDNN with weights reordered once.
"""

import copy
from dataclasses import dataclass

import torch
from torch import nn
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer, StaticCache
from transformers.models.llama.modeling_llama import LlamaModel
from transformers.utils import ModelOutput

from .utils import unconditional_input_ids


@dataclass
class JanusProImageGenerationOutput(ModelOutput):
    r"""
    image_tokens (`torch.LongTensor` of shape `(batch_size, num_image_tokens)`):
        The generated VQ codes, row-major over the token grid; decode them with `decode_image_tokens`.
    logits (`torch.FloatTensor` of shape `(batch_size, num_image_tokens, codebook_size)`, *optional*):
        The guided logits of every step (before temperature and filtering), when `output_logits=True`.
    """

    image_tokens: torch.LongTensor | None = None
    logits: torch.FloatTensor | None = None


def left_pad_to(input_ids, attention_mask, length: int, pad_token_id: int):
    extra = length - input_ids.shape[1]
    if extra == 0:
        return input_ids, attention_mask
    pad = input_ids.new_full((input_ids.shape[0], extra), pad_token_id)
    return torch.cat([pad, input_ids], 1), torch.cat([torch.zeros_like(pad), attention_mask], 1)


def draw_uniforms(generator, batch_size: int, steps: int, device) -> torch.Tensor:
    """One uniform per image and step, each image from its own generator: a batch samples as its rows alone."""
    if isinstance(generator, (list, tuple)):
        rows = [torch.rand(steps, generator=g, device=g.device).to(device) for g in generator]
        return torch.stack(rows)
    generator_device = generator.device if generator is not None else device
    return torch.rand(batch_size, steps, generator=generator, device=generator_device).to(device)


def filter_logits(logits: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Top-k then nucleus filtering, as transformers' logits warpers do, on a `[batch, vocab]` tensor."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = sorted_logits.softmax(-1)
        remove = probs.cumsum(-1) - probs > top_p  # keep the smallest prefix reaching top_p (at least one)
        logits = logits.masked_fill(remove.scatter(-1, order, remove), float("-inf"))
    return logits


def sample_from_uniforms(logits: torch.Tensor, uniforms: torch.Tensor) -> torch.LongTensor:
    """Inverse-CDF sampling from `softmax(logits)` with pre-drawn uniforms `[batch]`: exact, and batch-independent."""
    cdf = logits.softmax(-1).cumsum(-1)
    cdf[:, -1] = 1.0  # guard against rounding below the last uniform
    return torch.searchsorted(cdf, uniforms[:, None]).squeeze(-1).clamp_(max=logits.shape[-1] - 1)


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

    def reset(self) -> None:
        super().reset()
        self.length = 0


def image_generation_cache(text_config, prompt_length: int, max_length: int, static: bool) -> Cache:
    """
    The KV cache of one `generate_images` call: in-place layers holding the prompt and, for `static`, all `max_length`
    positions from the start (otherwise the memory doubles as the image grows). Falls back to transformers'
    `DynamicCache` / `StaticCache` for language models with other than plain full-attention layers.
    """
    reference = DynamicCache(config=text_config)
    if not reference.layers or any(type(layer) is not DynamicLayer for layer in reference.layers):
        return StaticCache(config=text_config, max_cache_len=max_length) if static else reference
    capacity = max_length if static else prompt_length
    return Cache(layers=[JanusProInPlaceCacheLayer(capacity, max_length) for _ in reference.layers])


class JanusProPrepackedLinear(nn.Module):
    """
    An `nn.Linear` computed by oneDNN (CPU) from a copy of its weight reordered once into oneDNN's blocked layout: far
    faster than the default kernels at the few-row products of a decoding step on some CPUs. Shares the bias.

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


def supports_prepacking(model) -> bool:
    """Whether `JanusProPrepackedLinear` can run `model`'s products: on CPU with oneDNN, in float32 or bfloat16."""
    if model.device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    return model.dtype == torch.float32 or (
        model.dtype == torch.bfloat16 and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )


def prepacked_copy(module: nn.Module, batch_size: int) -> nn.Module:
    """
    `module` with its `nn.Linear` layers prepacked: shallow copies of the modules that hold them (sharing their
    parameters), the other submodules themselves.
    """
    if isinstance(module, nn.Linear):
        return JanusProPrepackedLinear(module, batch_size)
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
    prepacked weights (`JanusProPrepackedLinear`); a shallow copy sharing every other module and parameter.
    """
    janus = copy.copy(model.model)
    janus._modules = dict(janus._modules)
    for name in ("gen_aligner", "language_model", "gen_head"):
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


def guided_image_logits(model, hidden_states: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """Image-head logits of the last hidden states, in float32, combined as `uncond + scale * (cond - uncond)`."""
    logits = model.model.gen_head(hidden_states).float()
    if guidance_scale != 1.0:
        conditional, unconditional = logits.chunk(2)
        logits = unconditional + guidance_scale * (conditional - unconditional)
    return logits


def decode_image_step(
    model,
    image_tokens: torch.LongTensor,
    cache: Cache,
    attention_mask: torch.Tensor | None,
    position_ids: torch.LongTensor,
    guidance_scale: float,
    direct: bool,
) -> torch.Tensor:
    """
    One decoding step: the last image token of every image, as `gen_aligner(gen_embed(token))` (for the conditional
    and unconditional row alike), through the language model with the KV cache; returns the guided logits of the next
    token. `direct` runs the decoder layers without the language model's wrapper: `attention_mask` is then SDPA's
    boolean `[rows, 1, 1, kv_length]` mask (or None), otherwise the 2D padding mask.
    """
    janus = model.model
    embeds = janus.gen_aligner(janus.gen_embed(image_tokens))
    if guidance_scale != 1.0:
        embeds = torch.cat([embeds, embeds])
    hidden_states = embeds[:, None]
    language_model = janus.language_model
    if direct:
        position_embeddings = language_model.rotary_emb(hidden_states, position_ids=position_ids)
        for decoder_layer in language_model.layers[: language_model.config.num_hidden_layers]:
            hidden_states = decoder_layer(
                hidden_states,
                attention_mask=attention_mask,
                position_embeddings=position_embeddings,
                position_ids=position_ids,
                cache=cache,
                use_cache=True,
            )
        hidden_states = language_model.norm(hidden_states)
    else:
        hidden_states = language_model(
            inputs_embeds=hidden_states,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=True,
        ).last_hidden_state
    return guided_image_logits(model, hidden_states[:, -1], guidance_scale)


class JanusProImageGenerationMixin:
    """Classifier-free-guided image-token decoding for [`JanusProForConditionalGeneration`]."""

    @torch.no_grad()
    def generate_images(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        negative_input_ids: torch.LongTensor | None = None,
        negative_attention_mask: torch.LongTensor | None = None,
        guidance_scale: float = 5.0,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        unconditional_image: bool = False,
        cache_implementation: str = "dynamic",
        output_logits: bool = False,
        step_callback=None,
        prepack_weights: bool = False,
    ) -> JanusProImageGenerationOutput:
        r"""
        Generate `num_image_tokens` image tokens per prompt row.

        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, seq_len)`):
                Left-padded prompts ending with `<begin_of_image>` (see `JanusProProcessor.build_image_generation_prompt`).
            pixel_values (`torch.FloatTensor`, *optional*):
                Understanding images for the `<image_placeholder>` blocks of the prompts (conditional rows only).
            negative_input_ids (`torch.LongTensor`, *optional*):
                Prompts for the unconditional rows (text only); by default DeepSeek's pad-filled copy of `input_ids`.
            unconditional_image (`bool`, defaults to `False`):
                Whether the pad-filled unconditional rows keep the prompt's images (guidance then pushes towards the
                text only); by default they see neither text nor image.
            guidance_scale (`float`, defaults to 5.0):
                `uncond + scale * (cond - uncond)`; 1.0 runs the conditional rows only (half the work).
            temperature, top_k, top_p: sampling of the guided logits; `top_k=1` is greedy.
            generator (`torch.Generator` or a list with one per row, *optional*): reproducible sampling.
            cache_implementation (`str`, defaults to `"dynamic"`):
                Where keys and values live: `"dynamic"` memory grows (doubling) as the image does, `"static"` memory
                holds the prompt and the whole image from the start. Both give the same results.
            prepack_weights (`bool`, defaults to `False`):
                CPU only: run the products of the decoding steps on oneDNN with weights reordered once per call
                (`JanusProPrepackedLinear`), much faster at small batches on CPUs where the default float32 kernels are
                slow, at the cost of a temporary copy of the language model's and image head's weights. bfloat16 results
                are the default ones; float32 ones round differently (a greedy or sampled token can then differ where
                two candidates are almost tied).
            step_callback (`Callable[[int, torch.LongTensor], None]`, *optional*):
                Called after every step with the step index and the tokens so far `(batch_size, step + 1)`.
        """
        config = self.config
        batch_size, device = input_ids.shape[0], input_ids.device
        num_tokens = config.num_image_tokens
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if isinstance(generator, (list, tuple)) and len(generator) != batch_size:
            raise ValueError(f"Got {len(generator)} generators for {batch_size} prompt rows; pass one per row or one in all.")
        do_guidance = guidance_scale != 1.0

        # 1. Conditional and unconditional rows, one left-padded batch
        rows, mask = input_ids, attention_mask
        if do_guidance:
            if negative_input_ids is None:
                keep = (config.image_token_id, config.boi_token_id, config.eoi_token_id) if unconditional_image else ()
                negative_input_ids = unconditional_input_ids(input_ids, attention_mask, config.pad_token_id, keep)
                negative_attention_mask = attention_mask
                if unconditional_image and pixel_values is not None:
                    pixel_values = torch.cat([pixel_values, pixel_values])
            elif negative_attention_mask is None:
                negative_attention_mask = torch.ones_like(negative_input_ids)
            length = max(input_ids.shape[1], negative_input_ids.shape[1])
            rows, mask = left_pad_to(input_ids, attention_mask, length, config.pad_token_id)
            negative_rows, negative_mask = left_pad_to(
                negative_input_ids, negative_attention_mask, length, config.pad_token_id
            )
            rows, mask = torch.cat([rows, negative_rows]), torch.cat([mask, negative_mask])
        prompt_length = rows.shape[1]
        self.model._check_context_length(prompt_length + num_tokens, None)

        # 2. Cache, positions and the mask of every step, allocated once
        if cache_implementation not in ("dynamic", "static"):
            raise ValueError(f"`cache_implementation` must be 'dynamic' or 'static', got {cache_implementation!r}.")
        if prepack_weights and not supports_prepacking(self):
            raise ValueError(
                "`prepack_weights=True` runs the decoding steps on oneDNN's CPU kernels: it needs a float32 or "
                f"bfloat16 (where the CPU supports it) model on CPU, got a {self.dtype} model on {self.device}."
            )
        max_length = prompt_length + num_tokens
        cache = image_generation_cache(config.text_config, prompt_length, max_length, cache_implementation == "static")
        direct = supports_direct_decoding(self.model.language_model, cache)
        padded = not bool(mask.all())
        full_mask = torch.cat([mask, mask.new_ones(mask.shape[0], num_tokens)], 1) if padded else None
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        position_ids = positions[:, -1:] + 1  # advanced in place after every step
        # SDPA's boolean padding mask for direct layer calls, sliced to the filled length at every step
        step_mask = full_mask.bool()[:, None, None, :] if direct and padded else None
        uniforms = None
        if top_k != 1:
            uniforms = draw_uniforms(generator, batch_size, num_tokens, device).T.contiguous()  # [step, row]
        decoder = prepacked_decoder(self, mask.shape[0]) if prepack_weights else self

        # 3. Prefill the prompts once
        outputs = self.model(
            input_ids=rows,
            pixel_values=pixel_values,
            attention_mask=full_mask[:, :prompt_length] if padded else None,
            position_ids=positions,
            cache=cache,
            use_cache=True,
        )
        logits = guided_image_logits(decoder, outputs.last_hidden_state[:, -1], guidance_scale)

        # 4. One token per step for every row
        tokens = input_ids.new_empty(batch_size, num_tokens)
        step_logits = [] if output_logits else None
        for step in range(num_tokens):
            if output_logits:
                step_logits.append(logits)
            if top_k == 1:
                next_tokens = logits.argmax(-1)
            else:
                filtered = filter_logits(logits / temperature, top_k, top_p)
                next_tokens = sample_from_uniforms(filtered, uniforms[step])
            tokens[:, step] = next_tokens
            if step_callback is not None:
                step_callback(step, tokens[:, : step + 1])
            if step == num_tokens - 1:
                break
            length = prompt_length + step + 1
            if not padded:
                attention_mask = None
            else:
                attention_mask = step_mask[..., :length] if direct else full_mask[:, :length]
            logits = decode_image_step(
                decoder, next_tokens, cache, attention_mask, position_ids, guidance_scale, direct
            )
            position_ids += 1

        logits = torch.stack(step_logits, 1) if output_logits else None
        return JanusProImageGenerationOutput(image_tokens=tokens, logits=logits)
