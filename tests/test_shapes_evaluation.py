"""
The shapes world's evaluation (`transformers_janus.shapes.evaluation`, `janus-pro eval-shapes`) on a tiny random
Janus-Pro assembled in the test (8x8 token grid at 128 px), and on stand-ins whose outputs the test controls.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transformers_janus.shapes import PromptSpec, geneval_scores, score_image, scene_from_spec, write_shapes_data
from transformers_janus.shapes.evaluation import (
    GENERATION_FILE,
    VQA_FILE,
    evaluate_generation,
    evaluate_shapes,
    evaluate_vqa,
    format_report,
    image_reliance,
)


SRC_DIR = Path(__file__).parent.parent / "src"
TEXT_CONFIG = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
               "num_key_value_heads": 2}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model runs many times faster on one thread, above all on a machine that is busy with other work."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """Evaluation files only: 2 prompts per tag (12), every question of 3 unseen images."""
    path = tmp_path_factory.mktemp("shapes") / "data"
    write_shapes_data(path, 0, 0, 0, seed=3, num_eval_prompts_per_tag=2, num_eval_vqa_images=3)
    return path


@pytest.fixture(scope="module")
def specs(data_dir) -> list[PromptSpec]:
    return [PromptSpec.from_dict(json.loads(line)) for line in (data_dir / GENERATION_FILE).read_text().splitlines()]


@pytest.fixture(scope="module")
def vqa_records(data_dir) -> list[dict]:
    return [json.loads(line) for line in (data_dir / VQA_FILE).read_text().splitlines()]


@pytest.fixture(scope="module")
def pipeline(specs, vqa_records):
    """A random shapes model (tokenizer trained on the evaluation text) as a `JanusProImagePipeline`."""
    import diffusers
    import torch
    from transformers import SiglipVisionConfig, SiglipVisionModel

    from transformers_janus import JanusProImagePipeline, JanusProVQConfig
    from transformers_janus.shapes.assembly import assemble_shapes_model
    from transformers_janus.shapes.tokenizer import conversation_texts, train_tokenizer

    tokenizer = train_tokenizer([*conversation_texts(vqa_records), *(s.prompt for s in specs)], vocab_size=400)
    torch.manual_seed(0)
    vision = SiglipVisionModel(SiglipVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=128,
        patch_size=16, hidden_act="gelu", layer_norm_eps=1e-6, vision_use_head=False))
    vq = diffusers.VQModel(**JanusProVQConfig(
        block_out_channels=[16, 16, 16, 16, 16], layers_per_block=1, latent_channels=16, num_vq_embeddings=64,
        vq_embed_dim=8, norm_num_groups=8).to_diffusers_kwargs())
    model, processor = assemble_shapes_model(tokenizer, vision, vq, text_config=TEXT_CONFIG)
    assert model.config.num_image_tokens == 64
    return JanusProImagePipeline(model=model, processor=processor)


@pytest.fixture(scope="module")
def checkpoint_dir(pipeline, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("shapes-model") / "checkpoint"
    pipeline.model.save_pretrained(path)
    pipeline.processor.save_pretrained(path)
    return path


# --- Generation ---------------------------------------------------------------------------------------------------


class ControlledPipeline:
    """
    A pipeline stand-in whose images the test controls: an image drawn with an even seed is a scene rendered from
    its prompt's spec (which the scorer accepts), one with an odd seed a blank canvas (which it rejects). Its "image
    tokens" are (prompt index, seed), which its model "decodes" as they are and `postprocess` renders.
    """

    def __init__(self, specs):
        self.specs = list(specs)
        self.calls = []
        self.decoded_rows = []
        self._progress_bar_config = {"desc": "kept"}
        self.model = self

    def set_progress_bar_config(self, **kwargs):
        self._progress_bar_config = kwargs

    def __call__(self, prompts, generator, guidance_scale, temperature, top_k, output_type):
        import torch

        assert output_type == "latent" and len(generator) == len(prompts)
        assert self._progress_bar_config.get("disable") is True
        self.calls.append((list(prompts), [g.initial_seed() for g in generator], guidance_scale, temperature, top_k))
        index = {spec.prompt: i for i, spec in reversed(list(enumerate(self.specs)))}  # same prompt, same spec
        tokens = torch.tensor([[index[prompt], g.initial_seed()] for prompt, g in zip(prompts, generator)])
        return type("Output", (), {"images": tokens})()

    def decode_image_tokens(self, tokens):
        self.decoded_rows.append(len(tokens))
        return tokens

    def postprocess(self, decoded, output_type):
        assert output_type == "pil"
        images = []
        for spec_index, seed in decoded.tolist():
            if seed % 2 == 0:
                images.append(scene_from_spec(self.specs[spec_index], np.random.default_rng(seed)).render())
            else:
                images.append(Image.new("RGB", (128, 128), (230, 230, 230)))
        return images


def test_generation_scores_exactly_what_the_images_show(specs, tmp_path):
    """Two images per prompt, the first right and the second wrong: every tag (and held-out pairs) scores 0.5."""
    pipe = ControlledPipeline(specs)
    progress = []
    evaluation = evaluate_generation(
        pipe, [s.to_dict() for s in specs], batch_size=5, guidance_scale=3.0, temperature=0.9, top_k=7, seed=10,
        images_per_prompt=2, save_dir=tmp_path / "images", progress=lambda done, total: progress.append((done, total)),
    )
    assert pipe._progress_bar_config == {"desc": "kept"}  # restored
    assert [len(prompts) for prompts, *_ in pipe.calls] == [5, 5, 5, 5, 4]
    assert all(call[2:] == (3.0, 0.9, 7) for call in pipe.calls)
    assert [seed for _, seeds, *_ in pipe.calls for seed in seeds] == list(range(10, 34))
    assert progress == [(5, 24), (10, 24), (15, 24), (20, 24), (24, 24)]
    assert pipe.decoded_rows == [1] * 24  # each image decoded alone

    assert evaluation.prompts == [s.prompt for s in specs for _ in range(2)]
    assert evaluation.seeds == list(range(10, 34))
    assert [correct for _, correct in evaluation.results] == [True, False] * len(specs)
    tags = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
    held_out = sum(s.names_held_out_pair for s in specs)
    assert held_out  # seed 3's prompts name a held-out pair, so that score is reported
    assert evaluation.scores == {**{tag: 0.5 for tag in tags}, "overall": 0.5, "held_out_pairs": 0.5}
    assert evaluation.counts == {**{tag: 4 for tag in tags}, "overall": 24, "held_out_pairs": 2 * held_out}

    # GenEval's layout, and the per-image records.
    root = tmp_path / "images"
    for index, spec in enumerate(specs):
        assert json.loads((root / f"{index:05d}" / "metadata.jsonl").read_text()) == spec.to_dict()
        assert sorted(p.name for p in (root / f"{index:05d}" / "samples").iterdir()) == ["0000.png", "0001.png"]
    records = [json.loads(line) for line in (root / "results.jsonl").read_text().splitlines()]
    assert records[3] == {"index": 3, "tag": specs[1].tag, "prompt": specs[1].prompt, "seed": 13, "correct": False,
                          "image": "00001/samples/0001.png"}
    assert records == [{**r, "image": str(Path(r["image"]).relative_to(root))} for r in evaluation.records()]


def test_generation_with_the_model_is_batch_independent_and_rescoring_agrees(pipeline, specs, tmp_path):
    subset = specs[:4]
    one = evaluate_generation(pipeline, subset, batch_size=1, seed=5, keep_images=True)
    four = evaluate_generation(pipeline, subset, batch_size=4, seed=5, keep_images=True, save_dir=tmp_path)
    for a, b in zip(one.images, four.images, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert one.results == four.results and one.scores == four.scores
    # The verdicts are the scorer's on the saved files, which hold exactly the generated pixels.
    for (spec, correct), path, image in zip(four.results, four.image_paths, four.images, strict=True):
        with Image.open(path) as saved:
            np.testing.assert_array_equal(np.asarray(saved.convert("RGB")), np.asarray(image))
            assert score_image(saved, spec) == correct
    assert four.scores == geneval_scores(four.results)
    # A different seed draws different images.
    other = evaluate_generation(pipeline, subset[:1], batch_size=1, seed=6, keep_images=True)
    assert not np.array_equal(np.asarray(other.images[0]), np.asarray(one.images[0]))


# --- VQA ----------------------------------------------------------------------------------------------------------


def _unique_question_records(records: list[dict]) -> list[dict]:
    questions = [r["messages"][0]["content"] for r in records]
    return [r for r, q in zip(records, questions) if questions.count(q) == 1]


def test_vqa_scores_exactly_the_controlled_answers(pipeline, vqa_records, data_dir, monkeypatch):
    """`generate` answers right (as ' Green.', say) for the even records and wrong for the odd ones."""
    import torch

    model, processor = pipeline.model, pipeline.processor
    records = _unique_question_records(vqa_records)
    assert len({r["category"] for r in records}) >= 4 and len(records) >= 10
    by_question = {r["messages"][0]["content"].split("\n", 1)[1]: (i, r) for i, r in enumerate(records)}
    calls = []

    def controlled_generate(input_ids, attention_mask, pixel_values, max_new_tokens, do_sample, **kwargs):
        assert not do_sample and max_new_tokens == 16
        assert attention_mask[:, -1].all()  # left-padded: every row ends on its last prompt token
        assert pixel_values.shape == (len(input_ids), 3, 128, 128)
        calls.append(len(input_ids))
        rows = []
        for prompt in processor.batch_decode(input_ids):
            question = prompt.rsplit("<end_of_image>", 1)[1].rsplit("<|Assistant|>:", 1)[0].strip()
            index, record = by_question[question]
            answer = " " + record["answer"].capitalize() + "." if index % 2 == 0 else " wrong"
            ids = processor.tokenizer(answer, add_special_tokens=False).input_ids + [processor.eos_token_id]
            rows.append(ids + [processor.pad_token_id] * (max_new_tokens - len(ids)))
        return torch.cat([input_ids, torch.tensor(rows)], 1)

    monkeypatch.setattr(model, "generate", controlled_generate)
    evaluation = evaluate_vqa(model, processor, records, batch_size=3, max_new_tokens=16, image_root=data_dir)
    assert calls == [3] * (len(records) // 3) + ([len(records) % 3] if len(records) % 3 else [])

    expected = {}
    for index, record in enumerate(records):
        expected.setdefault(record["category"], []).append(index % 2 == 0)
    assert evaluation.scores == {
        **{category: sum(v) / len(v) for category, v in sorted(expected.items())},
        "overall": sum(i % 2 == 0 for i in range(len(records))) / len(records),
    }
    assert evaluation.counts == {**{c: len(v) for c, v in sorted(expected.items())}, "overall": len(records)}
    first, second = evaluation.predictions[:2]
    assert first.prediction == records[0]["answer"].capitalize() + "." and first.correct  # stripped, normalised
    assert second.prediction == "wrong" and not second.correct
    assert first.question == records[0]["messages"][0]["content"].split("\n", 1)[1]
    assert first.image == records[0]["images"][0]


def test_vqa_with_the_model_is_batch_independent(pipeline, vqa_records, data_dir):
    records = vqa_records[:6]
    one = evaluate_vqa(pipeline.model, pipeline.processor, records, batch_size=1, image_root=data_dir)
    six = evaluate_vqa(pipeline.model, pipeline.processor, records, batch_size=6, image_root=data_dir)
    assert [p.prediction for p in one.predictions] == [p.prediction for p in six.predictions]
    assert one.scores == six.scores
    assert [p.answer for p in six.predictions] == [r["answer"] for r in records]


def test_image_reliance_is_zero_exactly_when_the_image_cannot_reach_the_answer(pipeline, vqa_records, data_dir):
    """The check that caught a blind understanding path: answers scored with their own image and with another's."""
    import copy

    import torch

    model, processor = pipeline.model, pipeline.processor
    seeing = image_reliance(model, processor, vqa_records, image_root=data_dir)
    assert seeing["questions"] == 3  # one question per distinct image
    assert seeing["gap"] == round(seeing["answer_loss_other_image"] - seeing["answer_loss"], 4)
    assert seeing["answer_loss"] != seeing["answer_loss_other_image"]  # a random model still sees its input
    blind = copy.deepcopy(model)
    with torch.no_grad():  # every image embeds to the adaptor's output for zero features: a constant
        for parameter in blind.model.vision_model.parameters():
            parameter.zero_()
    result = image_reliance(blind, processor, vqa_records, image_root=data_dir)
    assert result["gap"] == 0 and result["answer_loss"] == result["answer_loss_other_image"]
    with pytest.raises(ValueError, match="at least 2 distinct images"):
        image_reliance(model, processor, [r for r in vqa_records if r["images"] == vqa_records[0]["images"]],
                       image_root=data_dir)


# --- Checkpoint folder and CLI ------------------------------------------------------------------------------------


def run_main(capsys, *args):
    from transformers_janus.cli import main

    returncode = main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return returncode, captured.out, captured.err


def test_cli_prints_both_tables_and_writes_the_json(checkpoint_dir, data_dir, tmp_path, capsys):
    output = tmp_path / "out" / "scores.json"
    returncode, out, err = run_main(
        capsys, "eval-shapes", "--model", checkpoint_dir, "--data", data_dir, "--output", output, "--max-prompts", 6,
        "--max-questions", 7, "--batch-size", 4, "--seed", 2, "--device", "cpu",
    )
    assert returncode == 0, err
    assert "| tag | accuracy | n |" in out and "| category | accuracy | n |" in out
    assert "| overall |" in out and "| single_object |" in out and f"Wrote {output}" in out
    assert "generation: 4/6" in err and "vqa: 7/7" in err
    result = json.loads(output.read_text())
    assert result["model"] == str(checkpoint_dir) and result["settings"]["seed"] == 2
    assert result["settings"]["generation_batch_size"] == result["settings"]["vqa_batch_size"] == 4
    generation, vqa = result["generation"], result["vqa"]
    assert generation["counts"]["overall"] == 6 and vqa["counts"]["overall"] == 7
    assert [r["seed"] for r in generation["images"]] == [2, 3, 4, 5, 6, 7]
    specs = [PromptSpec.from_dict(json.loads(line)) for line in (data_dir / GENERATION_FILE).read_text().splitlines()]
    assert generation["scores"] == geneval_scores([(s, r["correct"]) for s, r in zip(specs, generation["images"])])
    assert len(vqa["predictions"]) == 7 and result["seconds"] >= generation["seconds"] + vqa["seconds"]
    assert format_report(result) in out


def test_evaluate_shapes_from_a_checkpoint_folder_skips_a_part_on_zero(checkpoint_dir, data_dir):
    result = evaluate_shapes(checkpoint_dir, data_dir, max_prompts=0, max_questions=2, include_records=False)
    assert result["generation"] is None and result["vqa"]["counts"]["overall"] == 2
    assert set(result["vqa"]) == {"scores", "counts", "seconds"}
    json.dumps(result)
    report = format_report(result)
    assert "| category |" in report and "| tag |" not in report


def test_cli_names_the_missing_evaluation_file_before_loading_anything(tmp_path, capsys):
    data = tmp_path / "data"
    write_shapes_data(data, 0, 0, 0, num_eval_prompts_per_tag=1)  # no VQA evaluation file
    returncode, _, err = run_main(capsys, "eval-shapes", "--model", tmp_path / "no-model", "--data", data)
    assert returncode == 2
    lines = [line for line in err.splitlines() if line.startswith("janus-pro ")]
    assert len(lines) == 1 and "eval_vqa.jsonl" in lines[0] and "eval_generation.jsonl" not in lines[0]
    assert "write_shapes_data(" in lines[0] and "num_eval_vqa_images=" in lines[0]
    returncode, _, err = run_main(capsys, "eval-shapes", "--model", "x", "--data", tmp_path / "nowhere")
    assert returncode == 2 and "does not exist" in err and "Traceback" not in err


def test_cli_help_and_evaluation_import_no_torch():
    code = textwrap.dedent(
        """
        import runpy, sys
        import transformers_janus.shapes.evaluation
        sys.argv = ["janus-pro", "eval-shapes", "--help"]
        try:
            runpy.run_module("transformers_janus.cli", run_name="__main__")
        except SystemExit as exit:
            assert exit.code == 0, exit.code
        print(sorted(name for name in ("transformers", "torch", "diffusers") if name in sys.modules))
        """
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                               env={**os.environ, "PYTHONPATH": str(SRC_DIR)})
    assert completed.returncode == 0, completed.stderr
    assert "--max-prompts" in completed.stdout and "--model" in completed.stdout
    assert completed.stdout.strip().splitlines()[-1] == "[]"
