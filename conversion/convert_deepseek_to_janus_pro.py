# /// script
# dependencies = [
#     "transformers-janus",
# ]
# ///
"""
Convert a checkpoint as DeepSeek published it (`model_type: "multi_modality"`) to this package's format (safetensors,
`model_type: "janus_pro"`, processor included):

```
python conversion/convert_deepseek_to_janus_pro.py --src-dir deepseek-ai/Janus-Pro-1B --dst-dir Janus-Pro-1B-hf
python conversion/convert_deepseek_to_janus_pro.py --src-dir Janus-Pro-7B --dst-dir Janus-Pro-7B-hf --dtype bfloat16 --max-shard-size 2GB
```
"""

from dataclasses import dataclass, field


@dataclass
class ConversionArguments:
    """
    Args:
        src_dir (`str`): DeepSeek's checkpoint directory or Hub id.
        dst_dir (`str`): Output directory.
        dtype (`str`, *optional*): `float32`, `bfloat16` or `float16`; by default the checkpoint's own.
        max_shard_size (`str`, *optional*, defaults to `"5GB"`): Largest weight file written.
    """

    src_dir: str = field(metadata={"help": "DeepSeek's checkpoint directory or Hub id."})
    dst_dir: str = field(metadata={"help": "Output directory."})
    dtype: str | None = field(
        default=None,
        metadata={"help": "Weights dtype; by default the checkpoint's own.", "choices": ["float32", "bfloat16", "float16"]},
    )
    max_shard_size: str = field(default="5GB", metadata={"help": "Largest weight file written."})


def make_parser():
    from transformers import HfArgumentParser

    return HfArgumentParser(ConversionArguments)


def main(args: ConversionArguments):
    from transformers_janus.convert_deepseek import convert_deepseek_to_janus_pro

    # Load (mapping DeepSeek's keys), then save model and processor in our format
    convert_deepseek_to_janus_pro(args.src_dir, args.dst_dir, dtype=args.dtype, max_shard_size=args.max_shard_size)


if __name__ == "__main__":
    parser = make_parser()
    (args,) = parser.parse_args_into_dataclasses()
    main(args)
