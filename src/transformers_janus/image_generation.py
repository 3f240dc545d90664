"""
Text(+image)-to-image decoding with classifier-free guidance (SPEC §4), as a mixin of the Janus-Pro model.

Speed comes from the shape of the loop, not from tricks: conditional and unconditional rows run as one batch,
the prompt is prefilled once, every step is one LLM forward on one token per row with the KV cache, and the
per-step work is a fixed number of tensor ops whatever the batch size (random numbers are drawn up front).
"""

from dataclasses import dataclass

import torch
from transformers.cache_utils import DynamicCache, StaticCache
from transformers.utils import ModelOutput


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


def unconditional_input_ids(
    input_ids: torch.LongTensor,
    attention_mask: torch.LongTensor,
    pad_token_id: int,
    keep_token_ids: tuple[int, ...] = (),
):
    """
    DeepSeek's unconditional rows: every real token but the first (BOS) and the last (`<begin_of_image>`) becomes
    the pad token. Works on left-padded batches (the first *real* token is kept). Tokens in `keep_token_ids` (the
    image span, when the unconditional branch should see the input image) are kept too.
    """
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)
    first_real = (attention_mask == 0).sum(-1, keepdim=True)
    keep = (positions == first_real) | (positions == input_ids.shape[1] - 1) | (attention_mask == 0)
    for token_id in keep_token_ids:
        keep |= input_ids == token_id
    return torch.where(keep, input_ids, torch.full_like(input_ids, pad_token_id))


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
            cache_implementation (`str`, defaults to `"dynamic"`): `"static"` preallocates the KV cache.
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
        if cache_implementation == "static":
            cache = StaticCache(config=config.text_config, max_cache_len=prompt_length + num_tokens)
        elif cache_implementation == "dynamic":
            cache = DynamicCache(config=config.text_config)
        else:
            raise ValueError(f"`cache_implementation` must be 'dynamic' or 'static', got {cache_implementation!r}.")
        padded = not bool(mask.all())
        full_mask = torch.cat([mask, mask.new_ones(mask.shape[0], num_tokens)], 1) if padded else None
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        next_position = positions[:, -1:] + 1
        uniforms = None
        if top_k != 1:
            uniforms = draw_uniforms(generator, batch_size, num_tokens, device).T.contiguous()  # [step, row]

        # 3. Prefill the prompts once
        outputs = self.model(
            input_ids=rows,
            pixel_values=pixel_values,
            attention_mask=full_mask[:, :prompt_length] if padded else None,
            position_ids=positions,
            cache=cache,
            use_cache=True,
        )
        hidden = outputs.last_hidden_state[:, -1]

        # 4. One token per step for every row
        tokens = input_ids.new_empty(batch_size, num_tokens)
        step_logits = [] if output_logits else None
        for step in range(num_tokens):
            logits = self.model.gen_head(hidden).float()
            if do_guidance:
                conditional, unconditional = logits.chunk(2)
                logits = unconditional + guidance_scale * (conditional - unconditional)
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
            embeds = self.model.gen_aligner(self.model.gen_embed(next_tokens))
            if do_guidance:
                embeds = torch.cat([embeds, embeds])
            outputs = self.model.language_model(
                inputs_embeds=embeds[:, None],
                attention_mask=full_mask[:, : prompt_length + step + 1] if padded else None,
                position_ids=next_position + step,
                cache=cache,
                use_cache=True,
            )
            hidden = outputs.last_hidden_state[:, -1]

        logits = torch.stack(step_logits, 1) if output_logits else None
        return JanusProImageGenerationOutput(image_tokens=tokens, logits=logits)
