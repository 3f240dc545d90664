"""
The arguments of a checkpoint conversion, shared by every entry point (`janus-pro convert` and the scripts in the
repository's `conversion/` folder), and the one function they call. Nothing heavy is imported here, so that
`--help` answers at once.
"""

from dataclasses import dataclass, field


DTYPE_CHOICES = ["float32", "bfloat16", "float16"]
TARGET_CHOICES = ["ours", "janus"]


@dataclass
class ConversionArguments:
    """
    Args:
        src_dir (`str`): Checkpoint directory or Hub id; its format (DeepSeek's, ours or the built-in `janus`) is read
            from its config.json.
        dst_dir (`str`): Output directory.
        to (`str`, *optional*): Target format, `ours` (`janus_pro`) or `janus` (transformers' built-in); by default
            ours, or janus when the source is already ours.
        dtype (`str`, *optional*): `float32`, `bfloat16` or `float16`; by default the checkpoint's own.
        max_shard_size (`str`, *optional*, defaults to `"5GB"`): Largest weight file written.
        use_janus_pro_chat_template (`bool`, *optional*, defaults to `False`):
            For a built-in `janus` source: replace the processor's chat template with this package's (DeepSeek's
            format with the default system prompt); needed when the built-in processor has
            `use_default_system_prompt=True`.
    """

    src_dir: str = field(metadata={"help": "Checkpoint directory or Hub id (format read from its config.json)."})
    dst_dir: str = field(metadata={"help": "Output directory."})
    to: str | None = field(
        default=None,
        metadata={
            "help": "Target format: 'ours' (janus_pro) or 'janus' (transformers' built-in); default: ours, or janus "
            "from ours.",
            "choices": TARGET_CHOICES,
        },
    )
    dtype: str | None = field(
        default=None,
        metadata={"help": "Weights dtype; by default the checkpoint's own.", "choices": DTYPE_CHOICES},
    )
    max_shard_size: str = field(default="5GB", metadata={"help": "Largest weight file written, as `save_pretrained` takes it."})
    use_janus_pro_chat_template: bool = field(
        default=False,
        metadata={
            "help": "For a built-in janus source: replace the processor's chat template with this package's "
            "(DeepSeek's format with the default system prompt); needed when the built-in processor has "
            "`use_default_system_prompt=True`."
        },
    )


def make_conversion_parser(**defaults):
    """
    An `HfArgumentParser` of [`ConversionArguments`]; `defaults` (e.g. `to="janus"`) set a script's own defaults.
    """
    from transformers import HfArgumentParser

    parser = HfArgumentParser(ConversionArguments)
    parser.set_defaults(**defaults)
    return parser


def run_conversion(args: ConversionArguments):
    """Run the conversion `args` describe; returns [`ConvertedCheckpoint`] (the model and both formats)."""
    from ..processing_janus_pro import CHAT_TEMPLATE
    from .directories import convert_checkpoint

    return convert_checkpoint(
        args.src_dir,
        args.dst_dir,
        to=args.to,
        dtype=args.dtype,
        max_shard_size=args.max_shard_size,
        chat_template=CHAT_TEMPLATE if args.use_janus_pro_chat_template else None,
    )


__all__ = ["ConversionArguments", "make_conversion_parser", "run_conversion"]
