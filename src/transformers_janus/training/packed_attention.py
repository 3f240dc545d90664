"""
Attention for packed rows that costs what the samples cost: `scaled_dot_product_attention` run causally on each
packed sample apart, instead of one masked attention over the whole row.

A packed row keeps its samples apart either way: with `position_ids` restarting per sample, transformers builds a
block-diagonal causal mask, but SDPA then computes the full `row x row` product and masks it, so a row of four
1000-token samples costs four times the attention of the samples alone. Given the sample boundaries
(`cu_seq_lens_q`, the cumulative sample lengths over the batch's rows one after another, which
`JanusProDataCollator(packing=True, return_seq_lens=True)` emits in transformers' flash-attention keyword format),
`packed_sdpa_attention_forward` runs SDPA with `is_causal=True` per sample. Without boundaries (unpacked batches,
generation) it is transformers' SDPA unchanged.

    from transformers_janus.training.packed_attention import PACKED_SDPA, register_packed_sdpa
    register_packed_sdpa()
    model.set_attn_implementation({"text_config": PACKED_SDPA})
"""

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask


PACKED_SDPA = "janus_packed_sdpa"


def packed_sdpa_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    cu_seq_lens_q: torch.Tensor | None = None,
    cu_seq_lens_k: torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """
    `query`/`key`/`value` `[batch, heads, seq, head_dim]`; with `cu_seq_lens_q` (`[num_samples + 1]`, offsets into
    the `batch * seq` tokens read row after row), causal SDPA per sample. Returns `[batch, seq, heads, head_dim]`, as
    transformers' attention functions do.
    """
    if cu_seq_lens_q is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    if cu_seq_lens_k is not None and not torch.equal(cu_seq_lens_k, cu_seq_lens_q):
        raise ValueError("Packed attention needs the same sample boundaries for queries and keys (no cache).")
    batch, heads, length, head_dim = query.shape
    if key.shape[2] != length:
        raise ValueError(
            f"Packed attention runs without a cache: {length} queries but {key.shape[2]} keys. Pass `use_cache=False`."
        )
    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)

    def tokens_in_order(states: torch.Tensor) -> torch.Tensor:  # [1, heads, batch * seq, head_dim], rows one by one
        # 4-D, as SDPA's fused CPU (flash) kernel needs; 3-D inputs fall back to the unfused math path
        return states.transpose(0, 1).reshape(1, heads, batch * length, head_dim)

    query, key, value = tokens_in_order(query), tokens_in_order(key), tokens_in_order(value)
    bounds = cu_seq_lens_q.tolist()
    if bounds[0] != 0 or bounds[-1] != batch * length:
        raise ValueError(
            f"`cu_seq_lens_q` must run from 0 to the batch's {batch * length} tokens (rows one after another), got "
            f"{bounds[0]} .. {bounds[-1]}."
        )
    dropout = dropout if module.training else 0.0
    # `split`, not slicing: the backward of one split is one concatenation, that of each slice a full-size zero tensor
    lengths = [end - start for start, end in zip(bounds[:-1], bounds[1:])]
    outputs = [
        torch.nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True, scale=scaling)
        for q, k, v in zip(query.split(lengths, 2), key.split(lengths, 2), value.split(lengths, 2))
    ]
    output = torch.cat(outputs, dim=2).view(heads, batch, length, head_dim)
    return output.permute(1, 2, 0, 3).contiguous(), None


def sample_boundaries(position_ids: torch.LongTensor) -> dict[str, torch.Tensor | int]:
    """
    transformers' flash-attention keywords (`cu_seq_lens_q/k`, `max_length_q/k`) for packed `position_ids`
    `[batch, seq]` (each sample restarting at 0; rows read one after another). Run it where the batch is built (on
    the CPU), so the training step needs no host sync.
    """
    flat = position_ids.reshape(-1)
    starts = torch.nonzero(flat == 0).flatten()
    row_starts = torch.arange(0, flat.numel(), position_ids.shape[1])
    starts = torch.unique(torch.cat([starts, row_starts]))  # a row always starts a sample
    cu_seq_lens = torch.cat([starts, torch.tensor([flat.numel()])]).to(torch.int32)
    max_length = int((cu_seq_lens[1:] - cu_seq_lens[:-1]).max())
    return {
        "cu_seq_lens_q": cu_seq_lens,
        "cu_seq_lens_k": cu_seq_lens,
        "max_length_q": max_length,
        "max_length_k": max_length,
    }


def register_packed_sdpa() -> str:
    """Register `PACKED_SDPA` with transformers' attention and mask interfaces (idempotent); returns its name."""
    AttentionInterface.register(PACKED_SDPA, packed_sdpa_attention_forward)
    AttentionMaskInterface.register(PACKED_SDPA, sdpa_mask)
    return PACKED_SDPA


__all__ = ["PACKED_SDPA", "packed_sdpa_attention_forward", "register_packed_sdpa", "sample_boundaries"]
