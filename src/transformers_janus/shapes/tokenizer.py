"""
The shapes world's text tokenizer: a byte-level BPE trained with `tokenizers` on the world's text, laid out like
DeepSeek's Janus tokenizer (byte-level pre-tokenizer and decoder, BOS added by a template, the same special tokens by
text), so the processor, the chat template and the special-token lookup treat it as they treat Janus-Pro's.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..processing_janus_pro import DEFAULT_SYSTEM_PROMPT


BOS_TOKEN = "<｜begin▁of▁sentence｜>"
EOS_TOKEN = "<｜end▁of▁sentence｜>"
PAD_TOKEN = "<｜▁pad▁｜>"
# Janus-Pro's added tokens after the three above (DeepSeek's tokenizer.json, in its order).
ADDITIONAL_SPECIAL_TOKENS = [
    "<image_placeholder>", "<patch_placeholder>", "<|ref|>", "<|/ref|>", "<|det|>", "<|/det|>", "<|grounding|>",
    "<|User|>", "<|Assistant|>", "<begin_of_image>", "<end_of_image>",
]


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1024, model_max_length: int = 4096):
    """
    Train a byte-level BPE of `vocab_size` tokens (special tokens included) on `texts` and return it as a
    `transformers` fast tokenizer. The default system prompt of the chat format is part of the corpus, so it costs a
    token per word rather than per byte.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    special = [BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, *ADDITIONAL_SPECIAL_TOKENS]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [DEFAULT_SYSTEM_PROMPT, *texts]
    tokenizer.train_from_iterator(corpus, trainer=trainer, length=len(corpus))
    bos_id = tokenizer.token_to_id(BOS_TOKEN)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A", pair=f"{BOS_TOKEN} $A {BOS_TOKEN} $B", special_tokens=[(BOS_TOKEN, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        additional_special_tokens=ADDITIONAL_SPECIAL_TOKENS,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    )


def conversation_texts(records: Iterable[dict]) -> Iterable[str]:
    """The text of `{"messages"}` / `{"caption"}` records (what the tokenizer is trained on)."""
    for record in records:
        if "caption" in record:
            yield record["caption"]
        for message in record.get("messages", ()):
            content = message["content"]
            yield content.replace("<image_placeholder>", " ") if isinstance(content, str) else " ".join(
                item.get("text", "") for item in content)


__all__ = ["ADDITIONAL_SPECIAL_TOKENS", "BOS_TOKEN", "EOS_TOKEN", "PAD_TOKEN", "conversation_texts",
           "train_tokenizer"]
