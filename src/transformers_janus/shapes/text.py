"""
Text of the shapes world, always generated from a scene so that it is true of it: GenEval-template captions, freer
captions, stage-I class names, VQA conversations, plain-text conversations; and the inverse, GenEval-style prompt
specs (GenEval's metadata format) that a scene is rendered from, for evaluation prompts.

A GenEval-template caption describes the whole scene (a counting caption's scene holds exactly that many objects and
nothing else), so a text-to-image model learns that the prompt is all there is. Text asserts only relations that
hold clearly (`world.CLEAR_SHARE`), never a diagonal pair on GenEval's boundary.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .world import (
    CLEAR_SHARE,
    COLOUR_NAMES,
    HELD_OUT_PAIRS,
    OPPOSITE_RELATION,
    RELATIONS,
    SHAPES,
    Scene,
    WorldSpec,
    _finish_scene,
    place_objects,
    relative_position,
)


COUNT_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}
TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def noun_phrase(colour: str | None, shape: str, count: int = 1) -> str:
    """'a red circle', 'an orange square', 'two blue triangles', 'a circle'."""
    words = ([colour] if colour else []) + [shape + ("s" if count > 1 else "")]
    head = COUNT_WORDS[count] if count > 1 else article(words[0])
    return " ".join([head] + words)


def join_phrases(phrases: list[str]) -> str:
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


@dataclass(frozen=True)
class PromptSpec:
    """
    A GenEval-style prompt: its `tag` (one of `TAGS`), `prompt` text and GenEval's metadata, `include` (required
    objects: {"class", "count", optional "color", optional "position": [relation, index of the target rule]}) and
    `exclude` ({"class", "count"}: failing when that many or more are found).
    """

    tag: str
    prompt: str
    include: tuple[dict, ...]
    exclude: tuple[dict, ...] = field(default=())

    @property
    def names_held_out_pair(self) -> bool:
        return any((rule.get("color"), rule["class"]) in HELD_OUT_PAIRS for rule in self.include)

    def to_dict(self) -> dict:
        return {"tag": self.tag, "prompt": self.prompt, "include": list(self.include), "exclude": list(self.exclude)}

    @classmethod
    def from_dict(cls, record: dict) -> PromptSpec:
        if record.get("tag") not in TAGS:
            raise ValueError(f"Prompt spec `tag` must be one of {TAGS}, got {record.get('tag')!r}.")
        return cls(record["tag"], record["prompt"], tuple(record["include"]), tuple(record.get("exclude", ())))


def single_object_spec(shape: str) -> PromptSpec:
    return PromptSpec("single_object", f"a photo of {noun_phrase(None, shape)}", ({"class": shape, "count": 1},))


def two_object_spec(first: str, second: str) -> PromptSpec:
    return PromptSpec(
        "two_object",
        f"a photo of {noun_phrase(None, first)} and {noun_phrase(None, second)}",
        ({"class": first, "count": 1}, {"class": second, "count": 1}),
    )


def counting_spec(shape: str, count: int) -> PromptSpec:
    return PromptSpec(
        "counting",
        f"a photo of {noun_phrase(None, shape, count)}",
        ({"class": shape, "count": count},),
        ({"class": shape, "count": count + 1},),
    )


def colors_spec(colour: str, shape: str) -> PromptSpec:
    return PromptSpec(
        "colors", f"a photo of {noun_phrase(colour, shape)}", ({"class": shape, "count": 1, "color": colour},)
    )


def position_spec(first: str, relation: str, second: str) -> PromptSpec:
    """'a photo of a {first} {relation} a {second}': the first-named object is `relation` the second (GenEval lists
    the target first in `include`)."""
    return PromptSpec(
        "position",
        f"a photo of {noun_phrase(None, first)} {relation} {noun_phrase(None, second)}",
        ({"class": second, "count": 1}, {"class": first, "count": 1, "position": [relation, 0]}),
    )


def color_attr_spec(colour_a: str, shape_a: str, colour_b: str, shape_b: str) -> PromptSpec:
    return PromptSpec(
        "color_attr",
        f"a photo of {noun_phrase(colour_a, shape_a)} and {noun_phrase(colour_b, shape_b)}",
        ({"class": shape_a, "count": 1, "color": colour_a}, {"class": shape_b, "count": 1, "color": colour_b}),
    )


def scene_from_spec(
    spec: PromptSpec, rng: np.random.Generator, world: WorldSpec | None = None, textured: bool | None = None
) -> Scene:
    """
    A scene holding exactly `spec`'s required objects (unnamed colours random), placed so that any position holds
    clearly (`CLEAR_SHARE`).
    """
    world = world or WorldSpec()
    while True:
        attributes = []
        for rule in spec.include:
            for _ in range(rule["count"]):
                colour = rule.get("color") or COLOUR_NAMES[int(rng.integers(len(COLOUR_NAMES)))]
                attributes.append((rule["class"], colour))
        objects = place_objects(attributes, rng, world)
        if objects is None:
            continue
        scene = _finish_scene(objects, rng, world, textured)
        clear = [
            "position" not in rule or rule["position"][0] in scene.relations(index, rule["position"][1], CLEAR_SHARE)
            for index, rule in enumerate(spec.include)
        ]
        if all(clear):
            return scene


def geneval_captions(scene: Scene) -> list[tuple[str, PromptSpec]]:
    """Every GenEval-template caption that describes the whole of `scene`, with its spec."""
    objects = scene.objects
    shapes = [o.shape for o in objects]
    specs = []
    if len(objects) == 1:
        specs += [single_object_spec(shapes[0]), colors_spec(objects[0].colour, shapes[0])]
    if len(objects) > 1 and len(set(shapes)) == 1:
        specs.append(counting_spec(shapes[0], len(objects)))
    if len(objects) == 2:
        a, b = objects
        if a.shape != b.shape:  # GenEval's two-object, attribution and position prompts name two classes
            specs += [two_object_spec(a.shape, b.shape), two_object_spec(b.shape, a.shape)]
            specs += [
                color_attr_spec(a.colour, a.shape, b.colour, b.shape),
                color_attr_spec(b.colour, b.shape, a.colour, a.shape),
            ]
            for first, second in ((0, 1), (1, 0)):
                for relation in sorted(scene.relations(first, second, CLEAR_SHARE)):
                    specs.append(position_spec(objects[first].shape, relation, objects[second].shape))
    return [(s.prompt, s) for s in specs]


def free_caption(scene: Scene, rng: np.random.Generator) -> str:
    """A freer caption of the whole scene: grouped noun phrases, sometimes with a relation or a count of shapes."""
    groups: dict[tuple[str, str], int] = {}
    for o in scene.objects:
        groups[(o.colour, o.shape)] = groups.get((o.colour, o.shape), 0) + 1
    phrases = [noun_phrase(c, s, n) for (c, s), n in groups.items()]
    order = rng.permutation(len(phrases))
    body = join_phrases([phrases[i] for i in order])
    n = len(scene.objects)
    style = int(rng.integers(4))
    if style == 1 and n == 2:
        a, b = scene.objects
        relations = sorted(scene.relations(0, 1, CLEAR_SHARE))
        if relations and (a.colour, a.shape) != (b.colour, b.shape):
            relation = relations[int(rng.integers(len(relations)))]
            return f"{noun_phrase(a.colour, a.shape)} {relation} {noun_phrase(b.colour, b.shape)}"
    if style == 2:
        return f"{COUNT_WORDS[n] if n > 1 else 'one'} shape{'s' if n > 1 else ''}: {body}"
    if style == 3:
        return f"an image of {body} on a light background"
    return body


def class_name(colour: str, shape: str) -> str:
    """Stage I's class-name prompt ('red circle'), ImageNet's role in Janus-Pro's stage I."""
    return f"{colour} {shape}"


def _unique(scene: Scene, **kwargs) -> bool:
    return scene.count(**kwargs) == 1


def vqa_questions(scene: Scene, rng: np.random.Generator) -> list[tuple[str, str, str]]:
    """(category, question, short exact answer) triples true of `scene`: colour, shape, count, position, yes/no."""
    objects = scene.objects
    out = []
    for o in objects:
        if _unique(scene, shape=o.shape):
            out.append(("colour", f"What colour is the {o.shape}?", o.colour))
        if _unique(scene, colour=o.colour):
            out.append(("shape", f"What shape is the {o.colour} object?", o.shape))
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    out.append(("count", f"How many {shape}s are there?", str(scene.count(shape=shape))))
    out.append(("count", "How many objects are there?", str(len(objects))))
    colour = COLOUR_NAMES[int(rng.integers(len(COLOUR_NAMES)))]
    out.append(("count", f"How many {colour} objects are there?", str(scene.count(colour=colour))))
    for i, a in enumerate(objects):
        for j, b in enumerate(objects):
            named = _unique(scene, shape=a.shape, colour=a.colour) and _unique(scene, shape=b.shape, colour=b.colour)
            if i == j or not named:
                continue
            name_a, name_b = f"the {a.colour} {a.shape}", f"the {b.colour} {b.shape}"
            for relation in sorted(scene.relations(i, j, CLEAR_SHARE)):
                out.append(("position", f"Is {name_a} {relation} {name_b}?", "yes"))
                # The opposite of a relation that holds is clearly false.
                out.append(("position", f"Is {name_a} {OPPOSITE_RELATION[relation]} {name_b}?", "no"))
    colour = COLOUR_NAMES[int(rng.integers(len(COLOUR_NAMES)))]
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    present = scene.count(shape=shape, colour=colour) > 0
    out.append(("yes/no", f"Is there {noun_phrase(colour, shape)}?", "yes" if present else "no"))
    o = objects[int(rng.integers(len(objects)))]
    out.append(("yes/no", f"Is there {noun_phrase(o.colour, o.shape)}?", "yes"))
    return out


def understanding_records(scene: Scene, image_path: str, rng: np.random.Generator, num_turns: int = 4) -> list[dict]:
    """
    The understanding record (`{"messages", "images"}`) of one image: `num_turns` VQA questions (the first one a
    description a quarter of the time), asked in one conversation so the image's tokens are paid for once.
    """
    questions = vqa_questions(scene, rng)
    picks = rng.choice(len(questions), size=min(num_turns, len(questions)), replace=False)
    messages = []
    for k, i in enumerate(picks):
        _, question, answer = questions[int(i)]
        if k == 0 and rng.random() < 0.25:
            question, answer = "Describe the image.", free_caption(scene, rng).capitalize() + "."
        messages.append({"role": "user", "content": f"<image_placeholder>\n{question}" if k == 0 else question})
        messages.append({"role": "assistant", "content": answer})
    return [{"messages": messages, "images": [image_path]}]


_SIDES = {"circle": 0, "square": 4, "triangle": 3}


def text_conversation(rng: np.random.Generator) -> dict:
    """A plain-text conversation (`{"messages"}`) about the world's vocabulary, counting and sums of counts."""
    kind = int(rng.integers(6))
    if kind == 0:
        question, answer = "What colours can the shapes have?", join_phrases(list(COLOUR_NAMES)).capitalize() + "."
    elif kind == 1:
        shape = SHAPES[int(rng.integers(3))]
        question, answer = f"How many corners does a {shape} have?", str(_SIDES[shape])
    elif kind == 2:
        word = [*COLOUR_NAMES, *SHAPES][int(rng.integers(len(COLOUR_NAMES) + len(SHAPES)))]
        question = f"Is {word} a colour or a shape?"
        answer = "a colour" if word in COLOUR_NAMES else "a shape"
    elif kind == 3:
        words = [str(w) for w in rng.choice([*COLOUR_NAMES, *SHAPES], size=int(rng.integers(2, 7)))]
        question, answer = f"How many words are in \"{' '.join(words)}\"?", str(len(words))
    elif kind == 4:
        a, b = (int(v) for v in rng.integers(0, 5, size=2))
        sa, sb = rng.choice(SHAPES, size=2, replace=False)
        question = f"If there are {a} {sa}s and {b} {sb}s, how many shapes are there?"
        answer = str(a + b)
    else:
        a, b = (int(v) for v in rng.integers(0, 10, size=2))
        question, answer = f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}."
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def random_prompt_spec(rng: np.random.Generator, tag: str) -> PromptSpec:
    """A GenEval-style prompt of category `tag` with its shapes, colours, count or relation drawn from `rng`."""
    pick = lambda options: options[int(rng.integers(len(options)))]  # noqa: E731
    if tag == "single_object":
        return single_object_spec(pick(SHAPES))
    if tag == "counting":
        return counting_spec(pick(SHAPES), int(rng.integers(2, 5)))
    if tag == "colors":
        return colors_spec(pick(COLOUR_NAMES), pick(SHAPES))
    if tag not in TAGS:
        raise ValueError(f"`tag` must be one of {TAGS}, got {tag!r}.")
    a, b = (str(shape) for shape in rng.choice(SHAPES, size=2, replace=False))
    if tag == "two_object":
        return two_object_spec(a, b)
    if tag == "position":
        return position_spec(a, pick(RELATIONS), b)
    return color_attr_spec(pick(COLOUR_NAMES), a, pick(COLOUR_NAMES), b)


def evaluation_prompt_specs(rng: np.random.Generator, per_tag: int) -> list[PromptSpec]:
    """`per_tag` GenEval-style prompts per tag; colour prompts include the held-out pairs (scored apart)."""
    return [random_prompt_spec(rng, tag) for _ in range(per_tag) for tag in TAGS]


__all__ = [
    "TAGS", "PromptSpec", "noun_phrase", "single_object_spec", "two_object_spec", "counting_spec", "colors_spec",
    "position_spec", "color_attr_spec", "scene_from_spec", "geneval_captions", "free_caption", "class_name",
    "vqa_questions", "understanding_records", "text_conversation", "random_prompt_spec", "evaluation_prompt_specs",
]
