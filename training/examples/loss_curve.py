"""
The loss-curve example of docs/training.md: synthetic data of the three kinds, and a PNG of the losses a run logged.

    python training/examples/loss_curve.py data runs/shapes-data
    python training/train.py --model_name_or_path tests/fixtures/janus-pro-tiny-original/checkpoint \
        --understanding_data runs/shapes-data/understanding.jsonl --text_data runs/shapes-data/text.jsonl \
        --generation_data runs/shapes-data/generation.jsonl --output_dir runs/shapes --stage 3 \
        --per_device_train_batch_size 10 --max_length 256 --learning_rate 1e-3 --max_steps 400 \
        --logging_steps 1 --mixed_precision no --use_cpu
    python training/examples/loss_curve.py plot runs/shapes/train_log.jsonl docs/images/training_loss.png

The data: 16 pictures of a coloured shape (4 colours x 4 shapes); understanding records ask what a picture shows
("A red circle."), generation records pair the caption "a red circle" with the picture, and text records are 16 small
sums ("What is 3 plus 4?" -> "3 plus 4 is 7."). The plot is drawn with Pillow alone (no matplotlib needed).
"""

import argparse
import json
import os
from pathlib import Path

from PIL import Image, ImageDraw


COLORS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 220), "yellow": (235, 205, 40)}
SHAPES = ("square", "circle", "triangle", "stripes")


def draw_shape(color: tuple[int, int, int], shape: str, size: int = 96) -> Image.Image:
    """A `shape` in `color` on a light grey background."""
    image = Image.new("RGB", (size, size), (225, 225, 225))
    draw = ImageDraw.Draw(image)
    low, high = size // 5, size - size // 5
    if shape == "square":
        draw.rectangle([low, low, high, high], fill=color)
    elif shape == "circle":
        draw.ellipse([low, low, high, high], fill=color)
    elif shape == "triangle":
        draw.polygon([(size // 2, low), (high, high), (low, high)], fill=color)
    else:
        for left in range(0, size, size // 4):
            draw.rectangle([left, 0, left + size // 8 - 1, size - 1], fill=color)
    return image


def _write_jsonl(path: Path, records: list[dict]):
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text("".join(json.dumps(record) + "\n" for record in records))
    os.replace(temporary, path)


def make_data(folder: Path):
    """Writes `images/`, `understanding.jsonl`, `text.jsonl` and `generation.jsonl` (16 records each) to `folder`."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    understanding, generation = [], []
    for color_name, color in COLORS.items():
        for shape in SHAPES:
            image_path = f"images/{color_name}_{shape}.png"
            draw_shape(color, shape).save(folder / image_path)
            understanding.append(
                {
                    "messages": [
                        {"role": "user", "content": "<image_placeholder>\nWhat is in the picture?"},
                        {"role": "assistant", "content": f"A {color_name} {shape}."},
                    ],
                    "images": [image_path],
                }
            )
            generation.append({"caption": f"a {color_name} {shape}", "image": image_path})
    text = [
        {
            "messages": [
                {"role": "user", "content": f"What is {a} plus {b}?"},
                {"role": "assistant", "content": f"{a} plus {b} is {a + b}."},
            ]
        }
        for a in range(1, 5)
        for b in range(2, 6)
    ]
    for name, records in (("understanding", understanding), ("text", text), ("generation", generation)):
        _write_jsonl(folder / f"{name}.jsonl", records)


def plot_losses(log_path: Path, output_path: Path, title: str | None = None):
    """Text and image loss per logged step of a `train_log.jsonl`, as a PNG with axes, ticks and a legend."""
    from transformers_janus.shapes.figures import line_chart, read_log, save_png

    rows = read_log(log_path)  # a resumed run re-logs its repeated steps: the last record of each is kept
    if not rows:
        raise ValueError(f"{log_path} holds no logged steps; train with `--logging_steps 1` to log every step.")
    steps = [row["step"] for row in rows]
    series = [(name, steps, [row[key] for row in rows]) for name, key in (("text loss", "text_loss"),
                                                                          ("image loss", "image_loss"))]
    title = title or f"{log_path.parent.name}: text and image loss per step"
    save_png(line_chart(series, title, y_label="loss (cross-entropy)"), output_path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    commands = parser.add_subparsers(dest="command", required=True)
    data = commands.add_parser("data", help="Write the synthetic data of the three kinds into a folder.")
    data.add_argument("folder", type=Path)
    plot = commands.add_parser("plot", help="Plot a run's train_log.jsonl (text and image loss per step) as a PNG.")
    plot.add_argument("log", type=Path)
    plot.add_argument("output", type=Path)
    plot.add_argument("--title", default=None)
    args = parser.parse_args()
    if args.command == "data":
        make_data(args.folder)
    else:
        plot_losses(args.log, args.output, args.title)


if __name__ == "__main__":
    main()
