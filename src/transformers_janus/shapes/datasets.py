"""
Writers of the shapes world's data: the three JSONL kinds `training/train.py` reads (see docs/training.md "Data"),
stage I's class-name generation data, and held-out evaluation splits. Each kind draws from its own seed stream, so
adding samples of one kind leaves the others unchanged, and evaluation images never coincide with training ones.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .text import (
    TAGS,
    class_name,
    evaluation_prompt_specs,
    free_caption,
    geneval_captions,
    random_prompt_spec,
    scene_from_spec,
    text_conversation,
    understanding_records,
    vqa_questions,
)
from .world import COLOUR_NAMES, HELD_OUT_PAIRS, SHAPES, Scene, WorldSpec, random_scene


_STREAMS = {"understanding": 0, "text": 1, "generation": 2, "stage1": 3, "eval_generation": 4, "eval_vqa": 5}


def _rng(seed: int, kind: str) -> np.random.Generator:
    return np.random.default_rng([seed, _STREAMS[kind]])


def generation_scene(rng: np.random.Generator, world: WorldSpec) -> tuple[Scene, str]:
    """
    A text-to-image sample free of held-out pairs (caption and image). Half the time a GenEval-template prompt of a
    uniformly drawn category and a scene made from it: a random scene seldom fits the rarer templates (a counting
    caption needs every object of one shape; 3 % of them fit a position one), and each category should be learnt
    as often as any other. Otherwise a random scene and one of its captions, a GenEval template half the time.
    """
    if rng.random() < 0.5:
        while True:
            spec = random_prompt_spec(rng, TAGS[int(rng.integers(len(TAGS)))])
            if spec.names_held_out_pair:
                continue
            scene = scene_from_spec(spec, rng, world)
            if not any((o.colour, o.shape) in HELD_OUT_PAIRS for o in scene.objects):
                return scene, spec.prompt
    scene = random_scene(rng, world, exclude_pairs=HELD_OUT_PAIRS)
    templates = geneval_captions(scene)
    if templates and rng.random() < 0.5:
        return scene, templates[int(rng.integers(len(templates)))][0]
    return scene, free_caption(scene, rng)


def evaluation_vqa_scenes(seed: int, num_images: int, world: WorldSpec | None = None):
    """
    The first `num_images` unseen VQA scenes of `write_shapes_data(seed=seed, num_eval_vqa_images=...)`, each with
    its `vqa_questions`, drawn from the same stream: what `eval_vqa.jsonl` holds, rebuilt without its files.
    """
    rng = _rng(seed, "eval_vqa")
    world = world or WorldSpec()
    for _ in range(num_images):
        scene = random_scene(rng, world)
        yield scene, vqa_questions(scene, rng)


def vqa_record(question: str, answer: str, category: str, image) -> dict:
    """An `eval_vqa.jsonl` record: the question on one image, its reference answer and category."""
    return {
        "messages": [
            {"role": "user", "content": f"<image_placeholder>\n{question}"},
            {"role": "assistant", "content": answer},
        ],
        "images": [image],
        "category": category,
        "answer": answer,
    }


def _write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def write_shapes_data(
    output_dir: str | os.PathLike,
    num_understanding: int,
    num_text: int,
    num_generation: int,
    seed: int = 0,
    image_size: int = 128,
    num_stage1: int | None = None,
    num_eval_prompts_per_tag: int = 0,
    num_eval_vqa_images: int = 0,
    num_turns: int = 4,
) -> dict[str, Path]:
    """
    Write the world's data to `output_dir` (created; must not exist or be empty), atomically: everything goes to a
    temporary sibling folder first, renamed at the end, so a failure leaves nothing half-written.

    Files (image paths relative to the JSONL): `understanding.jsonl` (`{"messages", "images"}`, one conversation of
    `num_turns` questions per image), `text.jsonl` (`{"messages"}`), `generation.jsonl` (`{"caption", "image"}`,
    never a held-out pair in caption or image), `generation_stage1.jsonl` (class-name captions of single objects,
    `num_stage1` records, default `num_generation`), and, when asked, `eval_generation.jsonl` (GenEval-style prompt
    specs, held-out pairs included) and `eval_vqa.jsonl` (understanding records with `category` and `answer`, on
    unseen images).
    Returns the path of each file written, by kind.
    """
    for name, value in (("num_understanding", num_understanding), ("num_text", num_text),
                        ("num_generation", num_generation), ("num_eval_prompts_per_tag", num_eval_prompts_per_tag),
                        ("num_eval_vqa_images", num_eval_vqa_images)):
        if value < 0:
            raise ValueError(f"`{name}` must be >= 0, got {value}.")
    if num_turns < 1:
        raise ValueError(f"`num_turns` must be >= 1, got {num_turns}.")
    output_dir = Path(output_dir)
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise ValueError(f"`output_dir` {output_dir} exists and is not an empty folder; give a new path.")
    world = WorldSpec.for_image_size(image_size)
    num_stage1 = num_generation if num_stage1 is None else num_stage1
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        files = _write_all(staging, world, seed, num_understanding, num_text, num_generation, num_stage1,
                           num_eval_prompts_per_tag, num_eval_vqa_images, num_turns)
        if output_dir.exists():
            output_dir.rmdir()
        os.replace(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {kind: output_dir / name for kind, name in files.items()}


def _write_all(root: Path, world: WorldSpec, seed: int, num_understanding: int, num_text: int, num_generation: int,
               num_stage1: int, num_eval_prompts_per_tag: int, num_eval_vqa_images: int,
               num_turns: int) -> dict[str, str]:
    files = {}
    (root / "images").mkdir()

    def save(scene: Scene, name: str) -> str:
        relative = f"images/{name}.png"
        scene.render().save(root / relative)
        return relative

    rng = _rng(seed, "understanding")
    records = []
    for i in range(num_understanding):
        scene = random_scene(rng, world)
        records += understanding_records(scene, save(scene, f"understanding_{i:06d}"), rng, num_turns)
    _write_jsonl(root / "understanding.jsonl", records)
    files["understanding"] = "understanding.jsonl"

    rng = _rng(seed, "text")
    _write_jsonl(root / "text.jsonl", [text_conversation(rng) for _ in range(num_text)])
    files["text"] = "text.jsonl"

    rng = _rng(seed, "generation")
    records = []
    for i in range(num_generation):
        scene, caption = generation_scene(rng, world)
        records.append({"caption": caption, "image": save(scene, f"generation_{i:06d}")})
    _write_jsonl(root / "generation.jsonl", records)
    files["generation"] = "generation.jsonl"

    rng = _rng(seed, "stage1")
    classes = [(c, s) for c in COLOUR_NAMES for s in SHAPES if (c, s) not in HELD_OUT_PAIRS]
    records = []
    for i in range(num_stage1):
        colour, shape = classes[i % len(classes)]
        scene = random_scene(rng, world, num_objects=1, exclude_pairs=set(HELD_OUT_PAIRS) | {
            pair for pair in ((c, s) for c in COLOUR_NAMES for s in SHAPES) if pair != (colour, shape)})
        records.append({"caption": class_name(colour, shape), "image": save(scene, f"stage1_{i:06d}")})
    _write_jsonl(root / "generation_stage1.jsonl", records)
    files["stage1"] = "generation_stage1.jsonl"

    if num_eval_prompts_per_tag:
        specs = evaluation_prompt_specs(_rng(seed, "eval_generation"), num_eval_prompts_per_tag)
        _write_jsonl(root / "eval_generation.jsonl", [s.to_dict() for s in specs])
        files["eval_generation"] = "eval_generation.jsonl"
    if num_eval_vqa_images:
        records = []
        for i, (scene, questions) in enumerate(evaluation_vqa_scenes(seed, num_eval_vqa_images, world)):
            path = save(scene, f"eval_vqa_{i:06d}")
            records += [vqa_record(question, answer, category, path) for category, question, answer in questions]
        _write_jsonl(root / "eval_vqa.jsonl", records)
        files["eval_vqa"] = "eval_vqa.jsonl"
    return files


__all__ = [
    "evaluation_vqa_scenes", "generation_scene", "vqa_record", "write_shapes_data",
]
