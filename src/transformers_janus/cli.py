"""
The `janus-pro` console script: `chat` answers a question about an image (streaming), `generate` makes images from a
prompt, `convert` moves checkpoints between DeepSeek's format, ours and transformers' built-in `janus`, `eval-shapes`
scores a shapes-world model GenEval-style and on VQA (docs/shapes.md).
"""

import argparse
import sys

from . import DEFAULT_MODEL


# `eval-shapes --model`'s default: the shipped shapes-world model (None would make `--model` required).
EVAL_SHAPES_DEFAULT_MODEL = DEFAULT_MODEL
SHIPPED = "the shipped shapes-world model, transformers_janus.DEFAULT_MODEL"
DTYPES = ("float32", "bfloat16", "float16")
DEVICES = ("auto", "cpu", "cuda", "mps")


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


def resolve_device(device: str) -> str:
    """`auto` is CUDA when available, then Apple's MPS, then the CPU; an explicit device must be available."""
    import torch

    mps_available = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if mps_available else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise CommandError("--device cuda: this torch sees no CUDA GPU; pass --device cpu (or auto).")
    if device == "mps" and not mps_available:
        raise CommandError("--device mps: this torch sees no Apple MPS device; pass --device cpu (or auto).")
    return device


def resolve_dtype(dtype: str, device: str):
    """`auto` is bfloat16 on a GPU (float16 on a CUDA GPU without bfloat16) and float32 on the CPU."""
    import torch

    if dtype != "auto":
        return getattr(torch, dtype)
    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if device == "mps" else torch.float32


def _hub_is_reachable(timeout: float = 3.0) -> bool:
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=timeout)
    except Exception:  # any failure to connect (DNS, refused, timeout, proxy) means the same to the user
        return False
    return True


def hub_loading_kwargs(model: str) -> dict:
    """
    Fail fast, with what to do, when `--model` names a Hub repository that cannot be had: with no network the
    download would spend minutes in retries before failing. A repository already in the local cache is loaded from
    it (`local_files_only`) when the Hub cannot be reached.
    """
    from pathlib import Path

    from huggingface_hub import constants
    from transformers.utils import cached_file

    if Path(model).exists():
        return {}
    try:
        cached = cached_file(model, "config.json", local_files_only=True, _raise_exceptions_for_missing_entries=False)
    except (OSError, ValueError) as error:  # not a local path, and not a valid repository id either
        raise CommandError(
            f"cannot load the model {model!r}: it does not exist locally and is not a Hub id ({error}). Pass `--model` "
            "a checkpoint directory or a hub id."
        ) from error
    if cached is not None:
        return {} if not constants.HF_HUB_OFFLINE and _hub_is_reachable() else {"local_files_only": True}
    if constants.HF_HUB_OFFLINE:
        raise CommandError(
            f"cannot load the model {model!r}: it is not a local directory and not in the Hugging Face cache, and "
            "HF_HUB_OFFLINE=1 forbids downloading it. Pass `--model` a local checkpoint directory, or unset "
            "HF_HUB_OFFLINE to download it."
        )
    if not _hub_is_reachable():
        raise CommandError(
            f"cannot load the model {model!r}: the Hugging Face Hub ({constants.ENDPOINT}) cannot be reached and the "
            "model is not in the local cache. Pass `--model` a local checkpoint directory, or set HF_HUB_OFFLINE=1 "
            "to use only what is cached."
        )
    return {}


def load_model_and_processor(model_name_or_path: str, dtype: str, device: str = "cpu"):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    import transformers_janus  # noqa: F401  (registers the Auto classes)

    device = resolve_device(device)
    loading_kwargs = hub_loading_kwargs(model_name_or_path)
    try:
        processor = AutoProcessor.from_pretrained(model_name_or_path, **loading_kwargs)
        model = AutoModelForImageTextToText.from_pretrained(
            model_name_or_path, dtype=resolve_dtype(dtype, device), **loading_kwargs
        )
    except OSError as error:
        raise CommandError(
            f"cannot load the model {model_name_or_path!r}: {error}. Pass `--model` a checkpoint directory or a hub id."
        ) from error
    return model.to(device).eval(), processor


def chat(args: argparse.Namespace) -> int:
    import torch
    from transformers import TextStreamer

    image = load_image(args.image)
    model, processor = load_model_and_processor(args.model, args.dtype, args.device)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": args.question}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(text=prompt, images=[image], return_tensors="pt").to(model.device)
    streamer = TextStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
    with torch.no_grad():
        model.generate(**inputs, max_new_tokens=args.max_new_tokens, do_sample=False, streamer=streamer)
    return 0


def convert(args: argparse.Namespace) -> int:
    from .conversion.arguments import ConversionArguments, run_conversion

    fields = {name: getattr(args, name) for name in ConversionArguments.__dataclass_fields__}
    result = run_conversion(ConversionArguments(**fields))
    print(f"Converted {args.src_dir} ({result.source_format}) to {args.dst_dir} ({result.target_format}).")
    return 0


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def output_paths(output: str, num_images: int, overwrite: bool):
    """
    The files `generate` writes (`output`, or `stem-0`, `stem-1`, ... for several images) and the stale numbered
    files of an earlier run with more images (`stem-N`, ... beyond this run's set), checked before any work: the
    folder must not be a file, the output not a directory, and nothing may be overwritten without `overwrite`
    (which also removes the stale numbered files, so that the folder holds one run's set only).
    """
    import re
    from pathlib import Path

    path = Path(output)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise CommandError(f"-o/--output {output!r} must end in .png, .jpg, .jpeg or .webp.")
    if path.is_dir():
        raise CommandError(f"-o/--output {output!r} is a directory; name the image file to write, e.g. {output}/image.png.")
    for ancestor in path.parents:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise CommandError(f"-o/--output {output!r} lies under {str(ancestor)!r}, which is a file, not a folder.")
            break
    if num_images == 1:
        paths = [path]
        stale = []
    else:
        paths = [path.with_name(f"{path.stem}-{index}{path.suffix}") for index in range(num_images)]
        numbered = re.compile(rf"{re.escape(path.stem)}-(\d+){re.escape(path.suffix)}")
        stale = sorted(
            (other for other in path.parent.glob(f"{path.stem}-*{path.suffix}")
             if (match := numbered.fullmatch(other.name)) and int(match.group(1)) >= num_images),
            key=lambda other: int(numbered.fullmatch(other.name).group(1)),
        )
    existing = [str(file) for file in paths + stale if file.exists() or file.is_symlink()]
    if existing and not overwrite:
        raise CommandError(
            f"{existing[:5]}{' ...' if len(existing) > 5 else ''} already exist"
            + (" (numbered files beyond this run's set are from an earlier run)" if stale else "")
            + "; pass --overwrite to replace them (and remove the stale numbered ones), or pick another -o/--output."
        )
    for file in paths:
        if file.is_dir():
            raise CommandError(f"{str(file)!r} is a directory; pick another -o/--output.")
    return paths, stale


def save_images_atomically(images, paths) -> list:
    """
    Write every image under a temporary name in its folder, then move them into place (`os.replace`), so that an
    interrupted or failed save never leaves a partial file nor destroys the previous one.
    """
    import os
    import uuid

    paths[0].parent.mkdir(parents=True, exist_ok=True)
    temporary = []
    try:
        for image, path in zip(images, paths):
            partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial{path.suffix}")
            temporary.append(partial)
            image.save(partial)
        for partial, path in zip(temporary, paths):
            os.replace(partial, path)
    finally:
        for partial in temporary:
            if partial.exists():
                partial.unlink()
    return paths


def generate(args: argparse.Namespace) -> int:
    import torch

    from .pipeline_janus_pro import JanusProImagePipeline

    if args.num_images < 1:
        raise CommandError(f"--num-images must be at least 1, got {args.num_images}.")
    # Outputs and device first: nothing is loaded or generated for a run that could not be saved.
    paths, stale = output_paths(args.output, args.num_images, args.overwrite)
    device = resolve_device(args.device)
    loading_kwargs = hub_loading_kwargs(args.model)
    try:
        pipe = JanusProImagePipeline.from_pretrained(
            args.model, torch_dtype=resolve_dtype(args.dtype, device), **loading_kwargs
        ).to(device)
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
    for path in save_images_atomically(images, paths):
        print(f"Wrote {path}")
    for path in stale:
        path.unlink()
        print(f"Removed {path} (a numbered image of an earlier run with more images)")
    return 0


def eval_shapes(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .shapes.evaluation import eval_data_files, evaluate_shapes, format_report, load_shapes_pipeline, write_result

    for name, least in (("batch_size", 1), ("images_per_prompt", 1), ("max_new_tokens", 1), ("top_k", 1),
                        ("max_prompts", 0), ("max_questions", 0)):
        value = getattr(args, name)
        if value is not None and value < least:
            raise CommandError(f"--{name.replace('_', '-')} must be at least {least}, got {value}.")
    if args.output is not None and Path(args.output).is_dir():
        raise CommandError(
            f"--output {args.output!r} is a directory; name the JSON file to write, e.g. {args.output}/scores.json."
        )
    # The data and the device first: nothing is loaded for a run that could not start.
    try:
        eval_data_files(args.data, generation=args.max_prompts != 0, vqa=args.max_questions != 0)
    except FileNotFoundError as error:
        raise CommandError(str(error)) from error
    device = resolve_device(args.device)
    loading_kwargs = hub_loading_kwargs(args.model)
    try:
        pipe = load_shapes_pipeline(args.model, device=device, dtype=resolve_dtype(args.dtype, device), **loading_kwargs)
    except OSError as error:
        raise CommandError(f"cannot load the model {args.model!r}: {error}.") from error

    def progress(part: str, done: int, total: int):
        print(f"{part}: {done}/{total}", file=sys.stderr, flush=True)

    batch_sizes = {}
    if args.batch_size is not None:
        batch_sizes = {"generation_batch_size": args.batch_size, "vqa_batch_size": args.batch_size}
    result = evaluate_shapes(
        pipe,
        args.data,
        max_prompts=args.max_prompts,
        max_questions=args.max_questions,
        guidance_scale=args.guidance_scale,
        temperature=args.temperature,
        top_k=args.top_k,
        seed=args.seed,
        images_per_prompt=args.images_per_prompt,
        max_new_tokens=args.max_new_tokens,
        save_dir=args.save_images,
        progress=progress,
        **batch_sizes,
    )
    result["model"] = str(args.model)
    print(format_report(result))
    if args.output is not None:
        print(f"Wrote {write_result(result, args.output)}")
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


def add_device_arguments(parser: argparse.ArgumentParser):
    parser.add_argument(
        "--device", choices=DEVICES, default="auto", help="Where to run: auto (CUDA, then MPS, then CPU; default), cpu, cuda, mps."
    )
    parser.add_argument(
        "--dtype", choices=("auto", *DTYPES), default="auto",
        help="Weights dtype; auto (default): bfloat16 on a GPU, float32 on the CPU.",
    )


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="janus-pro", description="Janus-Pro on the Hugging Face stack.")
    subparsers = parser.add_subparsers(dest="command", required=True)

    chat_parser = subparsers.add_parser("chat", help="Answer a question about an image (streams the answer).")
    chat_parser.add_argument("question", help="The question about the image.")
    chat_parser.add_argument("--image", required=True, help="Path of the image file.")
    chat_parser.add_argument(
        "--model", default=DEFAULT_MODEL, help="Model directory (DeepSeek's format or ours) or hub id (default: " + SHIPPED + ")."
    )
    chat_parser.add_argument("--max-new-tokens", type=int, default=256, help="Longest answer, in tokens (default 256).")
    add_device_arguments(chat_parser)
    chat_parser.set_defaults(handler=chat)

    generate_parser = subparsers.add_parser("generate", help="Make images from a text prompt.")
    generate_parser.add_argument("prompt", help="What the image should show.")
    generate_parser.add_argument("-o", "--output", required=True, help="Output file (.png, ...); -0, -1, ... are added for several images.")
    generate_parser.add_argument("--model", default=DEFAULT_MODEL, help="Model directory or hub id (default: " + SHIPPED + ").")
    generate_parser.add_argument("--num-images", type=int, default=1, help="Images to make (default 1).")
    generate_parser.add_argument("--seed", type=int, default=0, help="Seed of the first image; image i uses seed + i (default 0).")
    generate_parser.add_argument("--guidance-scale", type=float, default=5.0, help="Classifier-free guidance weight (default 5).")
    generate_parser.add_argument("--temperature", type=float, default=1.0, help="Sampling temperature (default 1).")
    generate_parser.add_argument(
        "--overwrite", action="store_true",
        help="Replace existing output files (and remove numbered images of an earlier run beyond this run's set).",
    )
    add_device_arguments(generate_parser)
    generate_parser.set_defaults(handler=generate)

    convert_parser = subparsers.add_parser(
        "convert", help="Convert a checkpoint between DeepSeek's format, ours and transformers' built-in janus."
    )
    add_conversion_arguments(convert_parser)
    convert_parser.set_defaults(handler=convert)

    eval_parser = subparsers.add_parser(
        "eval-shapes", help="Score a shapes-world model: GenEval-style text-to-image and VQA accuracy, per category."
    )
    eval_parser.add_argument(
        "--model", required=EVAL_SHAPES_DEFAULT_MODEL is None, default=EVAL_SHAPES_DEFAULT_MODEL,
        help="Checkpoint directory or hub id of the shapes model"
        + (" (default: " + SHIPPED + ")." if EVAL_SHAPES_DEFAULT_MODEL == DEFAULT_MODEL else "."),
    )
    eval_parser.add_argument(
        "--data", required=True,
        help="Folder with eval_generation.jsonl and eval_vqa.jsonl (write_shapes_data's evaluation files).",
    )
    eval_parser.add_argument("--output", help="Write the scores, counts, settings and per-sample records as JSON here.")
    eval_parser.add_argument(
        "--batch-size", type=int, default=None, help="Images per generation batch and questions per VQA batch (default 16 and 32)."
    )
    eval_parser.add_argument("--guidance-scale", type=float, default=5.0, help="Classifier-free guidance weight (default 5).")
    eval_parser.add_argument("--temperature", type=float, default=1.0, help="Image-token sampling temperature (default 1).")
    eval_parser.add_argument("--top-k", type=int, default=None, help="Sample image tokens among the k likeliest (default: all).")
    eval_parser.add_argument("--seed", type=int, default=0, help="Image i is sampled with seed + i (default 0).")
    eval_parser.add_argument(
        "--images-per-prompt", type=int, default=1, help="Images per prompt, each scored (GenEval samples 4; default 1)."
    )
    eval_parser.add_argument("--max-new-tokens", type=int, default=8, help="Longest VQA answer, in tokens (default 8).")
    eval_parser.add_argument(
        "--max-prompts", type=int, default=None, help="Generate for the first N prompts only (all tags interleave); 0 skips generation."
    )
    eval_parser.add_argument("--max-questions", type=int, default=None, help="Ask the first N questions only; 0 skips VQA.")
    eval_parser.add_argument(
        "--save-images", metavar="DIR", help="Save the generated images here, in GenEval's folder layout, with results.jsonl."
    )
    add_device_arguments(eval_parser)
    eval_parser.set_defaults(handler=eval_shapes)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return args.handler(args)
    # Expected failures (a bad argument or file, a checkpoint that cannot be read or converted, a full disk): one
    # line on stderr and exit status 2, as argparse does for a bad command line. Conversion and checkpoint errors
    # are ValueErrors, FileExistsError is an OSError.
    except (CommandError, ValueError, OSError) as error:
        print(f"janus-pro {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
