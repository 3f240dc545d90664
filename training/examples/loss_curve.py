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
import math
import os
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont


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


def _nice_step(span: float, ticks: int = 5) -> float:
    """A round tick spacing (1, 2 or 5 times a power of ten) giving about `ticks` ticks over `span`."""
    raw = span / ticks
    magnitude = 10 ** math.floor(math.log10(raw))
    return next(factor * magnitude for factor in (1, 2, 5, 10) if factor * magnitude >= raw)


def plot_losses(log_path: Path, output_path: Path, title: str | None = None):
    """Text and image loss per logged step of a `train_log.jsonl`, as a PNG with axes, ticks and a legend."""
    rows = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    if not rows:
        raise ValueError(f"{log_path} holds no logged steps; train with `--logging_steps 1` to log every step.")
    rows = list({row["step"]: row for row in rows}.values())  # a resumed run re-logs its repeated steps: keep the last
    steps = [row["step"] for row in rows]
    series = [("text loss", "text_loss", (31, 119, 180)), ("image loss", "image_loss", (255, 127, 14))]

    width, height = 900, 540
    left, right, top, bottom = 80, 30, 50, 70
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font, small = ImageFont.load_default(size=18), ImageFont.load_default(size=14)
    x_max = max(steps)
    y_max = max(row[key] for _, key, _ in series for row in rows)
    y_step = _nice_step(y_max)
    y_top = math.ceil(y_max / y_step) * y_step
    x_step = _nice_step(x_max)

    def to_pixel(step: float, value: float) -> tuple[float, float]:
        x = left + (width - left - right) * step / x_max
        y = height - bottom - (height - top - bottom) * value / y_top
        return x, y

    # Grid, ticks and tick labels
    for tick in range(0, int(round(y_top / y_step)) + 1):
        value = tick * y_step
        _, y = to_pixel(0, value)
        draw.line([(left, y), (width - right, y)], fill=(232, 232, 232))
        draw.text((left - 8, y), f"{value:g}", fill="black", font=small, anchor="rm")
    for tick in range(0, int(x_max // x_step) + 1):
        step = tick * x_step
        x, _ = to_pixel(step, 0)
        draw.line([(x, top), (x, height - bottom)], fill=(232, 232, 232))
        draw.text((x, height - bottom + 8), f"{step:g}", fill="black", font=small, anchor="mt")
    draw.rectangle([left, top, width - right, height - bottom], outline="black")

    # The curves
    for _, key, color in series:
        draw.line([to_pixel(row["step"], row[key]) for row in rows], fill=color, width=2)

    # Labels, title and legend
    draw.text(((left + width - right) / 2, height - 22), "optimizer step", fill="black", font=font, anchor="mm")
    label = Image.new("RGBA", (200, 30), (255, 255, 255, 0))
    ImageDraw.Draw(label).text((100, 15), "loss (cross-entropy)", fill="black", font=font, anchor="mm")
    label = label.rotate(90, expand=True)
    image.paste(label, (8, (top + height - bottom) // 2 - label.height // 2), label)
    title = title or f"{log_path.parent.name}: text and image loss per step"
    draw.text((width / 2, top / 2), title, fill="black", font=font, anchor="mm")
    legend_x, legend_y = width - right - 190, top + 15
    draw.rectangle([legend_x - 10, legend_y - 10, width - right - 15, legend_y + 52], fill="white", outline="gray")
    for index, (name, key, color) in enumerate(series):
        y = legend_y + 6 + 28 * index
        draw.line([(legend_x, y), (legend_x + 30, y)], fill=color, width=3)
        final = rows[-1][key]
        draw.text((legend_x + 40, y), f"{name} ({final:.3g})", fill="black", font=small, anchor="lm")

    output_path.parent.mkdir(parents=True, exist_ok=True)
    temporary = output_path.with_name(output_path.stem + ".tmp.png")
    image.save(temporary)
    os.replace(temporary, output_path)


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
