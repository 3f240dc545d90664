"""
Figures of the shapes recipe, drawn with Pillow alone (no matplotlib dependency): line charts of logged losses, the
recipe's loss curves across its parts, and grids of generated samples with their prompts and verdicts.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont


COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


def _nice_step(span: float, ticks: int = 5) -> float:
    """A round tick spacing (1, 2 or 5 times a power of ten) giving about `ticks` ticks over `span`."""
    raw = max(span, 1e-12) / ticks
    magnitude = 10 ** math.floor(math.log10(raw))
    return next(factor * magnitude for factor in (1, 2, 5, 10) if factor * magnitude >= raw)


def save_png(image: Image.Image, path: str | os.PathLike) -> None:
    """Save `image` as a PNG atomically (a temporary file renamed), creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.stem + ".tmp.png")
    image.save(temporary)
    os.replace(temporary, path)


def line_chart(
    series: Sequence[tuple[str, Sequence[float], Sequence[float]]],
    title: str,
    x_label: str = "optimizer step",
    y_label: str = "loss",
    markers: Sequence[tuple[float, str]] = (),
    size: tuple[int, int] = (900, 540),
) -> Image.Image:
    """
    A chart of `(name, xs, ys)` lines with axes from 0, ticks, a legend (each line's last value) and vertical
    `markers` `(x, label)` (e.g. where a training stage starts).
    """
    if not any(len(xs) for _, xs, _ in series):
        raise ValueError(f"{title!r}: no points to plot.")
    width, height = size
    left, right, top, bottom = 80, 30, 50, 70
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font, small = ImageFont.load_default(size=18), ImageFont.load_default(size=14)
    x_max = max(max(xs) for _, xs, _ in series if len(xs))
    y_max = max(max(ys) for _, _, ys in series if len(ys))
    y_step, x_step = _nice_step(y_max), _nice_step(x_max)
    y_top = math.ceil(y_max / y_step) * y_step

    def to_pixel(x: float, y: float) -> tuple[float, float]:
        return (left + (width - left - right) * x / x_max, height - bottom - (height - top - bottom) * y / y_top)

    for tick in range(0, int(round(y_top / y_step)) + 1):
        _, y = to_pixel(0, tick * y_step)
        draw.line([(left, y), (width - right, y)], fill=(232, 232, 232))
        draw.text((left - 8, y), f"{tick * y_step:g}", fill="black", font=small, anchor="rm")
    for tick in range(0, int(x_max // x_step) + 1):
        x, _ = to_pixel(tick * x_step, 0)
        draw.line([(x, top), (x, height - bottom)], fill=(232, 232, 232))
        draw.text((x, height - bottom + 8), f"{tick * x_step:g}", fill="black", font=small, anchor="mt")
    for x_value, label in markers:
        x, _ = to_pixel(x_value, 0)
        draw.line([(x, top), (x, height - bottom)], fill=(150, 150, 150), width=1)
        draw.text((x + 4, height - bottom - 4), label, fill=(90, 90, 90), font=small, anchor="lb")
    draw.rectangle([left, top, width - right, height - bottom], outline="black")
    for index, (_, xs, ys) in enumerate(series):
        if len(xs) > 1:
            draw.line([to_pixel(x, y) for x, y in zip(xs, ys)], fill=COLOURS[index % len(COLOURS)], width=2)

    draw.text(((left + width - right) / 2, height - 22), x_label, fill="black", font=font, anchor="mm")
    label = Image.new("RGBA", (260, 30), (255, 255, 255, 0))
    ImageDraw.Draw(label).text((130, 15), y_label, fill="black", font=font, anchor="mm")
    label = label.rotate(90, expand=True)
    image.paste(label, (8, (top + height - bottom) // 2 - label.height // 2), label)
    draw.text((width / 2, top / 2), title, fill="black", font=font, anchor="mm")
    legend_x, legend_y = width - right - 230, top + 15
    draw.rectangle([legend_x - 10, legend_y - 10, width - right - 15, legend_y + 28 * len(series) - 4],
                   fill="white", outline="gray")
    for index, (name, _, ys) in enumerate(series):
        y = legend_y + 6 + 28 * index
        draw.line([(legend_x, y), (legend_x + 30, y)], fill=COLOURS[index % len(COLOURS)], width=3)
        draw.text((legend_x + 40, y), f"{name} ({ys[-1]:.3g})", fill="black", font=small, anchor="lm")
    return image


def read_log(path: str | os.PathLike) -> list[dict]:
    """The records of a JSONL log; a resumed run's repeated steps keep their last record."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return list({row.get("step", index): row for index, row in enumerate(rows)}.values())


def plot_recipe_losses(run_dir: str | os.PathLike, output_path: str | os.PathLike,
                       stages: Sequence[str] = ("llm", "stage1", "stage2", "stage3")) -> None:
    """
    The recipe's curves in one PNG, three charts stacked: the language model's text and image losses through the
    text pretraining and stages I-III (one step axis, each stage marked), the VQ autoencoder's reconstruction loss,
    and SigLIP's pretraining losses.
    """
    run_dir = Path(run_dir)
    text_x, text_y, image_x, image_y, markers, offset = [], [], [], [], [], 0
    for stage in stages:
        rows = read_log(run_dir / stage / "train_log.jsonl")
        markers.append((offset, stage))
        for row in rows:
            if row.get("text_loss"):
                text_x.append(offset + row["step"])
                text_y.append(row["text_loss"])
            if row.get("image_loss"):
                image_x.append(offset + row["step"])
                image_y.append(row["image_loss"])
        offset += rows[-1]["step"] if rows else 0
    charts = [line_chart([("text loss", text_x, text_y), ("image loss", image_x, image_y)],
                         "language model: text pretraining, stages I-III", y_label="cross-entropy", markers=markers)]
    vq = read_log(run_dir / "components" / "vq" / "train_log.jsonl")
    charts.append(line_chart([("reconstruction", [r["step"] for r in vq], [r["reconstruction_loss"] for r in vq])],
                             "VQ autoencoder", y_label="weighted MSE + L1"))
    vision = read_log(run_dir / "components" / "vision" / "train_log.jsonl")
    charts.append(line_chart([(name, [r["step"] for r in vision], [r[f"{name}_loss"] for r in vision])
                              for name in ("colour", "shape", "counts")], "SigLIP pretraining", y_label="loss"))
    canvas = Image.new("RGB", (charts[0].width, sum(chart.height for chart in charts)), "white")
    y = 0
    for chart in charts:
        canvas.paste(chart, (0, y))
        y += chart.height
    save_png(canvas, output_path)


def sample_grid(images: Sequence[Image.Image], captions: Sequence[str], output_path: str | os.PathLike,
                columns: int = 6, marks: Sequence[bool] | None = None, scale: int = 2) -> None:
    """Images in a grid, each upscaled `scale` times with its caption below (and a green/red edge for `marks`)."""
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions.")
    side = images[0].width * scale
    caption_height = 44
    rows = math.ceil(len(images) / columns)
    canvas = Image.new("RGB", (columns * (side + 8) + 8, rows * (side + caption_height + 8) + 8), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=13)
    for index, (image, caption) in enumerate(zip(images, captions)):
        x = 8 + (index % columns) * (side + 8)
        y = 8 + (index // columns) * (side + caption_height + 8)
        canvas.paste(image.convert("RGB").resize((side, side), Image.Resampling.NEAREST), (x, y))
        if marks is not None:
            draw.rectangle([x - 3, y - 3, x + side + 2, y + side + 2], outline=(40, 160, 60) if marks[index]
                           else (215, 40, 40), width=3)
        words, lines = caption.split(), [""]
        for word in words:
            if draw.textlength(f"{lines[-1]} {word}".strip(), font=font) > side:
                lines.append(word)
            else:
                lines[-1] = f"{lines[-1]} {word}".strip()
        draw.multiline_text((x, y + side + 4), "\n".join(lines[:3]), fill="black", font=font, spacing=2)
    save_png(canvas, output_path)


__all__ = ["line_chart", "plot_recipe_losses", "read_log", "sample_grid", "save_png"]
