"""
The style-LoRA example of docs/finetuning.md: a small "style" data set (24 pictures drawn in one style), and a grid of
the base pipeline's images against the adapter's, same prompts and settings.

    python training/examples/lora_grid.py data runs/style-data
    python training/train.py --config training/configs/lora_style.yaml \
        --model_name_or_path tests/fixtures/janus-pro-tiny-original/checkpoint \
        --generation_data runs/style-data/generation.jsonl --output_dir runs/style-lora \
        --max_length 256 --max_steps 600 --learning_rate 5e-3 --mixed_precision no --gradient_checkpointing false --use_cpu
    python training/examples/lora_grid.py grid tests/fixtures/janus-pro-tiny-original/checkpoint runs/style-lora \
        docs/images/lora_before_after.png

The grid's rows: the base pipeline, the pipeline with the adapter, and each caption's picture through the VQ
tokenizer. The style: a shape with a thick black outline on a warm yellow background, captioned "a red circle, poster style".
Of the 4 colours x 6 shapes, 22 pictures are trained on and 2 (`HELD_OUT`) are not, so the grid shows captions the
adapter saw and captions it did not. Drawn with Pillow alone.
"""

import argparse
import json
import os
from pathlib import Path

from PIL import Image, ImageDraw


COLORS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 220), "purple": (140, 50, 170)}
SHAPES = ("square", "circle", "triangle", "diamond", "cross", "ring")
HELD_OUT = (("blue", "ring"), ("purple", "cross"))
GRID_PROMPTS = ("a red circle, poster style", "a green triangle, poster style", "a blue ring, poster style",
                "a purple cross, poster style")
BACKGROUND, OUTLINE = (245, 200, 70), (20, 20, 20)


def draw_poster(color: tuple[int, int, int], shape: str, size: int = 96) -> Image.Image:
    """A `shape` in `color` with a thick black outline on the style's yellow background."""
    image = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    low, high, middle, width = size // 5, size - size // 5, size // 2, max(2, size // 16)
    if shape == "square":
        draw.rectangle([low, low, high, high], fill=color, outline=OUTLINE, width=width)
    elif shape == "circle":
        draw.ellipse([low, low, high, high], fill=color, outline=OUTLINE, width=width)
    elif shape == "triangle":
        draw.polygon([(middle, low), (high, high), (low, high)], fill=color, outline=OUTLINE, width=width)
    elif shape == "diamond":
        draw.polygon([(middle, low), (high, middle), (middle, high), (low, middle)], fill=color, outline=OUTLINE,
                     width=width)
    elif shape == "cross":
        third = (high - low) // 3
        draw.rectangle([low + third, low, high - third, high], fill=color, outline=OUTLINE, width=width)
        draw.rectangle([low, low + third, high, high - third], fill=color, outline=OUTLINE, width=width)
    else:  # ring
        draw.ellipse([low, low, high, high], fill=color, outline=OUTLINE, width=width)
        inner = (high - low) // 4
        draw.ellipse([low + inner, low + inner, high - inner, high - inner], fill=BACKGROUND, outline=OUTLINE,
                     width=width)
    return image


def make_data(folder: Path) -> int:
    """Writes `images/` and `generation.jsonl` (the trained pictures and their captions) to `folder`."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for color_name, color in COLORS.items():
        for shape in SHAPES:
            if (color_name, shape) in HELD_OUT:
                continue
            image_path = f"images/{color_name}_{shape}.png"
            draw_poster(color, shape).save(folder / image_path)
            records.append({"caption": f"a {color_name} {shape}, poster style", "image": image_path})
    path = folder / "generation.jsonl"
    path.with_name(path.name + ".tmp").write_text("".join(json.dumps(record) + "\n" for record in records))
    os.replace(path.with_name(path.name + ".tmp"), path)
    return len(records)


def make_grid(base: str, adapter: str, output: Path, scale: int = 3) -> None:
    """
    Row 1: the base pipeline; row 2: the same pipeline with the adapter loaded; row 3: the picture each caption
    describes, through the VQ tokenizer (encoded and decoded: the best any token sequence can paint). One column per
    prompt of `GRID_PROMPTS`, greedy (`top_k=1`) at guidance 1. Prints how many of each image's tokens equal the
    picture's codes.
    """
    import torch

    from transformers_janus import JanusProImagePipeline

    torch.set_num_threads(1)
    pipe = JanusProImagePipeline.from_pretrained(base)
    pipe.set_progress_bar_config(disable=True)
    settings = {"guidance_scale": 1.0, "top_k": 1, "output_type": "latent"}
    pictures = []
    for prompt in GRID_PROMPTS:
        color, shape = prompt.split(",")[0].split()[1:]
        pictures.append(draw_poster(COLORS[color], shape))
    pixel_values = pipe.processor.image_processor.preprocess_for_generation(pictures).pixel_values
    with torch.no_grad():
        codes = pipe.model.encode_image_tokens(pixel_values).reshape(len(pictures), -1)
    base_tokens = pipe(list(GRID_PROMPTS), **settings).images
    pipe.load_lora_weights(adapter, adapter_name="poster")
    adapter_tokens = pipe(list(GRID_PROMPTS), **settings).images
    for prompt, before, after, target in zip(GRID_PROMPTS, base_tokens, adapter_tokens, codes):
        seen = "held out" if tuple(prompt.split(",")[0].split()[1:]) in HELD_OUT else "trained"
        print(f"{prompt!r} ({seen}): base {int((before == target).sum())}, adapter {int((after == target).sum())} "
              f"of {target.numel()} tokens equal the picture's codes")
    with torch.no_grad():
        rows = [pipe.postprocess(pipe.model.decode_image_tokens(tokens), "pil")
                for tokens in (base_tokens, adapter_tokens, codes)]
    size = rows[0][0].width * scale
    grid = Image.new("RGB", (size * len(GRID_PROMPTS), size * len(rows)), (255, 255, 255))
    for row_index, images in enumerate(rows):
        for column, image in enumerate(images):
            grid.paste(image.resize((size, size), Image.NEAREST), (column * size, row_index * size))
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_name(output.stem + ".tmp.png")
    grid.save(temporary)
    os.replace(temporary, output)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    data = commands.add_parser("data", help="Write the style pictures and generation.jsonl.")
    data.add_argument("folder", type=Path)
    grid = commands.add_parser("grid", help="Base vs adapter images for the same prompts, as one PNG.")
    grid.add_argument("base")
    grid.add_argument("adapter")
    grid.add_argument("output", type=Path)
    args = parser.parse_args()
    if args.command == "data":
        print(f"Wrote {make_data(args.folder)} records to {args.folder / 'generation.jsonl'}")
    else:
        make_grid(args.base, args.adapter, args.output)
        print(f"Wrote {args.output}")


if __name__ == "__main__":
    main()
