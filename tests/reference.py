"""
The parity oracle of text-to-image decoding: DeepSeek's loop (`generate` in deepseek-ai/Janus
`generation_inference.py`, SPEC §4) re-implemented on our model's submodules, step for step.

`tests/test_image_generation.py::test_reference_loop_reproduces_deepseeks_golden_tokens_and_logits` anchors it to
the golden fixture (tokens and logits DeepSeek's own code produced), so "identical to the reference" in the tests and
in `benchmarks/bench_generate.py` (which imports this file) means identical to DeepSeek's numbers. It deliberately
uses the submodules (`gen_head`, `gen_aligner(gen_embed(...))`) and not the model's generation code, which is what
it checks.
"""

import torch


@torch.no_grad()
def reference_generate(
    model,
    input_ids: torch.LongTensor,
    parallel_size: int,
    cfg_weight: float = 5.0,
    temperature: float = 1.0,
    greedy: bool = False,
    generator: torch.Generator | None = None,
    output_logits: bool = False,
):
    """
    DeepSeek's text-to-image loop written against our model's submodules: rows interleaved conditional /
    unconditional (every token but the first and the last replaced by pad), one
    `language_model(inputs_embeds=..., use_cache=True, cache=...)` call per step, the image head on the last hidden
    state, `uncond + w * (cond - uncond)` in the model's dtype, a `torch.multinomial` draw from
    `softmax(logits / temperature)` (argmax when `greedy`), and the token fed back to both rows as
    `gen_aligner(gen_embed(token))` (DeepSeek's `prepare_gen_img_embeds`).

    Args:
        input_ids: The prompt, `[seq_len]`, ending with `<begin_of_image>`.
        parallel_size: Images to make.
        output_logits: Also return the guided logits of every step, `[parallel_size, num_image_tokens, codebook]`.

    Returns:
        The image tokens, `[parallel_size, num_image_tokens]` (and the logits when `output_logits`).
    """
    janus = model.model
    num_image_tokens = model.config.num_image_tokens
    tokens = input_ids[None].repeat(parallel_size * 2, 1)
    tokens[1::2, 1:-1] = model.config.pad_token_id
    inputs_embeds = janus.language_model.get_input_embeddings()(tokens)
    generated = torch.zeros((parallel_size, num_image_tokens), dtype=torch.int, device=input_ids.device)
    step_logits = []
    cache = None
    for step in range(num_image_tokens):
        # `past_key_values` is called `cache` in this transformers.
        outputs = janus.language_model(inputs_embeds=inputs_embeds, use_cache=True, cache=cache)
        cache = outputs.cache
        logits = janus.gen_head(outputs.last_hidden_state[:, -1, :])
        logit_cond, logit_uncond = logits[0::2, :], logits[1::2, :]
        logits = logit_uncond + cfg_weight * (logit_cond - logit_uncond)
        step_logits.append(logits)
        if greedy:
            next_token = logits.argmax(-1, keepdim=True)
        else:
            probs = torch.softmax(logits / temperature, dim=-1)
            next_token = torch.multinomial(probs, num_samples=1, generator=generator)
        generated[:, step] = next_token.squeeze(dim=-1)
        next_token = torch.cat([next_token.unsqueeze(dim=1), next_token.unsqueeze(dim=1)], dim=1).view(-1)
        inputs_embeds = janus.gen_aligner(janus.gen_embed(next_token)).unsqueeze(dim=1)
    if output_logits:
        return generated, torch.stack(step_logits, 1)
    return generated
