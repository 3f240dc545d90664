"""
Text(+image)-to-image decoding with classifier-free guidance (SPEC §4), as a mixin of the Janus-Pro model.

The loop is built on the model's public accessors (`get_image_token_embeddings`, `get_image_logits`, its forward),
transformers' `DynamicCache`/`StaticCache` and its logits warpers. Conditional and unconditional rows run as one
batch, the prompt is prefilled once, and every step is one forward over one token per row. Sampling draws one uniform
per image and step up front, each image from its own generator, so a batch samples exactly as its rows alone.

The opt-in fast path (`fast_decoding=True`, `prepack_weights=True`) lives in `fast_image_decoding.py`; it gives the
same tokens.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers.cache_utils import Cache, DynamicCache, StaticCache
from transformers.generation import GenerateDecoderOnlyOutput
from transformers.generation.logits_process import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from transformers.utils import ModelOutput

from .utils import unconditional_input_ids


JACOBI_WINDOW = 16


@dataclass
class JanusProImageGenerationOutput(ModelOutput):
    r"""
    image_tokens (`torch.LongTensor` of shape `(batch_size, num_image_tokens)`):
        The generated VQ codes, row-major over the token grid; decode them with `decode_image_tokens`. Fewer columns
        when a `step_callback` stopped the decoding early.
    logits (`torch.FloatTensor` of shape `(batch_size, num_image_tokens, codebook_size)`, *optional*):
        The guided logits of every step (before temperature and filtering), when `output_logits=True`.

    num_forward_passes (`int`, *optional*):
        Forward passes of the language model, the prompt's prefill included: `num_image_tokens` when decoding
        sequentially, fewer with `decoding="jacobi"`.
    draft_acceptance_rate (`float`, *optional*):
        With `decoding="jacobi"`: the share of the verified drafts that were kept (over the batch).
    """

    image_tokens: torch.LongTensor | None = None
    logits: torch.FloatTensor | None = None
    num_forward_passes: int | None = None
    draft_acceptance_rate: float | None = None


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


def image_logits_warpers(temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None):
    """
    transformers' warpers for sampling image tokens, in the order `generate` applies them (temperature, top-k, top-p),
    leaving out the ones that would change nothing.
    """
    warpers = LogitsProcessorList()
    if temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(float(temperature)))
    if top_k is not None:
        warpers.append(TopKLogitsWarper(top_k))
    if top_p is not None and top_p < 1.0:
        warpers.append(TopPLogitsWarper(float(top_p)))
    return warpers


def sample_from_uniforms(logits: torch.Tensor, uniforms: torch.Tensor) -> torch.LongTensor:
    """Inverse-CDF sampling from `softmax(logits)` with pre-drawn uniforms `[batch]`: exact, and batch-independent."""
    cdf = logits.softmax(-1).cumsum(-1)
    cdf[:, -1] = 1.0  # guard against rounding below the last uniform
    return torch.searchsorted(cdf, uniforms[:, None]).squeeze(-1).clamp_(max=logits.shape[-1] - 1)


def check_sampling_arguments(guidance_scale, temperature, top_k, top_p, cache_implementation: str) -> None:
    """Refuse sampling settings that would decode garbage (NaN logits pick one token forever) before any work."""
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)) or not math.isfinite(guidance_scale):
        raise ValueError(f"`guidance_scale` must be a finite number (5.0 is DeepSeek's default), got {guidance_scale!r}.")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"`top_k` must be a positive integer (1 is greedy) or None (no top-k), got {top_k!r}.")
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or not math.isfinite(temperature)
        or temperature <= 0
    ):
        raise ValueError(
            f"`temperature` must be a finite number > 0, got {temperature!r}; for greedy decoding pass `top_k=1`."
        )
    if top_p is not None and (
        isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0.0 < top_p <= 1.0
    ):
        raise ValueError(f"`top_p` must be a number in (0, 1] or None (no nucleus filtering), got {top_p!r}.")
    if cache_implementation not in ("dynamic", "static"):
        raise ValueError(f"`cache_implementation` must be 'dynamic' or 'static', got {cache_implementation!r}.")


def check_decoding_arguments(decoding: str, jacobi_window, cache_implementation: str) -> None:
    """Refuse an unknown decoding, a window that cannot draft, and the static cache under Jacobi decoding."""
    if decoding not in ("sequential", "jacobi"):
        raise ValueError(f"`decoding` must be 'sequential' or 'jacobi', got {decoding!r}.")
    if decoding == "jacobi":
        if isinstance(jacobi_window, bool) or not isinstance(jacobi_window, int) or jacobi_window < 2:
            raise ValueError(
                f"`jacobi_window` must be an integer >= 2 (the last token and at least one draft), got {jacobi_window!r}."
            )
        if cache_implementation == "static":
            raise ValueError(
                "`decoding='jacobi'` cannot use `cache_implementation='static'`: the images of a batch keep different "
                "numbers of drafts per pass, so the cache's length is not known up front. Use the dynamic cache."
            )


def guide(logits: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """Image-head logits in float32, the rows' halves combined as `uncond + scale * (cond - uncond)`."""
    logits = logits.float()
    if guidance_scale != 1.0:
        conditional, unconditional = logits.chunk(2)
        logits = unconditional + guidance_scale * (conditional - unconditional)
    return logits


class JanusProImageDecoder:
    """
    The decoding steps of one `generate_images` call with transformers' caches: every step is the model's forward over
    one image-token embedding per row.

    Args:
        model (`JanusProForConditionalGeneration`): The model to decode with.
        max_length (`int`): Prompt and image positions.
        attention_mask (`torch.LongTensor` of shape `(rows, max_length)`, *optional*):
            The padding mask over prompt and image positions; None when no row is padded.
        static (`bool`): Use a `StaticCache` of `max_length` positions instead of a `DynamicCache`.
    """

    def __init__(self, model, max_length: int, attention_mask: torch.Tensor | None, static: bool):
        self.model = model
        text_config = model.config.text_config
        self.cache = StaticCache(config=text_config, max_cache_len=max_length) if static else DynamicCache(config=text_config)
        self.attention_mask = attention_mask

    def image_token_embeddings(self, image_tokens: torch.LongTensor) -> torch.Tensor:
        return self.model.get_image_token_embeddings(image_tokens)

    def image_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.model.get_image_logits(hidden_states)

    def step(self, inputs_embeds: torch.Tensor, cache: Cache, length: int, position_ids: torch.LongTensor):
        """The last hidden states `[rows, hidden]` of one token per row, `inputs_embeds` `[rows, 1, hidden]`."""
        mask = self.attention_mask[:, :length] if self.attention_mask is not None else None
        return self.decode_tokens(inputs_embeds, cache, mask, position_ids, length - 1)[:, -1]

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
        return self.model.model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=True,
        ).last_hidden_state


def read_step_callback_result(result, tokens: torch.LongTensor, step: int) -> tuple[torch.Tensor | None, bool]:
    """Validate what a `step_callback` returned for `tokens[:, : step + 1]`: `(replacement tokens or None, stop)`."""
    if result is None:
        return None, False
    if not isinstance(result, dict):
        raise ValueError(f"`step_callback` must return None or a dict, got {type(result).__name__}.")
    unknown = sorted(set(result) - {"image_tokens", "stop"})
    if unknown:
        raise ValueError(f"`step_callback` returned unknown keys {unknown}; it may return 'image_tokens' and 'stop'.")
    replacement = result.get("image_tokens")
    if replacement is not None:
        expected = (tokens.shape[0], step + 1)
        if not isinstance(replacement, torch.Tensor) or tuple(replacement.shape) != expected:
            shape = tuple(replacement.shape) if isinstance(replacement, torch.Tensor) else type(replacement).__name__
            raise ValueError(
                f"`step_callback` must return `image_tokens` of shape {expected} (the tokens so far), got {shape}."
            )
        if replacement.dtype.is_floating_point or replacement.dtype.is_complex or replacement.dtype == torch.bool:
            raise ValueError(f"`step_callback` must return integer `image_tokens`, got {replacement.dtype}.")
        replacement = replacement.to(tokens.device)
    return replacement, bool(result.get("stop", False))


def apply_step_callback(result, tokens: torch.LongTensor, step: int) -> bool:
    """Apply what a `step_callback` returned to `tokens[:, : step + 1]`; returns whether to stop after this step."""
    replacement, stop = read_step_callback_result(result, tokens, step)
    if replacement is not None:
        tokens[:, : step + 1] = replacement
    return stop


class JanusProImageGenerationMixin:
    """Classifier-free-guided image-token decoding for [`JanusProForConditionalGeneration`]."""

    def generate(self, *args, **kwargs):
        """
        transformers' `generate`, plus the built-in Janus's `generation_mode`: `"text"` (the default) answers with
        text through `GenerationMixin.generate`; `"image"` makes image tokens with `generate_images`, reading
        `do_sample`, `temperature`, `top_k`, `top_p`, `guidance_scale` and `num_return_sequences` from the generation
        config or the keyword arguments, so code written for `JanusForConditionalGeneration` runs unchanged. Image
        mode returns the image tokens `(batch_size * num_return_sequences, num_image_tokens)`, or a
        `GenerateDecoderOnlyOutput` with `return_dict_in_generate=True`; it also accepts `generate_images`' own
        arguments (`generator`, `negative_input_ids`, `cache_implementation`, `fast_decoding`, ...).
        """
        generation_mode = kwargs.pop("generation_mode", "text")
        if generation_mode == "text":
            return super().generate(*args, **kwargs)
        if generation_mode != "image":
            raise ValueError(f"`generation_mode` must be 'text' or 'image', got {generation_mode!r}.")
        return self._generate_image_tokens(*args, **kwargs)

    @torch.no_grad()
    def _generate_image_tokens(
        self,
        inputs: torch.LongTensor | None = None,
        generation_config=None,
        logits_processor: LogitsProcessorList | None = None,
        **kwargs,
    ):
        if logits_processor:
            raise ValueError(
                "`generation_mode='image'` samples with `temperature`, `top_k` and `top_p` only; custom "
                "`logits_processor`s are not supported for image tokens."
            )
        generation_config, model_kwargs = self._prepare_generation_config(generation_config, **kwargs)
        input_ids = model_kwargs.pop("input_ids", None) if inputs is None else inputs
        if input_ids is None or input_ids.ndim != 2 or input_ids.shape[1] == 0:
            raise ValueError("`generation_mode='image'` needs `input_ids` of shape (batch_size, seq_len), seq_len > 0.")
        if generation_config.num_beams not in (None, 1):
            raise ValueError("Image generation samples or decodes greedily; set `num_beams=1`.")
        attention_mask = model_kwargs.pop("attention_mask", None)
        model_kwargs.pop("use_cache", None)
        for name in ("output_attentions", "output_hidden_states", "output_scores"):
            if model_kwargs.pop(name, None):
                raise ValueError(f"`{name}=True` is not supported with `generation_mode='image'`.")
        allowed = {
            "pixel_values",
            "negative_input_ids",
            "negative_attention_mask",
            "generator",
            "unconditional_image",
            "step_callback",
            "fast_decoding",
            "prepack_weights",
            "decoding",
            "jacobi_window",
        }
        unused = sorted(name for name, value in model_kwargs.items() if name not in allowed and value is not None)
        if unused:
            raise ValueError(
                f"The following arguments are not used by `generation_mode='image'`: {unused}. It accepts the "
                f"generation config's sampling settings and {sorted(allowed)}."
            )
        num_return_sequences = generation_config.num_return_sequences or 1
        if num_return_sequences > 1:
            if model_kwargs.get("pixel_values") is not None:
                raise ValueError(
                    "`num_return_sequences > 1` with `pixel_values` is not supported: repeat the prompt rows (and "
                    "their images) instead."
                )
            input_ids = input_ids.repeat_interleave(num_return_sequences, 0)
            if attention_mask is not None:
                attention_mask = attention_mask.repeat_interleave(num_return_sequences, 0)
        if generation_config.do_sample:
            sampling = {
                "temperature": generation_config.temperature if generation_config.temperature is not None else 1.0,
                "top_k": generation_config.top_k or None,
                "top_p": generation_config.top_p,
            }
        else:
            sampling = {"top_k": 1}
        guidance_scale = generation_config.guidance_scale if generation_config.guidance_scale is not None else 5.0
        output_logits = bool(generation_config.return_dict_in_generate and generation_config.output_logits)
        output = self.generate_images(
            input_ids,
            attention_mask=attention_mask,
            guidance_scale=guidance_scale,
            output_logits=output_logits,
            cache_implementation=generation_config.cache_implementation or "dynamic",
            **sampling,
            **{name: value for name, value in model_kwargs.items() if value is not None},
        )
        if not generation_config.return_dict_in_generate:
            return output.image_tokens
        logits = tuple(output.logits.unbind(1)) if output_logits else None
        return GenerateDecoderOnlyOutput(sequences=output.image_tokens, logits=logits)

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
        step_callback: Callable[[int, torch.LongTensor], dict | None] | None = None,
        fast_decoding: bool = False,
        prepack_weights: bool = False,
        decoding: str = "sequential",
        jacobi_window: int = JACOBI_WINDOW,
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
                `uncond + scale * (cond - uncond)`; 1.0 runs the conditional rows only (half the work). Must be finite.
            temperature (`float`, defaults to 1.0):
                Sampling temperature (> 0, finite); no effect with `top_k=1`.
            top_k (`int`, *optional*): Keep the `top_k` most likely tokens; `top_k=1` is greedy.
            top_p (`float`, *optional*): Nucleus sampling, in (0, 1].
            generator (`torch.Generator` or a list with one per row, *optional*): reproducible sampling.
            cache_implementation (`str`, defaults to `"dynamic"`):
                transformers' `DynamicCache` (memory grows as the image does) or `StaticCache` (`"static"`: memory for
                the prompt and the whole image from the start).
            output_logits (`bool`, defaults to `False`): Also return the guided logits of every step.
            step_callback (`Callable[[int, torch.LongTensor], dict | None]`, *optional*):
                Called after every step with the step index and the tokens so far `(batch_size, step + 1)`. It may
                return a dict with `"image_tokens"` (a tensor of the same shape that replaces the tokens so far: its
                last column is what the next step reads; earlier columns only change the output, as the KV cache
                already holds them) and `"stop": True` (end after this step; the output then has `step + 1` columns).
            fast_decoding (`bool`, defaults to `False`):
                Decode with `fast_image_decoding.JanusProFastImageDecoder`: keys and values written in place and, for a
                Llama with SDPA attention, direct decoder-layer calls. Same tokens as the default path; the speed-up
                depends on the machine (see docs/performance.md).
            prepack_weights (`bool`, defaults to `False`):
                Implies `fast_decoding`. CPU only: run the products of the decoding steps on oneDNN with weights
                reordered once per call (`JanusProPrepackedLinear`), at the cost of a temporary copy of the language
                model's and image head's weights. It wins on some CPU families and loses on others (measured: 2-2.6x
                faster in float32 on an AMD EPYC, 0.78x on an Intel Xeon with AMX), so measure before turning it on.
                bfloat16 results are the default ones; float32 ones round differently (a greedy or sampled token can
                then differ where two candidates are almost tied). Refused, with the reason, for models on other
                devices, bfloat16 on CPUs without bfloat16 instructions, and PEFT adapter layers.
        """
        config = self.config
        check_sampling_arguments(guidance_scale, temperature, top_k, top_p, cache_implementation)
        check_decoding_arguments(decoding, jacobi_window, cache_implementation)
        if input_ids.ndim != 2 or input_ids.shape[1] == 0:
            raise ValueError(
                f"`input_ids` must be (batch_size, seq_len) with seq_len > 0, got {list(input_ids.shape)}. Build "
                "prompts with `JanusProProcessor.prepare_image_generation_inputs`."
            )
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
        max_length = prompt_length + num_tokens
        self.model._check_context_length(max_length, None)

        # 2. Cache, positions and the padding mask of every step, allocated once
        padded = not bool(mask.all())
        full_mask = torch.cat([mask, mask.new_ones(mask.shape[0], num_tokens)], 1) if padded else None
        static = cache_implementation == "static"
        if fast_decoding or prepack_weights:
            from .fast_image_decoding import JanusProFastImageDecoder

            decoder = JanusProFastImageDecoder(
                self, rows.shape[0], prompt_length, max_length, full_mask, static, prepack_weights
            )
            if decoder.cache is None:  # layers the in-place cache cannot hold: transformers' caches
                decoder.cache = JanusProImageDecoder(self, max_length, full_mask, static).cache
        else:
            decoder = JanusProImageDecoder(self, max_length, full_mask, static)
        cache = decoder.cache
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        position_ids = positions[:, -1:] + 1  # advanced in place after every step
        uniforms, warpers = None, None
        jacobi = decoding == "jacobi"
        if jacobi:
            from .jacobi_image_decoding import UNIFORM_STREAMS, jacobi_decode
        if top_k != 1:
            if jacobi:  # per image and position: draw, accept, draft
                uniforms = draw_uniforms(generator, batch_size, UNIFORM_STREAMS * num_tokens, device)
                uniforms = uniforms.view(batch_size, UNIFORM_STREAMS, num_tokens)
            else:
                uniforms = draw_uniforms(generator, batch_size, num_tokens, device).T.contiguous()  # [step, row]
            warpers = image_logits_warpers(temperature, top_k, top_p)

        # 3. Prefill the prompts once
        hidden_states = self.model(
            input_ids=rows,
            pixel_values=pixel_values,
            attention_mask=full_mask[:, :prompt_length] if padded else None,
            position_ids=positions,
            cache=cache,
            use_cache=True,
        ).last_hidden_state[:, -1]
        logits = guide(decoder.image_logits(hidden_states), guidance_scale)

        # 4a. Several tokens per pass, verified by the speculative sampling rule
        if jacobi:
            tokens, logits, num_passes, accepted, verified = jacobi_decode(
                decoder,
                cache,
                logits,
                num_tokens=num_tokens,
                window=min(jacobi_window, num_tokens),
                guidance_scale=guidance_scale,
                warpers=warpers,
                uniforms=uniforms,
                image_positions=position_ids[:, 0],
                slot_mask=mask.bool() if padded else None,
                output_logits=output_logits,
                step_callback=step_callback,
            )
            return JanusProImageGenerationOutput(
                image_tokens=tokens,
                logits=logits,
                num_forward_passes=1 + num_passes,
                draft_acceptance_rate=accepted / verified if verified else None,
            )

        # 4. One token per step for every row
        tokens = input_ids.new_empty(batch_size, num_tokens)
        step_logits = [] if output_logits else None
        for step in range(num_tokens):
            if output_logits:
                step_logits.append(logits)
            if top_k == 1:
                next_tokens = logits.argmax(-1)
            else:
                next_tokens = sample_from_uniforms(warpers(None, logits), uniforms[step])
            tokens[:, step] = next_tokens
            if step_callback is not None:
                if apply_step_callback(step_callback(step, tokens[:, : step + 1]), tokens, step):
                    tokens = tokens[:, : step + 1]
                    break
                next_tokens = tokens[:, step]
            if step == num_tokens - 1:
                break
            embeds = decoder.image_token_embeddings(next_tokens)
            if do_guidance:
                embeds = torch.cat([embeds, embeds])
            hidden_states = decoder.step(embeds[:, None], cache, prompt_length + step + 1, position_ids)
            logits = guide(decoder.image_logits(hidden_states), guidance_scale)
            position_ids += 1

        logits = torch.stack(step_logits, 1) if output_logits else None
        return JanusProImageGenerationOutput(image_tokens=tokens, logits=logits, num_forward_passes=tokens.shape[1])
