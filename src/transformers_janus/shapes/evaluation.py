"""
Evaluation of a shapes-world Janus-Pro: GenEval-style text-to-image accuracy (images generated from the prompt specs
of `eval_generation.jsonl`, scored by the world's detector) and VQA accuracy (greedy answers to the questions of
`eval_vqa.jsonl`), per category, from one checkpoint.

Deterministic: image `i` (in prompt order, `images_per_prompt` per prompt) is sampled from its own generator seeded
`seed + i`, the pipeline samples each image from its own generator only, and each image is VQ-decoded alone, so (in
float32) the batch size changes no image and a run on the first N prompts gives the first N images of a full run.
Answers are greedy.

torch and the model classes are imported when a function runs, so importing this module stays as cheap as the rest
of `transformers_janus.shapes`.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from .scoring import format_scores, geneval_scores, score_image, vqa_correct, vqa_scores
from .text import PromptSpec


GENERATION_FILE = "eval_generation.jsonl"
VQA_FILE = "eval_vqa.jsonl"

# The pipeline's own defaults (DeepSeek's for Janus-Pro, and GenEval's setting in the Janus-Pro report): guidance 5,
# plain sampling at temperature 1.
DEFAULT_GUIDANCE_SCALE = 5.0
DEFAULT_TEMPERATURE = 1.0
# Images per pipeline call and questions per `generate` call: what a CPU handles well at the shapes model's size.
DEFAULT_GENERATION_BATCH_SIZE = 16
DEFAULT_VQA_BATCH_SIZE = 32
# The world's answers are one or two words ("green", "2", "triangle", "yes").
DEFAULT_MAX_NEW_TOKENS = 8


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")


def _counts(keys: Iterable[str], scores: dict[str, float], held_out: int = 0) -> dict[str, int]:
    """Samples per category, `overall` and `held_out_pairs` (when any), in the order of `scores`."""
    counts: dict[str, int] = {}
    for key in keys:
        counts[key] = counts.get(key, 0) + 1
    counts["overall"] = sum(counts.values())
    if held_out:
        counts["held_out_pairs"] = held_out
    return {key: counts[key] for key in [*scores, *counts] if key in counts}


# --- Generation ---------------------------------------------------------------------------------------------------


@dataclass
class GenerationEvaluation:
    """
    The GenEval-style evaluation of generated images.

    Attributes:
        scores: `geneval_scores` of `results`: accuracy per tag, `overall` (the mean over tags, as GenEval reports it)
            and `held_out_pairs` (prompts naming a held-out colour–shape pair) when there are any.
        counts: images per tag, `overall` (all images) and `held_out_pairs`.
        results: (spec, correct) per image, in image order (`images_per_prompt` consecutive images per prompt).
        prompts: the prompt text each image was generated from.
        seeds: the seed of each image's generator (`seed + index`).
        image_paths: where each image was saved (GenEval's layout, see `evaluate_generation`), or None.
        images: the PIL images when `keep_images=True`, else None.
        seconds: wall time of the generation and scoring.
    """

    scores: dict[str, float]
    counts: dict[str, int]
    results: list[tuple[PromptSpec, bool]]
    prompts: list[str]
    seeds: list[int]
    image_paths: list[Path] | None = None
    images: list[Image.Image] | None = None
    seconds: float = 0.0

    def records(self) -> list[dict]:
        """One JSON-able record per image: index, tag, prompt, seed, correct, and image path when saved."""
        records = []
        for index, ((spec, correct), prompt, seed) in enumerate(zip(self.results, self.prompts, self.seeds)):
            record = {"index": index, "tag": spec.tag, "prompt": prompt, "seed": seed, "correct": bool(correct)}
            if self.image_paths is not None:
                record["image"] = str(self.image_paths[index])
            records.append(record)
        return records

    def to_dict(self, include_records: bool = True) -> dict:
        result = {"scores": self.scores, "counts": self.counts, "seconds": self.seconds}
        if include_records:
            result["images"] = self.records()
        return result


def _spec(spec: PromptSpec | dict) -> PromptSpec:
    return spec if isinstance(spec, PromptSpec) else PromptSpec.from_dict(spec)


def evaluate_generation(
    pipeline,
    specs: Sequence[PromptSpec | dict],
    batch_size: int = DEFAULT_GENERATION_BATCH_SIZE,
    guidance_scale: float = DEFAULT_GUIDANCE_SCALE,
    temperature: float = DEFAULT_TEMPERATURE,
    top_k: int | None = None,
    seed: int = 0,
    images_per_prompt: int = 1,
    save_dir: str | os.PathLike | None = None,
    keep_images: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> GenerationEvaluation:
    """
    Generate `images_per_prompt` images per prompt spec with `pipeline` (a `JanusProImagePipeline`) and score each
    with `score_image` against its spec, GenEval's way (every image counts).

    Args:
        pipeline: The text-to-image pipeline; its progress bar is switched off during the call. It draws the image
            tokens of a batch at once, and its VQ decoder paints them one image at a time.
        specs: `PromptSpec`s, or their dicts as `eval_generation.jsonl` holds them.
        batch_size: Images per pipeline call (prompts are repeated per image in a batch).
        guidance_scale, temperature, top_k: Passed to the pipeline (its defaults: 5.0, 1.0, None).
        seed: Image `i` (in prompt order) is drawn from `torch.Generator().manual_seed(seed + i)`, so results do not
            depend on `batch_size`, and the first N prompts give the same images as in a run on all of them.
        images_per_prompt: Samples per prompt (GenEval samples 4; every sample is scored).
        save_dir: When given, the images are saved as PNG (lossless, so re-scoring a file gives the same result) in
            GenEval's layout: `save_dir/<prompt index:05d>/metadata.jsonl` (the spec) and `samples/<k:04d>.png`, and
            `save_dir/results.jsonl` holds one record per image (index, tag, prompt, seed, correct, image path).
        keep_images: Keep the PIL images in the result's `images`.
        progress: Called as `progress(images_done, images_total)` after each batch.
    """
    import torch

    _check_batch_size(batch_size)
    if isinstance(images_per_prompt, bool) or not isinstance(images_per_prompt, int) or images_per_prompt < 1:
        raise ValueError(f"`images_per_prompt` must be a positive integer, got {images_per_prompt!r}.")
    start = time.perf_counter()
    specs = [_spec(spec) for spec in specs]
    per_image = [spec for spec in specs for _ in range(images_per_prompt)]
    seeds = [seed + index for index in range(len(per_image))]
    save_dir = Path(save_dir) if save_dir is not None else None
    paths = None
    if save_dir is not None:
        paths = [
            save_dir / f"{index // images_per_prompt:05d}" / "samples" / f"{index % images_per_prompt:04d}.png"
            for index in range(len(per_image))
        ]
        for prompt_index, spec in enumerate(specs):
            folder = save_dir / f"{prompt_index:05d}"
            (folder / "samples").mkdir(parents=True, exist_ok=True)
            (folder / "metadata.jsonl").write_text(json.dumps(spec.to_dict()) + "\n")

    progress_config = dict(getattr(pipeline, "_progress_bar_config", {}))
    pipeline.set_progress_bar_config(**{**progress_config, "disable": True})
    results: list[tuple[PromptSpec, bool]] = []
    kept: list[Image.Image] = []
    try:
        for begin in range(0, len(per_image), batch_size):
            batch = per_image[begin : begin + batch_size]
            generators = [torch.Generator().manual_seed(s) for s in seeds[begin : begin + batch_size]]
            image_tokens = pipeline(
                [spec.prompt for spec in batch],
                guidance_scale=guidance_scale,
                temperature=temperature,
                top_k=top_k,
                generator=generators,
                output_type="latent",
            ).images
            # The VQ decoder paints each image alone: its convolutions round differently with the batch size (by a
            # level of 255 here and there), and the pixels should not depend on it.
            with torch.inference_mode():
                images = [
                    pipeline.postprocess(pipeline.model.decode_image_tokens(image_tokens[row : row + 1]), "pil")[0]
                    for row in range(len(batch))
                ]
            for offset, (spec, image) in enumerate(zip(batch, images)):
                results.append((spec, score_image(image, spec)))
                if paths is not None:
                    image.save(paths[begin + offset])
                if keep_images:
                    kept.append(image)
            if progress is not None:
                progress(len(results), len(per_image))
    finally:
        pipeline._progress_bar_config = progress_config

    scores = geneval_scores(results)
    evaluation = GenerationEvaluation(
        scores=scores,
        counts=_counts((spec.tag for spec in per_image), scores, sum(spec.names_held_out_pair for spec in per_image)),
        results=results,
        prompts=[spec.prompt for spec in per_image],
        seeds=seeds,
        image_paths=paths,
        images=kept if keep_images else None,
    )
    if save_dir is not None:
        save_dir.mkdir(parents=True, exist_ok=True)
        records = evaluation.records()
        for record in records:
            record["image"] = str(Path(record["image"]).relative_to(save_dir))
        (save_dir / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    evaluation.seconds = time.perf_counter() - start
    return evaluation


# --- VQA ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VQAPrediction:
    """One question of a VQA evaluation: its category, question, reference answer, the model's answer, the verdict."""

    category: str
    question: str
    answer: str
    prediction: str
    correct: bool
    image: str | None = None


@dataclass
class VQAEvaluation:
    """
    The VQA evaluation.

    Attributes:
        scores: `vqa_scores`: accuracy per category and `overall` (over all questions).
        counts: questions per category and `overall`.
        predictions: a `VQAPrediction` per question, in record order.
        seconds: wall time of the answering and scoring.
    """

    scores: dict[str, float]
    counts: dict[str, int]
    predictions: list[VQAPrediction] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self, include_records: bool = True) -> dict:
        result = {"scores": self.scores, "counts": self.counts, "seconds": self.seconds}
        if include_records:
            result["predictions"] = [vars(p).copy() for p in self.predictions]
        return result


def _split_record(record: dict) -> tuple[list[dict], str]:
    """The messages to prompt with (up to the last user turn) and the reference answer of a VQA record."""
    messages = list(record["messages"])
    if messages and messages[-1]["role"] in ("assistant", "<|Assistant|>"):
        reference = messages.pop()["content"]
    else:
        reference = None
    answer = record.get("answer", reference)
    if answer is None:
        raise ValueError(f"VQA record has no `answer` and no final assistant message: {record!r}.")
    if not messages:
        raise ValueError(f"VQA record has no question: {record!r}.")
    return messages, str(answer)


def _question_text(messages: list[dict]) -> str:
    content = messages[-1]["content"]
    if not isinstance(content, str):
        content = "\n".join(item.get("text", "") for item in content if item.get("type") == "text")
    return content.replace("<image_placeholder>", "").strip()


def _image_loader(image_root: str | os.PathLike | None) -> Callable[[object], Image.Image]:
    """A loader of record images (paths relative to `image_root`, or PIL images) as RGB, each file read once."""
    root = Path(image_root) if image_root is not None else None
    cache: dict[str, Image.Image] = {}

    def load(image) -> Image.Image:
        if isinstance(image, Image.Image):
            return image
        path = Path(image) if root is None or Path(image).is_absolute() else root / image
        key = str(path)
        if key not in cache:
            with Image.open(path) as opened:
                cache[key] = opened.convert("RGB")
        return cache[key]

    return load


def evaluate_vqa(
    model,
    processor,
    records: Sequence[dict],
    batch_size: int = DEFAULT_VQA_BATCH_SIZE,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    image_root: str | os.PathLike | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> VQAEvaluation:
    """
    Answer each record's question greedily with `model` and score the answers with `vqa_correct`.

    Args:
        model: A `JanusProForConditionalGeneration` (put it on its device first).
        processor: Its `JanusProProcessor`.
        records: `eval_vqa.jsonl` records: `{"messages": [user "<image_placeholder>\\nQUESTION", assistant ANSWER],
            "images": [path], "category", "answer"}`. The final assistant message is dropped from the prompt; the
            reference is `answer` (else that message); `category` defaults to "all". Images may also be PIL images.
        batch_size: Questions per `generate` call (the processor left-pads the batch).
        max_new_tokens: Longest answer, in tokens.
        image_root: The folder image paths are relative to (the JSONL's folder); None: as given.
        progress: Called as `progress(questions_done, questions_total)` after each batch.
    """
    import torch

    _check_batch_size(batch_size)
    start = time.perf_counter()
    load = _image_loader(image_root)
    prepared = []
    for record in records:
        messages, answer = _split_record(record)
        images = record.get("images") or []
        prepared.append((record.get("category", "all"), messages, answer, images))

    predictions: list[VQAPrediction] = []
    for begin in range(0, len(prepared), batch_size):
        batch = prepared[begin : begin + batch_size]
        texts = [processor.apply_chat_template(messages, add_generation_prompt=True) for _, messages, _, _ in batch]
        images = [[load(image) for image in record_images] for *_, record_images in batch]
        inputs = processor(text=texts, images=images if any(images) else None, return_tensors="pt")
        inputs = {name: value.to(model.device) for name, value in inputs.items()}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
        with torch.inference_mode():
            output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        answers = processor.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        for (category, messages, answer, record_images), prediction in zip(batch, answers):
            prediction = prediction.strip()
            predictions.append(
                VQAPrediction(
                    category=category,
                    question=_question_text(messages),
                    answer=answer,
                    prediction=prediction,
                    correct=vqa_correct(prediction, answer),
                    image=str(record_images[0]) if record_images and not isinstance(record_images[0], Image.Image)
                    else None,
                )
            )
        if progress is not None:
            progress(len(predictions), len(prepared))

    scores = vqa_scores([(p.category, p.prediction, p.answer) for p in predictions])
    return VQAEvaluation(
        scores=scores,
        counts=_counts((p.category for p in predictions), scores),
        predictions=predictions,
        seconds=time.perf_counter() - start,
    )


# --- Both, from a checkpoint folder -------------------------------------------------------------------------------


def image_reliance(model, processor, records: Sequence[dict], image_root: str | os.PathLike | None = None,
                   max_images: int = 64) -> dict:
    """
    Whether the model's answers depend on the image: the mean answer loss (nats per token of the reference answer
    and the end of its turn, teacher-forced) with each question's own image against the same questions asked of
    another question's image. A blind understanding path gives `gap` ~ 0 while its answers still beat chance.

    One question per distinct image is used (the first `max_images` images of `records`, in order); "another
    image" is the next one of them, cyclically, so every question is paired with a different image.
    Returns `{"answer_loss", "answer_loss_other_image", "gap", "questions"}`.
    """
    import torch
    import torch.nn.functional as F

    load = _image_loader(image_root)
    chosen, seen = [], set()
    for record in records:
        images = record.get("images") or []
        if len(images) != 1:
            continue
        key = id(images[0]) if isinstance(images[0], Image.Image) else str(images[0])
        if key in seen:
            continue
        seen.add(key)
        chosen.append(record)
        if len(chosen) == max_images:
            break
    if len(chosen) < 2:
        raise ValueError(f"image_reliance needs questions about at least 2 distinct images; got {len(chosen)}.")

    def answer_loss(record: dict, image: Image.Image) -> float:
        messages, answer = _split_record(record)
        prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
        full = processor.apply_chat_template([*messages, {"role": "assistant", "content": answer}])
        prompt_length = processor(text=[prompt], images=[[image]], return_tensors="pt")["input_ids"].shape[1]
        inputs = processor(text=[full], images=[[image]], return_tensors="pt")
        inputs = {name: value.to(model.device) for name, value in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
        with torch.inference_mode():
            logits = model(**inputs).logits[0, prompt_length - 1 : -1].float()
        return F.cross_entropy(logits, inputs["input_ids"][0, prompt_length:]).item()

    images = [load(record["images"][0]) for record in chosen]
    own = [answer_loss(record, image) for record, image in zip(chosen, images)]
    other = [answer_loss(record, image) for record, image in zip(chosen, images[1:] + images[:1])]
    own_mean, other_mean = sum(own) / len(own), sum(other) / len(other)
    return {"answer_loss": round(own_mean, 4), "answer_loss_other_image": round(other_mean, 4),
            "gap": round(other_mean - own_mean, 4), "questions": len(chosen)}


def _read_jsonl(path: Path) -> list[dict]:
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number} is not a JSON record ({error}).") from error
    return records


def eval_data_files(data_dir: str | os.PathLike, generation: bool = True, vqa: bool = True) -> dict[str, Path]:
    """
    The evaluation files of a shapes data folder (`generation`: eval_generation.jsonl, `vqa`: eval_vqa.jsonl), checked
    to exist: a `FileNotFoundError` says how to write missing ones.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"The shapes data folder {str(data_dir)!r} does not exist (or is not a folder).")
    wanted = {"generation": (generation, GENERATION_FILE, "num_eval_prompts_per_tag"),
              "vqa": (vqa, VQA_FILE, "num_eval_vqa_images")}
    files, missing = {}, []
    for kind, (needed, name, argument) in wanted.items():
        if needed:
            if (data_dir / name).is_file():
                files[kind] = data_dir / name
            else:
                missing.append((name, argument))
    if missing:
        names = " and ".join(name for name, _ in missing)
        arguments = ", ".join(f"{argument}={letter}" for (_, argument), letter in zip(missing, "NM"))
        raise FileNotFoundError(
            f"{str(data_dir)!r} has no {names}; write the evaluation files with "
            f"`transformers_janus.shapes.write_shapes_data(output_dir, ..., {arguments})` and evaluate on that "
            "output_dir."
        )
    return files


def load_shapes_pipeline(model_path: str | os.PathLike, device=None, dtype=None, **loading_kwargs):
    """`JanusProImagePipeline.from_pretrained(model_path)` on `device` (None: the CPU), in eval mode."""
    from ..pipeline_janus_pro import JanusProImagePipeline

    pipeline = JanusProImagePipeline.from_pretrained(model_path, torch_dtype=dtype, **loading_kwargs)
    return pipeline.to(device or "cpu")


def evaluate_shapes(
    model_path,
    data_dir: str | os.PathLike,
    *,
    max_prompts: int | None = None,
    max_questions: int | None = None,
    generation_batch_size: int = DEFAULT_GENERATION_BATCH_SIZE,
    vqa_batch_size: int = DEFAULT_VQA_BATCH_SIZE,
    guidance_scale: float = DEFAULT_GUIDANCE_SCALE,
    temperature: float = DEFAULT_TEMPERATURE,
    top_k: int | None = None,
    seed: int = 0,
    images_per_prompt: int = 1,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    device=None,
    dtype=None,
    save_dir: str | os.PathLike | None = None,
    include_records: bool = True,
    progress: Callable[[str, int, int], None] | None = None,
    loading_kwargs: dict | None = None,
) -> dict:
    """
    Evaluate a shapes checkpoint on the evaluation files of `data_dir` (see `write_shapes_data`): GenEval-style
    generation (`evaluate_generation`) and VQA (`evaluate_vqa`), model and processor loaded once.

    Args:
        model_path: A checkpoint folder (or hub id) `JanusProImagePipeline.from_pretrained` reads, or an already
            loaded `JanusProImagePipeline` (then `device`, `dtype` and `loading_kwargs` are not used).
        data_dir: The folder holding `eval_generation.jsonl` and `eval_vqa.jsonl` (image paths relative to it).
        max_prompts, max_questions: Evaluate only the first N prompts / questions (None: all; 0: skip that part, whose
            file then need not exist). The prompt file interleaves the tags, so its first N prompts cover every tag.
        generation_batch_size, vqa_batch_size: Images per pipeline call, questions per `generate` call.
        guidance_scale, temperature, top_k, seed, images_per_prompt, save_dir: See `evaluate_generation`.
        max_new_tokens: See `evaluate_vqa`.
        device, dtype: Where and in what dtype to load the model (None: the CPU, the checkpoint's dtype).
        include_records: Include the per-image and per-question records in the result.
        progress: Called as `progress(part, done, total)` with part "generation" or "vqa", after each batch.
        loading_kwargs: Further keyword arguments of `from_pretrained` (e.g. `local_files_only`).

    Returns:
        A JSON-able dict: `model`, `data`, `settings`, `generation` and `vqa` (each `{"scores", "counts", "seconds"}`
        plus `images` / `predictions` records, or None when skipped), `load_seconds` and `seconds` (wall, in all).
    """
    start = time.perf_counter()
    for name, value in (("max_prompts", max_prompts), ("max_questions", max_questions)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ValueError(f"`{name}` must be None or an integer >= 0, got {value!r}.")
    files = eval_data_files(data_dir, generation=max_prompts != 0, vqa=max_questions != 0)
    specs = records = None
    if "generation" in files:
        specs = [PromptSpec.from_dict(record) for record in _read_jsonl(files["generation"])][:max_prompts]
    if "vqa" in files:
        records = _read_jsonl(files["vqa"])[:max_questions]

    if isinstance(model_path, (str, os.PathLike)):
        pipeline = load_shapes_pipeline(model_path, device=device, dtype=dtype, **(loading_kwargs or {}))
        model_name = str(model_path)
    else:
        pipeline = model_path
        model_name = getattr(getattr(pipeline.model, "config", None), "_name_or_path", None) or type(pipeline).__name__
    load_seconds = time.perf_counter() - start

    def part_progress(part: str):
        return None if progress is None else (lambda done, total: progress(part, done, total))

    generation = vqa = None
    if specs is not None:
        generation = evaluate_generation(
            pipeline, specs, batch_size=generation_batch_size, guidance_scale=guidance_scale, temperature=temperature,
            top_k=top_k, seed=seed, images_per_prompt=images_per_prompt, save_dir=save_dir,
            progress=part_progress("generation"),
        )
    if records is not None:
        vqa = evaluate_vqa(
            pipeline.model, pipeline.processor, records, batch_size=vqa_batch_size, max_new_tokens=max_new_tokens,
            image_root=data_dir, progress=part_progress("vqa"),
        )
    model = pipeline.model
    return {
        "model": model_name,
        "data": str(data_dir),
        "settings": {
            "guidance_scale": guidance_scale, "temperature": temperature, "top_k": top_k, "seed": seed,
            "images_per_prompt": images_per_prompt, "max_new_tokens": max_new_tokens,
            "generation_batch_size": generation_batch_size, "vqa_batch_size": vqa_batch_size,
            "max_prompts": max_prompts, "max_questions": max_questions,
            "device": str(model.device), "dtype": str(model.dtype).removeprefix("torch."),
        },
        "generation": generation.to_dict(include_records) if generation is not None else None,
        "vqa": vqa.to_dict(include_records) if vqa is not None else None,
        "load_seconds": load_seconds,
        "seconds": time.perf_counter() - start,
    }


# --- The evaluation sample a shipped model carries -------------------------------------------------------------

SAMPLE_FILE = "evaluation_sample.json"
WEIGHTS_FILE = "model.safetensors"


def _sample_vqa_records(data_seed: int, num_questions: int) -> list[dict]:
    """The first `num_questions` questions of `eval_vqa.jsonl` (data seed `data_seed`), their images rebuilt."""
    from .datasets import evaluation_vqa_scenes, vqa_record

    records: list[dict] = []
    for index, (scene, questions) in enumerate(evaluation_vqa_scenes(data_seed, num_questions)):
        image = scene.render()
        for category, question, answer in questions:
            record = vqa_record(question, answer, category, image)
            record["image_index"] = index
            records.append(record)
        if len(records) >= num_questions:
            return records[:num_questions]
    return records


def evaluation_sample(
    pipeline,
    specs: Sequence[PromptSpec | dict],
    data_seed: int,
    num_questions: int = 24,
    guidance_scale: float = DEFAULT_GUIDANCE_SCALE,
    temperature: float = DEFAULT_TEMPERATURE,
    seed: int = 0,
) -> dict:
    """
    A small, self-contained slice of the evaluation that a model folder can carry and any install can rerun: the
    verdict on each of `specs` (image `i` sampled with seed `seed + i`, as `evaluate_generation` does) and the greedy
    answers to the first `num_questions` questions of the data seed's `eval_vqa.jsonl`, whose images
    `evaluation_vqa_scenes` rebuilds (no data files needed).
    """
    specs = [_spec(spec) for spec in specs]
    generation = evaluate_generation(pipeline, specs, batch_size=max(1, len(specs)), guidance_scale=guidance_scale,
                                     temperature=temperature, seed=seed)
    records = _sample_vqa_records(data_seed, num_questions)
    vqa = evaluate_vqa(pipeline.model, pipeline.processor, records, batch_size=max(1, len(records)))
    return {
        "settings": {"guidance_scale": guidance_scale, "temperature": temperature, "seed": seed,
                     "data_seed": data_seed, "num_questions": num_questions},
        "generation": [{**spec.to_dict(), "seed": image_seed, "correct": bool(correct)}
                       for (spec, correct), image_seed in zip(generation.results, generation.seeds)],
        "vqa": [{"image_index": record["image_index"], "category": p.category, "question": p.question,
                 "answer": p.answer, "prediction": p.prediction, "correct": p.correct}
                for record, p in zip(records, vqa.predictions)],
    }


def write_evaluation_sample(model_dir: str | os.PathLike, specs: Sequence[PromptSpec | dict], data_seed: int,
                            **kwargs) -> dict:
    """Run `evaluation_sample` on the model in `model_dir` and write it there as `evaluation_sample.json`, with the
    SHA-256 of the weights it was computed from."""
    sample = _model_dir_sample(Path(model_dir), specs, data_seed, **kwargs)
    write_result(sample, Path(model_dir) / SAMPLE_FILE)
    return sample


def _model_dir_sample(model_dir: Path, specs, data_seed: int, **kwargs) -> dict:
    """`evaluation_sample` of the model in `model_dir`, with the SHA-256 of the weights it was computed from."""
    from ..utils import sha256_file

    return {"weights_sha256": sha256_file(model_dir / WEIGHTS_FILE),
            **evaluation_sample(load_shapes_pipeline(model_dir), specs, data_seed, **kwargs)}


def rerun_evaluation_sample(model_dir: str | os.PathLike) -> tuple[dict, dict]:
    """
    The `evaluation_sample.json` recorded in `model_dir` and the same sample computed now on its weights (same
    settings; `weights_sha256` of the file there now): equal when the install reproduces the recorded evaluation.
    """
    model_dir = Path(model_dir)
    path = model_dir / SAMPLE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{str(model_dir)!r} has no {SAMPLE_FILE}; `write_evaluation_sample` writes one.")
    recorded = json.loads(path.read_text())
    settings = dict(recorded["settings"])
    # Each generation item is its prompt spec plus seed and verdict; `PromptSpec.from_dict` reads the spec's keys.
    rerun = _model_dir_sample(model_dir, recorded["generation"], settings.pop("data_seed"), **settings)
    return recorded, rerun


def sample_agrees(sample: dict, result: dict) -> bool:
    """Whether a full `evaluate_shapes` result (same settings, full records) holds the sample's verdicts and answers
    as its first images and questions."""
    images = (result.get("generation") or {}).get("images") or []
    predictions = (result.get("vqa") or {}).get("predictions") or []
    generation = [item["correct"] for item in sample["generation"]]
    answers = [item["prediction"] for item in sample["vqa"]]
    return ([record["correct"] for record in images[: len(generation)]] == generation
            and [record["prediction"] for record in predictions[: len(answers)]] == answers)


def format_report(result: dict) -> str:
    """The two per-category markdown tables of an `evaluate_shapes` result (a skipped part is left out)."""
    sections = []
    generation, vqa = result.get("generation"), result.get("vqa")
    if generation is not None:
        sections.append(
            f"Text-to-image, GenEval-style ({generation['counts'].get('overall', 0)} images, "
            f"{generation['seconds']:.1f} s)\n\n" + format_scores(generation["scores"], generation["counts"], "tag")
        )
    if vqa is not None:
        sections.append(
            f"VQA ({vqa['counts'].get('overall', 0)} questions, {vqa['seconds']:.1f} s)\n\n"
            + format_scores(vqa["scores"], vqa["counts"], "category")
        )
    if not sections:
        return "Nothing evaluated."
    return "\n\n".join(sections)


def write_result(result: dict, path: str | os.PathLike) -> Path:
    """Write an `evaluate_shapes` result as JSON (NaN, for an empty part, as null), atomically."""
    path = Path(path)

    def clean(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {key: clean(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(item) for item in value]
        return value

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(clean(result), indent=2) + "\n")
    os.replace(partial, path)
    return path


__all__ = [
    "GenerationEvaluation", "VQAEvaluation", "VQAPrediction", "evaluate_generation", "evaluate_vqa",
    "evaluate_shapes", "eval_data_files", "evaluation_sample", "format_report", "image_reliance", "load_shapes_pipeline",
    "rerun_evaluation_sample", "sample_agrees", "write_evaluation_sample", "write_result",
]
