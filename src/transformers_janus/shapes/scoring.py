"""
Scoring for the shapes world: a deterministic detector, a GenEval-style scorer of generated images, and a VQA scorer.

The detector reads any image that follows the world's specification (see `world`): pixels far from grey (spread of
channels > `min_spread`) take the nearest palette colour within `tolerance`; same-colour 4-connected components
are objects, components smaller than `min_area` (scaled with the image) are dropped as noise (e.g. from VQ
reconstructions), and the shape comes from geometry: the fill ratio of the bounding box (square ~ 1, circle ~
pi/4, triangle ~ 1/2), the triangle's profile (a third as much area above its middle as below), and the box's
corners (full for a square, mostly empty for a circle, which keeps blurred squares square). Each detection has a
confidence, GenEval's detector score in our terms: the IoU of the component with the ideal shape of its class drawn
in its bounding box, zero when the box could not hold a world object; detections under
`MIN_CONFIDENCE` are dropped, as GenEval drops boxes scored under 0.3, so a blob of noise is not an object.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .text import PromptSpec
from .world import COLOUR_NAMES, COLOURS, relative_position


_PALETTE = np.array([COLOURS[name] for name in COLOUR_NAMES], dtype=np.float32)


# Detections whose shape fit is under this are dropped (measured on every object: 1.0 in 2000 clean scenes, >= 0.70
# after JPEG 50, >= 0.80 after a blur of radius 1, 1000 scenes each; see docs/shapes.md).
MIN_CONFIDENCE = 0.6


@dataclass(frozen=True)
class DetectedObject:
    """A detected object: shape, colour name, centroid (x, y), bounding-box side, pixel count and confidence."""

    shape: str
    colour: str
    centroid: tuple[float, float]
    width: int
    height: int
    area: int
    confidence: float = 1.0

    @property
    def size(self) -> int:
        return max(self.width, self.height)


def colour_map(pixels: np.ndarray, tolerance: float = 80.0, min_spread: int = 60) -> np.ndarray:
    """Palette index per pixel, -1 for background (near grey) or for colours farther than `tolerance` from all."""
    pixels = pixels.astype(np.float32)
    spread = pixels.max(axis=-1) - pixels.min(axis=-1)
    distances = np.linalg.norm(pixels[..., None, :] - _PALETTE, axis=-1)
    labels = distances.argmin(axis=-1)
    labels[(distances.min(axis=-1) > tolerance) | (spread <= min_spread)] = -1
    return labels


def connected_components(labels: np.ndarray) -> np.ndarray:
    """
    4-connected components of equal non-negative labels, by union-find over neighbouring pixel pairs (scipy is not a
    dependency). Returns a component id per pixel (-1 where `labels` is -1).
    """
    height, width = labels.shape
    parent = np.arange(height * width)
    flat = labels.ravel()
    index = np.arange(height * width).reshape(height, width)
    pairs = []
    same_right = (labels[:, 1:] == labels[:, :-1]) & (labels[:, 1:] >= 0)
    pairs.append((index[:, 1:][same_right], index[:, :-1][same_right]))
    same_down = (labels[1:, :] == labels[:-1, :]) & (labels[1:, :] >= 0)
    pairs.append((index[1:, :][same_down], index[:-1, :][same_down]))
    a = np.concatenate([p[0] for p in pairs])
    b = np.concatenate([p[1] for p in pairs])

    def find_all(parent: np.ndarray) -> np.ndarray:
        # Pointer jumping until every node points at its root.
        while True:
            grand = parent[parent]
            if np.array_equal(grand, parent):
                return parent
            parent = grand

    # Union by repeatedly hooking the larger root onto the smaller one, vectorised, until every pair shares a root.
    while True:
        parent = find_all(parent)
        ra, rb = parent[a], parent[b]
        differ = ra != rb
        if not differ.any():
            break
        low, high = np.minimum(ra[differ], rb[differ]), np.maximum(ra[differ], rb[differ])
        np.minimum.at(parent, high, low)
    components = parent.reshape(height, width).copy()
    components[flat.reshape(height, width) < 0] = -1
    return components


def classify_shape(mask: np.ndarray) -> str:
    """Shape of one component's `mask` (cropped to its bounding box) from its fill ratio and width profile."""
    height, width = mask.shape
    fill = mask.sum() / (height * width)
    rows = mask.sum(axis=1)
    # An upright triangle holds a quarter of its area in its upper half (a circle or square a half), and keeps that
    # asymmetry when JPEG or a VQ model eats its thin apex, which shrinks the box and raises the fill ratio.
    upper, lower = rows[: height // 2].sum(), rows[(height + 1) // 2 :].sum()
    if fill < 0.75 and upper < 0.6 * lower:
        return "triangle"
    # A square fills its bounding box's corners, a circle leaves them mostly empty (blur rounds a square's corners
    # but not that much: measured corner fill <= 0.24 for circles, >= 0.58 for squares, clean, JPEG 50 or
    # blurred with radius 1), so the corners separate them more robustly than the fill ratio alone.
    k = max(1, round(0.2 * min(height, width)))
    corners = np.mean([mask[:k, :k].mean(), mask[:k, -k:].mean(), mask[-k:, :k].mean(), mask[-k:, -k:].mean()])
    return "square" if corners > 0.4 and fill > 0.8 else "circle"


def ideal_mask(shape: str, height: int, width: int) -> np.ndarray:
    """The world's rasterisation of `shape` filling a `height` x `width` box (see `world._draw_shape`)."""
    from PIL import ImageDraw

    canvas = Image.new("1", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    if shape == "circle":
        draw.ellipse((0, 0, width - 1, height - 1), fill=1)
    elif shape == "square":
        draw.rectangle((0, 0, width - 1, height - 1), fill=1)
    else:
        draw.polygon([((width - 1) / 2, 0), (width - 1, height - 1), (0, height - 1)], fill=1)
    return np.asarray(canvas, dtype=bool)


def shape_confidence(mask: np.ndarray, shape: str, image_size: int = 128) -> float:
    """
    How much `mask` (a component cropped to its box) looks like a world object of class `shape`: the IoU with the
    ideal shape in the same box; 0 when the box could not hold a world object (objects are 20-34 px squares at 128
    px: a side under 14 or over 48 px, or one side 1.4 times the other, is no object, whatever its fill).
    """
    height, width = mask.shape
    scale = image_size / 128
    if min(height, width) < 14 * scale or max(height, width) > 48 * scale or max(height, width) > 1.4 * min(
            height, width):
        return 0.0
    ideal = ideal_mask(shape, height, width)
    return float((mask & ideal).sum() / (mask | ideal).sum())


def detect_objects(
    image: Image.Image | np.ndarray, tolerance: float = 80.0, min_area: float | None = None,
    min_confidence: float = MIN_CONFIDENCE,
) -> list[DetectedObject]:
    """
    The objects in `image`, most confident first. `min_area` defaults to 50 px at 128x128 (a quarter of the
    smallest object, a 20 px triangle), scaled with the image area; detections under `min_confidence` are dropped.
    """
    pixels = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    if pixels.ndim != 3 or pixels.shape[-1] != 3:
        raise ValueError(f"`image` must be RGB (H, W, 3), got an array of shape {pixels.shape}.")
    if min_area is None:
        min_area = 50 * pixels.shape[0] * pixels.shape[1] / 128**2
    labels = colour_map(pixels, tolerance)
    components = connected_components(labels)
    ids, counts = np.unique(components[components >= 0], return_counts=True)
    objects = []
    for component, count in zip(ids, counts):
        if count < min_area:
            continue
        ys, xs = np.nonzero(components == component)
        top, bottom, left, right = ys.min(), ys.max(), xs.min(), xs.max()
        mask = components[top : bottom + 1, left : right + 1] == component
        shape = classify_shape(mask)
        confidence = shape_confidence(mask, shape, pixels.shape[0])
        if confidence < min_confidence:
            continue
        objects.append(
            DetectedObject(
                shape=shape,
                colour=COLOUR_NAMES[labels[ys[0], xs[0]]],
                centroid=(float(xs.mean()), float(ys.mean())),
                width=int(right - left + 1),
                height=int(bottom - top + 1),
                area=int(count),
                confidence=round(confidence, 4),
            )
        )
    objects.sort(key=lambda o: (-o.confidence, -o.area, o.centroid))
    return objects


def _relations(a: DetectedObject, b: DetectedObject) -> set[str]:
    return relative_position(a.centroid, (a.width, a.height), b.centroid, (b.width, b.height))


def score_image(image: Image.Image | np.ndarray | list[DetectedObject], spec: PromptSpec) -> bool:
    """
    Whether `image` (or its detections, most confident first) satisfies `spec`, by GenEval's `evaluate` rules: for
    each `include` rule, the `count` most confident detections of its class must exist, hold its colour (where
    named) and stand in its position to the previous group's objects; an `exclude` rule (counting prompts: count + 1
    of the class) fails the image, so counts are exact.
    """
    detections = image if isinstance(image, list) else detect_objects(image)
    by_class: dict[str, list[DetectedObject]] = {}
    for obj in sorted(detections, key=lambda o: -o.confidence):
        by_class.setdefault(obj.shape, []).append(obj)
    groups: list[list[DetectedObject] | None] = []
    correct = True
    for rule in spec.include:
        found = by_class.get(rule["class"], [])[: rule["count"]]
        matched = len(found) == rule["count"]
        if matched and "color" in rule:
            matched = sum(o.colour == rule["color"] for o in found) >= rule["count"]
        if matched and "position" in rule:
            relation, target = rule["position"]
            matched = groups[target] is not None and all(
                relation in _relations(obj, other) for obj in found for other in groups[target]
            )
        groups.append(found if matched else None)
        correct &= matched
    for rule in spec.exclude:
        if len(by_class.get(rule["class"], [])) >= rule["count"]:
            correct = False
    return correct


def geneval_scores(results: list[tuple[PromptSpec, bool]]) -> dict[str, float]:
    """
    Per-tag accuracy and GenEval's `overall` (the mean over tags, as GenEval reports it), from (spec, correct) pairs;
    `held_out_pairs` is the accuracy on prompts naming a held-out colour–shape pair, reported apart.
    """
    by_tag: dict[str, list[bool]] = {}
    held_out = []
    for spec, correct in results:
        by_tag.setdefault(spec.tag, []).append(correct)
        if spec.names_held_out_pair:
            held_out.append(correct)
    scores = {tag: float(np.mean(v)) for tag, v in sorted(by_tag.items(), key=lambda kv: _TAG_ORDER.get(kv[0], 99))}
    scores["overall"] = float(np.mean(list(scores.values()))) if scores else float("nan")
    if held_out:
        scores["held_out_pairs"] = float(np.mean(held_out))
    return scores


_TAG_ORDER = {tag: i for i, tag in enumerate(("single_object", "two_object", "counting", "colors", "position",
                                               "color_attr"))}


def format_scores(scores: dict[str, float], counts: dict[str, int] | None = None, title: str = "category") -> str:
    """A markdown table of `scores` (category -> accuracy), with sample counts where given."""
    lines = [f"| {title} | accuracy |" + (" n |" if counts else ""), "|---|---:|" + ("---:|" if counts else "")]
    for name, value in scores.items():
        n = f" {counts[name]} |" if counts and name in counts else (" |" if counts else "")
        lines.append(f"| {name} | {value:.3f} |{n}")
    return "\n".join(lines)


_NUMBER_WORDS = {
    "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7",
    "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12",
}
_ARTICLES = {"a", "an", "the"}
_PUNCTUATION = re.compile(f"[{re.escape(string.punctuation)}]")


def normalize_answer(answer: str) -> str:
    """Lowercase, punctuation and articles removed, number words as digits, whitespace collapsed."""
    words = _PUNCTUATION.sub(" ", answer.lower()).split()
    return " ".join(_NUMBER_WORDS.get(w, w) for w in words if w not in _ARTICLES)


def vqa_correct(prediction: str, answer: str) -> bool:
    """Exact match after `normalize_answer`."""
    return normalize_answer(prediction) == normalize_answer(answer)


def vqa_scores(results: list[tuple[str, str, str]]) -> dict[str, float]:
    """Per-category accuracy and `overall` (over all questions) from (category, prediction, answer) triples."""
    by_category: dict[str, list[bool]] = {}
    for category, prediction, answer in results:
        by_category.setdefault(category, []).append(vqa_correct(prediction, answer))
    scores = {category: float(np.mean(v)) for category, v in sorted(by_category.items())}
    scores["overall"] = float(np.mean([c for v in by_category.values() for c in v])) if results else float("nan")
    return scores


__all__ = [
    "DetectedObject", "colour_map", "connected_components", "classify_shape", "detect_objects", "score_image",
    "geneval_scores", "format_scores", "normalize_answer", "vqa_correct", "vqa_scores",
]
