"""
The shipped model, `transformers_janus.DEFAULT_MODEL`: a fresh install loads it offline through the normal
`from_pretrained` paths, the CLI uses it when no `--model` is given, the README's main job draws what its prompt
asks for and answers its question about that image right, and the evaluation sample recorded with the weights
(`evaluation_sample.json`) comes out the same when rerun here.
"""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import transformers_janus
from transformers_janus import DEFAULT_MODEL
from transformers_janus.shapes import COLOURS, SHAPES, detect_objects, score_image, vqa_correct
from transformers_janus.shapes.text import (
    COUNT_WORDS,
    RELATIONS,
    color_attr_spec,
    colors_spec,
    counting_spec,
    position_spec,
    single_object_spec,
    two_object_spec,
)


REPO = Path(__file__).parent.parent
SHIPPED = Path(DEFAULT_MODEL)


def test_the_default_model_is_package_data_loaded_by_from_pretrained():
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    from transformers_janus import JanusProForConditionalGeneration, JanusProImagePipeline, JanusProProcessor
    from transformers_janus.utils import sha256_file

    assert SHIPPED.parent == Path(transformers_janus.__file__).resolve().parent and SHIPPED.is_dir()
    assert not list(SHIPPED.glob("*.py"))  # no code copies: the installed package is the code
    from transformers_janus.shapes.assembly import SHIPPED_MODEL_CARD

    assert (SHIPPED / "README.md").read_text() == SHIPPED_MODEL_CARD
    weights = SHIPPED / "model.safetensors"
    assert weights.stat().st_size < 20 * 2**20, "the shipped model should stay a few MB"
    sample = json.loads((SHIPPED / "evaluation_sample.json").read_text())
    assert sample["weights_sha256"] == sha256_file(weights), "the weights are not the ones the sample was computed on"
    assert AutoConfig.from_pretrained(DEFAULT_MODEL).model_type == "janus_pro"
    model = AutoModelForImageTextToText.from_pretrained(DEFAULT_MODEL)
    assert type(model) is JanusProForConditionalGeneration and model.dtype == torch.float32
    assert type(AutoProcessor.from_pretrained(DEFAULT_MODEL)) is JanusProProcessor
    pipe = JanusProImagePipeline.from_pretrained(DEFAULT_MODEL)
    assert pipe.model.config.vq_config.num_vq_embeddings >= 512  # the shapes world's VQ, not a test checkpoint


def test_the_cli_runs_the_default_model_when_no_model_is_given():
    from transformers_janus.cli import make_parser

    parser = make_parser()
    assert parser.parse_args(["chat", "--image", "x.png", "What is it?"]).model == DEFAULT_MODEL
    assert parser.parse_args(["generate", "a photo of a circle", "-o", "x.png"]).model == DEFAULT_MODEL
    assert parser.parse_args(["eval-shapes", "--data", "d"]).model == DEFAULT_MODEL


def _world_specs():
    """Every GenEval-style prompt the world's templates can make."""
    colours = list(COLOURS)
    for shape in SHAPES:
        yield single_object_spec(shape)
        for count in COUNT_WORDS:
            if count > 1:
                yield counting_spec(shape, count)
        for colour in colours:
            yield colors_spec(colour, shape)
        for other in SHAPES:
            if other != shape:
                yield two_object_spec(shape, other)
            for relation in RELATIONS:
                yield position_spec(shape, relation, other)
            for colour in colours:
                for other_colour in colours:
                    yield color_attr_spec(colour, shape, other_colour, other)


def _spec_for_prompt(prompt: str):
    matching = [spec for spec in _world_specs() if spec.prompt == prompt]
    assert matching, f"the README's prompt {prompt!r} is not one of the world's GenEval templates"
    return matching[0]


def _true_answer(question: str, detected) -> str:
    """The answer to one of the world's VQA question forms (`shapes.text.vqa_questions`), read off detections."""
    shapes_pattern, colours_pattern = "|".join(SHAPES), "|".join(COLOURS)
    if match := re.fullmatch(rf"What colour is the ({shapes_pattern})\?", question):
        found = [o.colour for o in detected if o.shape == match[1]]
        assert len(found) == 1, f"the question presumes one {match[1]}; the image has {len(found)}"
        return found[0]
    if match := re.fullmatch(rf"What shape is the ({colours_pattern}) object\?", question):
        found = [o.shape for o in detected if o.colour == match[1]]
        assert len(found) == 1, f"the question presumes one {match[1]} object; the image has {len(found)}"
        return found[0]
    if match := re.fullmatch(rf"How many ((?:{shapes_pattern})s|objects|(?:{colours_pattern}) objects) are there\?", question):
        what = match[1]
        if what == "objects":
            return str(len(detected))
        if what.endswith(" objects"):
            return str(sum(o.colour == what.split()[0] for o in detected))
        return str(sum(o.shape == what[:-1] for o in detected))
    if match := re.fullmatch(rf"Is there an? ({colours_pattern}) ({shapes_pattern})\?", question):
        return "yes" if any((o.colour, o.shape) == (match[1], match[2]) for o in detected) else "no"
    raise AssertionError(f"the README's question {question!r} is not one of the world's VQA question forms")


def _main_job_commands() -> list[list[str]]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Set up and run the main job", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL)[1].replace("\\\n", " ")
    commands = [shlex.split(part) for part in block.split("&&")]
    assert [command[:2] for command in commands[:3]] == [["pip", "install"]] * 2 + [["janus-pro", "generate"]]
    return commands[2:]


def test_the_readme_main_job_draws_its_prompt_and_answers_about_the_image(tmp_path):
    """The README's commands after the install, as written, with no `--model`: the image satisfies the prompt by
    the GenEval-style scorer, and the answer is right for what the detector reads in that image."""
    commands = _main_job_commands()
    assert [command[1] for command in commands] == ["generate", "chat"]
    assert all("--model" not in command for command in commands)
    generate, chat = commands
    output = generate[generate.index("-o") + 1]
    assert chat[chat.index("--image") + 1] == output  # the chat is about the image the job just made
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO / "src"))
    results = [
        subprocess.run([sys.executable, "-m", "transformers_janus.cli", *command[1:]], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
        for command in commands
    ]
    for command, result in zip(commands, results):
        assert result.returncode == 0, f"{shlex.join(command)}: {result.stderr[-2000:]}"
    image = Image.open(tmp_path / output)
    assert image.size == (128, 128)
    spec = _spec_for_prompt(generate[2])
    detected = detect_objects(image)
    assert score_image(detected, spec), f"{spec.prompt!r} drew {detected}"
    question = chat[-1]
    answer = results[1].stdout.strip()
    assert vqa_correct(answer, _true_answer(question, detected)), f"{question!r} -> {answer!r}; the image: {detected}"


def test_the_recorded_evaluation_sample_reproduces():
    """The verdicts on one prompt per GenEval category and the greedy answers to 24 evaluation questions, recomputed
    from the stored seeds on the shipped weights, are the recorded ones."""
    from transformers_janus.shapes.evaluation import rerun_evaluation_sample

    recorded, rerun = rerun_evaluation_sample(DEFAULT_MODEL)
    assert len(recorded["generation"]) == 6 and len(recorded["vqa"]) == 24
    assert rerun["vqa"] == recorded["vqa"]
    assert rerun["generation"] == recorded["generation"]
    assert rerun == recorded
