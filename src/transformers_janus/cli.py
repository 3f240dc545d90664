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


def checkpoint_format(name_or_path: str) -> str:
    """`deepseek`, `ours` or `janus`, from the checkpoint's config.json."""
    import json

    from transformers.utils import cached_file

    try:
        config_file = cached_file(name_or_path, "config.json", _raise_exceptions_for_missing_entries=False)
    except OSError as error:  # neither a local directory nor a reachable hub repository
        raise CommandError(f"{name_or_path!r} does not exist locally and cannot be fetched ({error}).") from error
    if config_file is None:
        raise CommandError(f"{name_or_path!r} has no config.json: it is not a checkpoint directory (or hub id).")
    with open(config_file, encoding="utf-8") as handle:
        model_type = json.load(handle).get("model_type")
    formats = {"multi_modality": "deepseek", "janus_pro": "ours", "janus": "janus"}
    if model_type not in formats:
        raise CommandError(
            f"{name_or_path!r} holds a {model_type!r} model; `janus-pro convert` reads Janus-Pro checkpoints in "
            "DeepSeek's format (multi_modality), ours (janus_pro) or transformers' built-in one (janus)."
        )
    return formats[model_type]


def convert(args: argparse.Namespace) -> int:
    from pathlib import Path

    if Path(args.source).resolve() == Path(args.destination).resolve():
        raise CommandError("SRC and DST are the same directory; write the converted checkpoint elsewhere.")
    source_format = checkpoint_format(args.source)
    target = args.to or ("janus" if source_format == "ours" else "ours")
    if source_format == target == "janus":
        raise CommandError(f"{args.source!r} is already in transformers' built-in janus format.")

    from .convert_deepseek import convert_deepseek_to_janus_pro
    from .convert_janus import JanusConversionError, convert_janus_pro_to_janus, convert_janus_to_janus_pro

    if target == "janus":
        converter = convert_janus_pro_to_janus
    elif source_format == "janus":
        converter = convert_janus_to_janus_pro
    else:
        converter = convert_deepseek_to_janus_pro  # DeepSeek's format, or ours re-saved in another dtype/sharding
    try:
        converter(args.source, args.destination, dtype=args.dtype, max_shard_size=args.max_shard_size)
    except JanusConversionError as error:
        raise CommandError(str(error)) from error
    print(f"Converted {args.source} ({source_format}) to {args.destination} ({target}).")
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
    convert_parser.add_argument("source", metavar="SRC", help="Checkpoint directory or hub id (format detected).")
    convert_parser.add_argument("destination", metavar="DST", help="Output directory.")
    convert_parser.add_argument(
        "--to", choices=("ours", "janus"), default=None,
        help="Target format: 'ours' (janus_pro) or 'janus' (transformers' built-in); default: ours, or janus from ours.",
    )
    convert_parser.add_argument("--dtype", choices=DTYPES, default=None, help="Weights dtype (default: the checkpoint's).")
    convert_parser.add_argument("--max-shard-size", default="5GB", help="Largest weight file written (default 5GB).")
    convert_parser.set_defaults(handler=convert)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return args.handler(args)
    except CommandError as error:
        print(f"janus-pro {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
