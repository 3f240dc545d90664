"""
Speculative Jacobi decoding of image tokens (`generate_images(decoding="jacobi")`): several image tokens per forward
pass of the language model, drawn from exactly the distribution the sequential sampler draws from.

Every pass feeds each image its last drawn token and `window - 1` drafted tokens after it; one forward of both
guidance rows gives the guided logits at all `window` positions. The drafts are verified left to right by the
speculative sampling rule (Leviathan et al. 2023; Speculative Jacobi Decoding, Teng et al., ICLR 2025): a draft `d`
proposed from `q` is kept with probability `min(1, p(d) / q(d))`, the first rejected one is redrawn from
`max(0, p - q)` renormalized, and when every draft is kept one more token is drawn from `p`. Each token is then
distributed as the sequential sampler draws it, whatever the drafts were.

The drafts come from the passes themselves (Jacobi iteration): the positions after the first rejection are redrafted
from the distributions this pass computed for them (conditioned on the rejected draft), the positions beyond the
window from the last of them. Each position keeps one drafting uniform across its redrafts (coupled drafts, as in
MC-SJD, arXiv 2510.24211), so a draft changes only where its proposal moved. Greedy decoding (`top_k=1`) keeps a draft
iff it is the argmax: the tokens are the sequential path's.

Each image of a batch advances by its own accepted length. The KV cache keeps, per pass, the slots of the longest run
kept and masks the rejected slots of the other rows; each position of each image owns three uniforms drawn up front
from that image's generator (draw, accept, draft), so a batch samples exactly as its images alone.
"""

import torch
from transformers.cache_utils import Cache

from .image_generation import guide, read_step_callback_result


UNIFORM_STREAMS = 3  # per image and position: draw a token, accept a draft, draft a token


def accept_drafts(draft_probabilities: torch.Tensor, proposal_probabilities: torch.Tensor, uniforms: torch.Tensor):
    """The speculative sampling test: keep a draft `d` with probability `min(1, p(d) / q(d))`."""
    return uniforms * proposal_probabilities < draft_probabilities


def inverse_cdf(probabilities: torch.Tensor, uniforms: torch.Tensor) -> torch.LongTensor:
    """Draw from `probabilities` `[..., vocab]` with one uniform per distribution `[...]` (never a zero-probability
    token: the first index whose cumulative probability exceeds the uniform)."""
    cdf = probabilities.cumsum(-1)
    cdf[..., -1] = 1.0  # guard against rounding below the last uniform
    return torch.searchsorted(cdf, uniforms.unsqueeze(-1).contiguous(), right=True).squeeze(-1).clamp_(
        max=probabilities.shape[-1] - 1
    )


def warped_probabilities(warpers, logits: torch.Tensor) -> torch.Tensor:
    """`softmax(warpers(logits))` over the last axis of `[..., vocab]` logits: what the sequential sampler draws from."""
    shape = logits.shape
    return warpers(None, logits.reshape(-1, shape[-1])).softmax(-1).view(shape)


def causal_slot_mask(slot_mask: torch.Tensor | None, rows: int, cache_length: int, window: int, device) -> torch.Tensor:
    """SDPA's boolean mask `[rows, 1, window, cache_length + window]` for a pass: each query sees the kept slots and
    the pass's slots up to its own."""
    keys = torch.arange(cache_length + window, device=device)
    causal = keys[None, :] <= (cache_length + torch.arange(window, device=device))[:, None]
    if slot_mask is None:
        return causal[None, None].expand(rows, 1, window, cache_length + window)
    return (causal[None] & slot_mask[:, None, :])[:, None]


def check_jacobi_callback_result(result, tokens: torch.LongTensor, step: int) -> bool:
    """What a `step_callback` returned under Jacobi decoding: `"stop"` is honoured; `"image_tokens"` may not change a
    token (later ones are already drafted and verified after it). Returns whether to stop."""
    replacement, stop = read_step_callback_result(result, tokens, step)
    if replacement is not None and not torch.equal(replacement, tokens[:, : step + 1]):
        raise ValueError(
            "`step_callback` changed image tokens, which `decoding='jacobi'` cannot honour: it has already drafted "
            "and verified the tokens after them. Use `decoding='sequential'` to edit tokens during decoding."
        )
    return stop


def jacobi_decode(
    decoder,
    cache: Cache,
    first_logits: torch.Tensor,
    *,
    num_tokens: int,
    window: int,
    guidance_scale: float,
    warpers,
    uniforms: torch.Tensor | None,
    image_positions: torch.LongTensor,
    slot_mask: torch.Tensor | None,
    output_logits: bool = False,
    step_callback=None,
):
    """
    Decode `num_tokens` image tokens per image after the prefill, `window` positions per forward pass.

    Args:
        decoder: The decoding steps (`JanusProImageDecoder` or `JanusProFastImageDecoder`): `decode_tokens`,
            `image_token_embeddings`, `image_logits`.
        cache (`Cache`): The KV cache holding the prefilled prompts of every row (conditional, then unconditional).
        first_logits (`torch.FloatTensor` of shape `(batch_size, codebook_size)`): Guided logits of the first token.
        window (`int`): Positions per pass: the last drawn token and `window - 1` drafts.
        warpers: The sampling warpers (temperature, top-k, top-p); unused when greedy.
        uniforms (`torch.FloatTensor` of shape `(batch_size, 3, num_tokens)`, *optional*):
            Each image's uniforms per position (draw, accept, draft); None decodes greedily.
        image_positions (`torch.LongTensor` of shape `(rows,)`): The position id of each row's first image token.
        slot_mask (`torch.BoolTensor` of shape `(rows, prompt_length)`, *optional*): Which prompt slots each row
            attends to (None: all).

    Returns:
        `(tokens, logits, num_passes, accepted_drafts, verified_drafts)`: tokens `(batch_size, steps)`, the guided
        logits `(batch_size, steps, codebook_size)` or None, the forward passes after the prefill, and the drafts kept
        and tested over the whole batch.
    """
    batch_size, vocab = first_logits.shape
    device = first_logits.device
    rows = image_positions.shape[0]
    greedy = uniforms is None
    drafts_per_pass = window - 1
    offsets = torch.arange(window, device=device)
    draft_offsets = offsets[:drafts_per_pass]
    if not greedy:
        draw_uniforms, accept_uniforms, draft_uniforms = uniforms.unbind(1)

    # Room for a pass's writes past the last token: entries beyond what a row has kept are overwritten later.
    tokens = torch.zeros(batch_size, num_tokens + window, dtype=torch.long, device=device)
    logits_out = first_logits.new_zeros(batch_size, num_tokens + window, vocab) if output_logits else None

    # 1. The first token, from the prefill; every draft of the first pass proposed from its distribution
    if greedy:
        tokens[:, 0] = first_logits.argmax(-1)
        drafts = tokens[:, :1].expand(batch_size, drafts_per_pass).clone()
        proposals = None
    else:
        first_probabilities = warped_probabilities(warpers, first_logits)
        tokens[:, 0] = inverse_cdf(first_probabilities, draw_uniforms[:, 0])
        proposals = first_probabilities[:, None].expand(batch_size, drafts_per_pass, vocab).contiguous()
        positions = (1 + draft_offsets).clamp(max=num_tokens - 1).expand(batch_size, -1)
        drafts = inverse_cdf(proposals, draft_uniforms.gather(1, positions))
    if output_logits:
        logits_out[:, 0] = first_logits
    drawn = torch.ones(batch_size, dtype=torch.long, device=device)  # tokens each image has drawn
    cache_length = cache.get_seq_length()
    num_passes = accepted_drafts = verified_drafts = 0
    reported = 0
    if step_callback is not None:
        if check_jacobi_callback_result(step_callback(0, tokens[:, :1]), tokens, 0):
            return tokens[:, :1], logits_out[:, :1] if output_logits else None, 0, 0, 0
        reported = 1
    guided = guidance_scale != 1.0

    # 2. Passes until every image has all its tokens
    while bool((drawn < num_tokens).any()):
        active = drawn < num_tokens
        # 2.1 One forward over the last drawn token and the drafts of every row
        inputs = torch.cat([tokens.gather(1, (drawn - 1)[:, None]), drafts], 1)
        embeds = decoder.image_token_embeddings(inputs)
        row_drawn = torch.cat([drawn, drawn]) if guided else drawn
        if guided:
            embeds = torch.cat([embeds, embeds])
        position_ids = image_positions[:, None] + (row_drawn - 1)[:, None] + offsets
        pass_mask = None
        if slot_mask is not None:
            pass_mask = torch.cat([slot_mask, slot_mask.new_ones(rows, window)], 1)
        hidden_states = decoder.decode_tokens(embeds, cache, pass_mask, position_ids, cache_length)
        logits = guide(decoder.image_logits(hidden_states), guidance_scale)  # [batch, window, vocab]
        num_passes += 1

        # 2.2 Verify the drafts left to right: `kept` leading drafts survive per image
        verifiable = (num_tokens - drawn).clamp(max=drafts_per_pass)  # 0 for finished images
        if greedy:
            predicted = logits.argmax(-1)
            keep = predicted[:, :drafts_per_pass] == drafts
        else:
            probabilities = warped_probabilities(warpers, logits)
            draft_positions = (drawn[:, None] + draft_offsets).clamp(max=num_tokens - 1)
            keep = accept_drafts(
                probabilities[:, :drafts_per_pass].gather(-1, drafts[..., None]).squeeze(-1),
                proposals.gather(-1, drafts[..., None]).squeeze(-1),
                accept_uniforms.gather(1, draft_positions),
            )
        keep &= draft_offsets < verifiable[:, None]
        kept = keep.long().cumprod(1).sum(1)
        rejected = kept < verifiable
        accepted_drafts += int(kept[active].sum())
        verified_drafts += int(torch.minimum(kept + 1, verifiable)[active].sum())

        # 2.3 The token after the kept drafts: redrawn from max(0, p - q) after a rejection, from p otherwise
        if greedy:
            next_token = predicted.gather(1, kept[:, None]).squeeze(1)
        else:
            index = kept[:, None, None].expand(batch_size, 1, vocab)
            target = probabilities.gather(1, index).squeeze(1)
            proposal = proposals.gather(1, index.clamp(max=drafts_per_pass - 1)).squeeze(1)
            residual = (target - proposal).clamp(min=0)
            mass = residual.sum(-1, keepdim=True)
            use_residual = rejected[:, None] & (mass > 0)
            target = torch.where(use_residual, residual / mass.clamp(min=torch.finfo(mass.dtype).tiny), target)
            draw_position = (drawn + kept).clamp(max=num_tokens - 1)
            next_token = inverse_cdf(target, draw_uniforms.gather(1, draw_position[:, None]).squeeze(1))
        written = torch.cat([drafts, drafts.new_zeros(batch_size, 1)], 1)
        written.scatter_(1, kept[:, None], next_token[:, None])
        write_positions = drawn[:, None] + offsets
        tokens.scatter_(1, write_positions, written)
        if output_logits:
            logits_out.scatter_(1, write_positions[..., None].expand(-1, -1, vocab), logits)
        new_drawn = torch.where(active, (drawn + kept + 1).clamp(max=num_tokens), drawn)

        # 2.4 The cache keeps the slots of the last token and the kept drafts; shorter rows mask the rest
        kept_slots = torch.where(active, kept + 1, 0)
        slots = int(kept_slots.max())
        if slots < window:
            cache.crop(slots - window)
        row_slots = torch.cat([kept_slots, kept_slots]) if guided else kept_slots
        if slot_mask is not None or bool((row_slots != slots).any()):
            if slot_mask is None:
                slot_mask = torch.ones(rows, cache_length, dtype=torch.bool, device=device)
            slot_mask = torch.cat([slot_mask, offsets[None, :slots] < row_slots[:, None]], 1)
        cache_length += slots

        # 2.5 Drafts for the next pass: this pass's outputs where it reached, its last output beyond
        source = ((new_drawn - drawn)[:, None] + draft_offsets).clamp(max=window - 1)
        if greedy:
            drafts = predicted.gather(1, source)
        else:
            proposals = probabilities.gather(1, source[..., None].expand(-1, -1, vocab))
            positions = (new_drawn[:, None] + draft_offsets).clamp(max=num_tokens - 1)
            drafts = inverse_cdf(proposals, draft_uniforms.gather(1, positions))
        drawn = new_drawn

        # 2.6 Report the steps every image has now drawn
        if step_callback is not None:
            for step in range(reported, int(drawn.min())):
                if check_jacobi_callback_result(step_callback(step, tokens[:, : step + 1]), tokens, step):
                    logits = logits_out[:, : step + 1] if output_logits else None
                    return tokens[:, : step + 1], logits, num_passes, accepted_drafts, verified_drafts
            reported = int(drawn.min())

    logits = logits_out[:, :num_tokens] if output_logits else None
    return tokens[:, :num_tokens], logits, num_passes, accepted_drafts, verified_drafts
