"""The `janus-pro` console script: `janus-pro chat` answers a question about an image, streaming to stdout."""

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
