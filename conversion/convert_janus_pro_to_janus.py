# /// script
# dependencies = [
#     "transformers-janus",
# ]
# ///
"""
Convert a Janus-Pro checkpoint (this package's format, or DeepSeek's published `multi_modality` one) to transformers'
built-in Janus format (`JanusForConditionalGeneration` + `JanusProcessor`):

```
python conversion/convert_janus_pro_to_janus.py --src-dir deepseek-ai/Janus-Pro-1B --dst-dir Janus-Pro-1B-janus
python conversion/convert_janus_pro_to_janus.py --src-dir Janus-Pro-7B --dst-dir Janus-Pro-7B-janus --dtype bfloat16 --max-shard-size 2GB
```
"""

from dataclasses import dataclass, field


@dataclass
class ConversionArguments:
    """
    Args:
        src_dir (`str`): Janus-Pro checkpoint directory or Hub id (ours or DeepSeek's).
        dst_dir (`str`): Output directory of the built-in Janus checkpoint.
        dtype (`str`, *optional*): `float32`, `bfloat16` or `float16`; by default the checkpoint's own.
        max_shard_size (`str`, *optional*, defaults to `"5GB"`): Largest weight file written.
    """

    src_dir: str = field(metadata={"help": "Janus-Pro checkpoint directory or Hub id (ours or DeepSeek's)."})
    dst_dir: str = field(metadata={"help": "Output directory of the built-in Janus checkpoint."})
    dtype: str | None = field(
        default=None,
        metadata={
            "help": "Weights dtype; by default the checkpoint's own.",
            "choices": ["float32", "bfloat16", "float16"],
        },
    )
    max_shard_size: str = field(default="5GB", metadata={"help": "Largest weight file written."})


def make_parser():
    from transformers import HfArgumentParser

    return HfArgumentParser(ConversionArguments)


def main(args: ConversionArguments):
    from transformers_janus.convert_janus import convert_janus_pro_to_janus

    # Load, convert and save the model and its processor
    convert_janus_pro_to_janus(args.src_dir, args.dst_dir, dtype=args.dtype, max_shard_size=args.max_shard_size)


if __name__ == "__main__":
    parser = make_parser()
    (args,) = parser.parse_args_into_dataclasses()
    main(args)
