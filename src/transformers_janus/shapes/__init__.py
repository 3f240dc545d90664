"""
The shapes world (issue 12): procedural scenes of coloured shapes, their captions and conversations, data writers
for the training scripts, and GenEval-style / VQA scorers. Not imported by `transformers_janus` itself; needs only
numpy and Pillow.
"""

from .datasets import write_shapes_data
from .scoring import (
    DetectedObject,
    detect_objects,
    format_scores,
    geneval_scores,
    normalize_answer,
    score_image,
    vqa_correct,
    vqa_scores,
)
from .text import PromptSpec, geneval_captions, scene_from_spec
from .world import COLOURS, HELD_OUT_PAIRS, RELATIONS, SHAPES, Scene, SceneObject, WorldSpec, random_scene, render
