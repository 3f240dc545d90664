# /// script
# dependencies = [
#     "transformers-janus",
# ]
# ///
"""
Convert a checkpoint in transformers' built-in Janus format (`JanusForConditionalGeneration` + `JanusProcessor`) to
the Janus-Pro format of this package:

```
python conversion/convert_janus_to_janus_pro.py --src-dir Janus-Pro-1B-janus --dst-dir Janus-Pro-1B
python conversion/convert_janus_to_janus_pro.py --src-dir deepseek-community/Janus-Pro-7B --dst-dir Janus-Pro-7B --dtype bfloat16 --use-janus-pro-chat-template
```
"""

from dataclasses import dataclass, field


@dataclass
class ConversionArguments:
    """
    Args:
        src_dir (`str`): Built-in Janus checkpoint directory or Hub id.
        dst_dir (`str`): Output directory of the Janus-Pro checkpoint.
        dtype (`str`, *optional*): `float32`, `bfloat16` or `float16`; by default the checkpoint's own.
        max_shard_size (`str`, *optional*, defaults to `"5GB"`): Largest weight file written.
        use_janus_pro_chat_template (`bool`, *optional*, defaults to `False`):
            Replace the processor's chat template with this package's (DeepSeek's format with the default system
            prompt); needed when the built-in processor has `use_default_system_prompt=True`.
    """

    src_dir: str = field(metadata={"help": "Built-in Janus checkpoint directory or Hub id."})
    dst_dir: str = field(metadata={"help": "Output directory of the Janus-Pro checkpoint."})
    dtype: str | None = field(
        default=None,
        metadata={
            "help": "Weights dtype; by default the checkpoint's own.",
            "choices": ["float32", "bfloat16", "float16"],
        },
    )
    max_shard_size: str = field(default="5GB", metadata={"help": "Largest weight file written."})
    use_janus_pro_chat_template: bool = field(
        default=False,
        metadata={
            "help": "Replace the processor's chat template with this package's (DeepSeek's format with the default "
            "system prompt); needed when the built-in processor has `use_default_system_prompt=True`."
        },
    )


def make_parser():
    from transformers import HfArgumentParser

    return HfArgumentParser(ConversionArguments)


def main(args: ConversionArguments):
    from transformers_janus.convert_janus import convert_janus_to_janus_pro
    from transformers_janus.processing_janus_pro import CHAT_TEMPLATE

    # Load, convert and save the model and its processor
    chat_template = CHAT_TEMPLATE if args.use_janus_pro_chat_template else None
    convert_janus_to_janus_pro(
        args.src_dir, args.dst_dir, dtype=args.dtype, max_shard_size=args.max_shard_size, chat_template=chat_template
    )


if __name__ == "__main__":
    parser = make_parser()
    (args,) = parser.parse_args_into_dataclasses()
    main(args)
