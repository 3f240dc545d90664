"""
The shapes world: scenes of 1–4 flat-coloured shapes on a light neutral canvas, drawn deterministically from a seed.

The specification is fixed (see `docs/shapes.md`) so that any scorer reads any renderer's images: the canvas is
`image_size` pixels square (128 by default), the background has every channel >= 200 and a spread (max - min channel,
our "saturation") <= 20, optionally with a faint grey texture of +-6; objects are 20–34 px (scaled with the canvas),
>= 4 px apart, in exactly the six palette colours, and drawn without anti-aliasing so every object pixel is exactly
its palette colour. An object's size is the side of its bounding box: a circle's diameter, a square's side, an upright
triangle's base and height. Its centroid is the mean of its rasterised pixels, the same quantity the detector measures.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw


SHAPES = ("circle", "square", "triangle")
COLOURS = {
    "red": (215, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (240, 220, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 215),
    "purple": (140, 50, 170),
}
COLOUR_NAMES = tuple(COLOURS)
# Colour–shape pairs that never appear in a text-to-image training sample (caption or image); they may appear in
# understanding data. Generation on them measures compositional generalisation.
HELD_OUT_PAIRS = frozenset({("red", "triangle"), ("blue", "circle"), ("yellow", "square")})
RELATIONS = ("left of", "right of", "above", "below")
OPPOSITE_RELATION = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
# GenEval's `POSITION_THRESHOLD`: centre offsets shrink by this fraction of the two objects' summed extents first.
POSITION_THRESHOLD = 0.1
# The share of the unit offset past which the world's own text asserts a relation: GenEval's 0.5 plus a margin, so
# that a pixel of erosion in a reconstruction (which can tip a diagonal pair at exactly 0.5) never makes it false.
CLEAR_SHARE = 0.6


@dataclass(frozen=True)
class WorldSpec:
    """Sizes of the world, in pixels; `for_image_size` scales the 128-pixel defaults to another canvas."""

    image_size: int = 128
    min_size: int = 20
    max_size: int = 34
    min_gap: int = 4
    margin: int = 2
    max_objects: int = 4
    texture: int = 6

    def __post_init__(self):
        if not 0 < self.min_size <= self.max_size:
            raise ValueError(f"`min_size` ({self.min_size}) must be positive and <= `max_size` ({self.max_size}).")
        if self.max_size + 2 * self.margin > self.image_size:
            raise ValueError(
                f"`image_size` {self.image_size} is too small for objects of up to {self.max_size} px; use a larger "
                "canvas or `WorldSpec.for_image_size`."
            )
        if not 0 <= self.texture <= 6:
            raise ValueError(f"`texture` must be in [0, 6] (the world's faint texture), got {self.texture}.")

    @classmethod
    def for_image_size(cls, image_size: int) -> WorldSpec:
        scale = image_size / 128
        return cls(
            image_size=image_size,
            min_size=max(4, round(20 * scale)),
            max_size=max(4, round(34 * scale)),
            min_gap=max(2, round(4 * scale)),
            margin=max(1, round(2 * scale)),
        )


@dataclass(frozen=True)
class SceneObject:
    """One object: its shape, colour name, top-left corner and bounding-box side (pixels)."""

    shape: str
    colour: str
    x: int
    y: int
    size: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        """(left, top, right, bottom), inclusive."""
        return self.x, self.y, self.x + self.size - 1, self.y + self.size - 1

    def mask(self, image_size: int) -> np.ndarray:
        """The object's rasterised pixels, exactly as `render` draws them."""
        canvas = Image.new("1", (image_size, image_size), 0)
        _draw_shape(ImageDraw.Draw(canvas), self, 1)
        return np.asarray(canvas, dtype=bool)

    def centroid(self, image_size: int) -> tuple[float, float]:
        """(x, y) mean of the object's pixels."""
        ys, xs = np.nonzero(self.mask(image_size))
        return float(xs.mean()), float(ys.mean())


@dataclass(frozen=True)
class Scene:
    """A scene: its objects, background colour and texture seed; `render` turns it into an RGB image."""

    objects: tuple[SceneObject, ...]
    background: tuple[int, int, int]
    spec: WorldSpec = field(default_factory=WorldSpec)
    texture_seed: int | None = None

    def render(self) -> Image.Image:
        return render(self)

    def count(self, shape: str | None = None, colour: str | None = None) -> int:
        return sum(
            (shape is None or o.shape == shape) and (colour is None or o.colour == colour) for o in self.objects
        )

    def pairs(self) -> set[tuple[str, str]]:
        """The (colour, shape) pairs present."""
        return {(o.colour, o.shape) for o in self.objects}

    def centroids(self) -> list[tuple[float, float]]:
        return [o.centroid(self.spec.image_size) for o in self.objects]

    def relations(self, first: int, second: int, share: float = 0.5) -> set[str]:
        """GenEval's relations of object `first` to object `second` (see `relative_position`)."""
        a, b = self.objects[first], self.objects[second]
        n = self.spec.image_size
        return relative_position(a.centroid(n), (a.size, a.size), b.centroid(n), (b.size, b.size), share)


def relative_position(
    centre_a: tuple[float, float], extent_a: tuple[float, float], centre_b: tuple[float, float],
    extent_b: tuple[float, float], share: float = 0.5,
) -> set[str]:
    """
    GenEval's `relative_position`, on centroids: the relations of A to B. The offset A - B shrinks by
    `POSITION_THRESHOLD` of the summed (width, height) first; a direction holds when its share of the unit offset
    passes `share` (GenEval: 0.5), so diagonal placements hold two relations and near-coincident ones none.
    """
    offset = np.array(centre_a, dtype=float) - np.array(centre_b, dtype=float)
    dims = np.array(extent_a, dtype=float) + np.array(extent_b, dtype=float)
    revised = np.maximum(np.abs(offset) - POSITION_THRESHOLD * dims, 0) * np.sign(offset)
    norm = np.linalg.norm(offset)
    if norm == 0 or np.all(np.abs(revised) < 1e-3):
        return set()
    dx, dy = revised / norm
    relations = set()
    if dx < -share:
        relations.add("left of")
    if dx > share:
        relations.add("right of")
    if dy < -share:
        relations.add("above")
    if dy > share:
        relations.add("below")
    return relations


def _draw_shape(draw: ImageDraw.ImageDraw, obj: SceneObject, fill) -> None:
    left, top, right, bottom = obj.box
    if obj.shape == "circle":
        draw.ellipse((left, top, right, bottom), fill=fill)
    elif obj.shape == "square":
        draw.rectangle((left, top, right, bottom), fill=fill)
    elif obj.shape == "triangle":
        # Upright: apex at the top centre, base along the bottom row.
        draw.polygon([((left + right) / 2, top), (right, bottom), (left, bottom)], fill=fill)
    else:
        raise ValueError(f"Unknown shape {obj.shape!r}; use one of {SHAPES}.")


def render(scene: Scene) -> Image.Image:
    """Draw `scene` (no anti-aliasing: every object pixel is exactly its palette colour)."""
    n = scene.spec.image_size
    pixels = np.empty((n, n, 3), dtype=np.int16)
    pixels[:] = scene.background
    if scene.texture_seed is not None and scene.spec.texture:
        # A grey texture (the same offset on every channel) keeps the background's spread unchanged.
        rng = np.random.default_rng(scene.texture_seed)
        pixels += rng.integers(-scene.spec.texture, scene.spec.texture + 1, size=(n, n, 1), dtype=np.int16)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        _draw_shape(draw, obj, COLOURS[obj.colour])
    return image


def random_background(rng: np.random.Generator, spec: WorldSpec) -> tuple[int, int, int]:
    """A light neutral colour whose channels stay >= 200 after the texture and spread <= 20."""
    low = 200 + spec.texture
    high = 255 - spec.texture
    base = int(rng.integers(low + 8, high - 8 + 1))
    return tuple(int(np.clip(base + rng.integers(-8, 9), low, high)) for _ in range(3))


def _separated(a: SceneObject, b: SceneObject, gap: int) -> bool:
    """Bounding boxes at least `gap` pixels apart along x or y (so the shapes themselves are too)."""
    a0, a1, a2, a3 = a.box
    b0, b1, b2, b3 = b.box
    return b0 - a2 - 1 >= gap or a0 - b2 - 1 >= gap or b1 - a3 - 1 >= gap or a1 - b3 - 1 >= gap


def place_objects(
    attributes: list[tuple[str, str]], rng: np.random.Generator, spec: WorldSpec, max_tries: int = 1000
) -> tuple[SceneObject, ...] | None:
    """Random sizes and positions for (shape, colour) `attributes`, non-overlapping; None if the draw fails."""
    placed: list[SceneObject] = []
    for shape, colour in attributes:
        for _ in range(max_tries):
            size = int(rng.integers(spec.min_size, spec.max_size + 1))
            high = spec.image_size - spec.margin - size
            obj = SceneObject(shape, colour, int(rng.integers(spec.margin, high + 1)),
                              int(rng.integers(spec.margin, high + 1)), size)
            if all(_separated(obj, other, spec.min_gap) for other in placed):
                placed.append(obj)
                break
        else:
            return None
    return tuple(placed)


def random_scene(
    rng: np.random.Generator,
    spec: WorldSpec | None = None,
    num_objects: int | None = None,
    exclude_pairs: frozenset[tuple[str, str]] | set[tuple[str, str]] = frozenset(),
    textured: bool | None = None,
) -> Scene:
    """
    A scene drawn from `rng`: `num_objects` (1–`max_objects`, random if None) objects of random shape and colour,
    none of whose (colour, shape) is in `exclude_pairs`; textured with probability 1/2 unless `textured` says.
    """
    spec = spec or WorldSpec()
    if num_objects is not None and not 1 <= num_objects <= spec.max_objects:
        raise ValueError(f"`num_objects` must be in [1, {spec.max_objects}], got {num_objects}.")
    allowed = [(c, s) for c in COLOUR_NAMES for s in SHAPES if (c, s) not in exclude_pairs]
    if not allowed:
        raise ValueError("`exclude_pairs` excludes every (colour, shape) pair; leave at least one.")
    while True:
        count = num_objects or int(rng.integers(1, spec.max_objects + 1))
        picks = [allowed[int(i)] for i in rng.integers(0, len(allowed), size=count)]
        objects = place_objects([(s, c) for c, s in picks], rng, spec)
        if objects is not None:
            break
    return _finish_scene(objects, rng, spec, textured)


def _finish_scene(objects, rng: np.random.Generator, spec: WorldSpec, textured: bool | None) -> Scene:
    background = random_background(rng, spec)
    textured = bool(rng.integers(0, 2)) if textured is None else textured
    texture_seed = int(rng.integers(0, 2**31)) if textured else None
    return Scene(objects=objects, background=background, spec=spec, texture_seed=texture_seed)


__all__ = [
    "SHAPES", "COLOURS", "COLOUR_NAMES", "HELD_OUT_PAIRS", "RELATIONS", "OPPOSITE_RELATION", "POSITION_THRESHOLD",
    "CLEAR_SHARE", "WorldSpec", "SceneObject", "Scene", "relative_position", "render", "random_background",
    "place_objects", "random_scene",
]
