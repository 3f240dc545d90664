"""
The `janus-pro` console script: `chat` answers a question about an image (streaming), `generate` makes images from a
prompt, `convert` moves checkpoints between DeepSeek's format, ours and transformers' built-in `janus`.
"""

import argparse
import sys


DEFAULT_MODEL = "deepseek-ai/Janus-Pro-1B"
DTYPES = ("float32", "bfloat16", "float16")


class CommandError(Exception):
    """A problem with the command line (missing file, not an image, ...): printed without a traceback."""


def _existing_path(path: str, what: str):
    from pathlib import Path

    if not Path(path).exists():
        raise CommandError(f"{what} {path!r} does not exist.")
    return Path(path)


def load_image(path: str):
    """Open an image file, with an error that names the file when it is not an image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(_existing_path(path, "Image")) as image:
            image.load()
            return image.copy()
    except (UnidentifiedImageError, OSError) as error:
        raise CommandError(f"{path!r} is not an image PIL can read ({error}); pass a PNG, JPEG, WebP, ... file.") from error


def load_model_and_processor(model_name_or_path: str, dtype: str):
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    import transformers_janus  # noqa: F401  (registers the Auto classes)

    try:
        processor = AutoProcessor.from_pretrained(model_name_or_path)
        model = AutoModelForImageTextToText.from_pretrained(model_name_or_path, dtype=getattr(torch, dtype))
    except OSError as error:
        raise CommandError(
            f"cannot load the model {model_name_or_path!r}: {error}. Pass `--model` a checkpoint directory or a hub id."
        ) from error
    return model.eval(), processor


def chat(args: argparse.Namespace) -> int:
    import torch
    from transformers import TextStreamer

    image = load_image(args.image)
    model, processor = load_model_and_processor(args.model, args.dtype)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": args.question}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(text=prompt, images=[image], return_tensors="pt").to(model.device)
    streamer = TextStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
    with torch.no_grad():
        model.generate(**inputs, max_new_tokens=args.max_new_tokens, do_sample=False, streamer=streamer)
    return 0


def convert(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .conversion import ConversionArguments, run_conversion

    if Path(args.src_dir).resolve() == Path(args.dst_dir).resolve():
        raise CommandError("SRC and DST are the same directory; write the converted checkpoint elsewhere.")
    fields = {name: getattr(args, name) for name in ConversionArguments.__dataclass_fields__}
    result = run_conversion(ConversionArguments(**fields))
    print(f"Converted {args.src_dir} ({result.source_format}) to {args.dst_dir} ({result.target_format}).")
    return 0


def generate(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from .pipeline_janus_pro import JanusProImagePipeline

    if args.num_images < 1:
        raise CommandError(f"--num-images must be at least 1, got {args.num_images}.")
    output = Path(args.output)
    if output.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
        raise CommandError(f"-o/--output {args.output!r} must end in .png, .jpg, .jpeg or .webp.")
    try:
        pipe = JanusProImagePipeline.from_pretrained(args.model, torch_dtype=getattr(torch, args.dtype))
    except OSError as error:
        raise CommandError(f"cannot load the model {args.model!r}: {error}.") from error
    generators = [torch.Generator().manual_seed(args.seed + index) for index in range(args.num_images)]
    images = pipe(
        args.prompt,
        num_images_per_prompt=args.num_images,
        guidance_scale=args.guidance_scale,
        temperature=args.temperature,
        generator=generators,
    ).images
    output.parent.mkdir(parents=True, exist_ok=True)
    paths = [output] if len(images) == 1 else [output.with_name(f"{output.stem}-{i}{output.suffix}") for i in range(len(images))]
    for image, path in zip(images, paths):
        image.save(path)
        print(path)
    return 0


def add_conversion_arguments(parser: argparse.ArgumentParser):
    """`SRC DST [--to] [--dtype] ...`: the fields of the conversion's arguments dataclass, SRC and DST positional."""
    from dataclasses import MISSING, fields

    from .conversion.arguments import ConversionArguments

    for argument in fields(ConversionArguments):
        help_text = argument.metadata["help"]
        if argument.default is MISSING:  # the source and destination directories
            parser.add_argument(argument.name, metavar=argument.name.split("_")[0].upper(), help=help_text)
        elif argument.type in (bool, "bool"):
            parser.add_argument(f"--{argument.name.replace('_', '-')}", action="store_true", help=help_text)
        else:
            default = f" (default: {argument.default})" if argument.default is not None else ""
            parser.add_argument(
                f"--{argument.name.replace('_', '-')}",
                dest=argument.name,
                default=argument.default,
                choices=argument.metadata.get("choices"),
                help=help_text + default,
            )


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="janus-pro", description="Janus-Pro on the Hugging Face stack.")
    subparsers = parser.add_subparsers(dest="command", required=True)

    chat_parser = subparsers.add_parser("chat", help="Answer a question about an image (streams the answer).")
    chat_parser.add_argument("question", help="The question about the image.")
    chat_parser.add_argument("--image", required=True, help="Path of the image file.")
    chat_parser.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"Model directory (DeepSeek's format or ours) or hub id (default {DEFAULT_MODEL})."
    )
    chat_parser.add_argument("--max-new-tokens", type=int, default=256, help="Longest answer, in tokens (default 256).")
    chat_parser.add_argument("--dtype", choices=DTYPES, default="float32", help="Weights dtype (default float32).")
    chat_parser.set_defaults(handler=chat)

    generate_parser = subparsers.add_parser("generate", help="Make images from a text prompt.")
    generate_parser.add_argument("prompt", help="What the image should show.")
    generate_parser.add_argument("-o", "--output", required=True, help="Output file (.png, ...); -0, -1, ... are added for several images.")
    generate_parser.add_argument("--model", default=DEFAULT_MODEL, help=f"Model directory or hub id (default {DEFAULT_MODEL}).")
    generate_parser.add_argument("--num-images", type=int, default=1, help="Images to make (default 1).")
    generate_parser.add_argument("--seed", type=int, default=0, help="Seed of the first image; image i uses seed + i (default 0).")
    generate_parser.add_argument("--guidance-scale", type=float, default=5.0, help="Classifier-free guidance weight (default 5).")
    generate_parser.add_argument("--temperature", type=float, default=1.0, help="Sampling temperature (default 1).")
    generate_parser.add_argument("--dtype", choices=DTYPES, default="float32", help="Weights dtype (default float32).")
    generate_parser.set_defaults(handler=generate)

    convert_parser = subparsers.add_parser(
        "convert", help="Convert a checkpoint between DeepSeek's format, ours and transformers' built-in janus."
    )
    add_conversion_arguments(convert_parser)
    convert_parser.set_defaults(handler=convert)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (CommandError, ValueError, OSError) as error:  # expected failures: one line, no traceback
        print(f"janus-pro {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
