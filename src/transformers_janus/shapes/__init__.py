"""
The shapes world (issue 12): procedural scenes of coloured shapes, their captions and conversations, data writers
for the training scripts, GenEval-style / VQA scorers, and the evaluation of a trained model with them
(`evaluation`). Not imported by `transformers_janus` itself; importing it needs only numpy and Pillow (the evaluation
imports torch when it runs).
"""

from .datasets import write_shapes_data
from .evaluation import (
    GenerationEvaluation,
    VQAEvaluation,
    evaluate_generation,
    evaluate_shapes,
    evaluate_vqa,
    format_report,
)
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
