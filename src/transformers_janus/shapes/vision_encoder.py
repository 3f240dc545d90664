"""
The shapes world's understanding encoder: a `transformers.SiglipVisionModel` pretrained briefly by classification.

Janus-Pro takes SigLIP pretrained and feeds the adaptor every patch's feature (no pooling), so what matters is that
each patch knows what covers it. The pretraining objective is therefore dense: a linear probe on each patch's output
predicts the colour and the shape covering most of that patch (or background), and a probe on the mean feature
predicts how many objects of each shape and colour the scene holds. The probes are dropped afterwards; only the
encoder goes into the model.

Linear probes alone let the encoder collapse: they read a tiny image-dependent sliver riding on one large constant
vector (measured: after 1000 steps the across-image spread was 0.035 per channel under a mean of norm 13), which the
adaptor then cannot lift above bfloat16's rounding. A variance term (VICReg's) keeps every channel's standard
deviation over the batch's patches at 1 or more, so the features stay spread.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .autoencoder import scene_pixels
from .world import COLOUR_NAMES, SHAPES, WorldSpec, random_scene


def patch_labels(scenes, patch_size: int, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per patch, the colour index and shape index (0 = background) covering most of it: `[batch, patches]` each."""
    grid = image_size // patch_size
    colours = np.zeros((len(scenes), image_size, image_size), dtype=np.int64)
    shapes = np.zeros_like(colours)
    for index, scene in enumerate(scenes):
        for obj in scene.objects:
            mask = obj.mask(image_size)
            colours[index][mask] = COLOUR_NAMES.index(obj.colour) + 1
            shapes[index][mask] = SHAPES.index(obj.shape) + 1

    def majority(labels: np.ndarray, num_classes: int) -> torch.Tensor:
        one_hot = np.eye(num_classes, dtype=np.float32)[labels]  # [batch, H, W, classes]
        pooled = one_hot.reshape(len(scenes), grid, patch_size, grid, patch_size, num_classes).sum(axis=(2, 4))
        # Any object pixels beat the background at a tie, so thin tips of objects are not labelled background.
        pooled[..., 0] *= 0.5
        return torch.from_numpy(pooled.argmax(-1).reshape(len(scenes), grid * grid))

    return majority(colours, len(COLOUR_NAMES) + 1), majority(shapes, len(SHAPES) + 1)


def count_labels(scenes) -> torch.Tensor:
    """Per scene, the number of objects of each (colour, shape) and of each shape: `[batch, 18 + 3]` floats."""
    counts = np.zeros((len(scenes), len(COLOUR_NAMES) * len(SHAPES) + len(SHAPES)), dtype=np.float32)
    for index, scene in enumerate(scenes):
        for obj in scene.objects:
            counts[index, COLOUR_NAMES.index(obj.colour) * len(SHAPES) + SHAPES.index(obj.shape)] += 1
            counts[index, len(COLOUR_NAMES) * len(SHAPES) + SHAPES.index(obj.shape)] += 1
    return torch.from_numpy(counts)


class PretrainingProbes(nn.Module):
    """Linear probes of the pretraining objective (discarded after pretraining)."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.colour = nn.Linear(hidden_size, len(COLOUR_NAMES) + 1)
        self.shape = nn.Linear(hidden_size, len(SHAPES) + 1)
        self.counts = nn.Linear(hidden_size, len(COLOUR_NAMES) * len(SHAPES) + len(SHAPES))

    def losses(self, features: torch.Tensor, colours, shapes, counts) -> dict[str, torch.Tensor]:
        return {
            "colour": F.cross_entropy(self.colour(features).flatten(0, 1), colours.flatten()),
            "shape": F.cross_entropy(self.shape(features).flatten(0, 1), shapes.flatten()),
            "counts": F.mse_loss(self.counts(features.mean(1)), counts),
            "variance": variance_loss(features),
        }


def variance_loss(features: torch.Tensor, target_std: float = 1.0) -> torch.Tensor:
    """VICReg's variance term: mean over channels of `relu(target_std - std)`, the std over all patches of the batch."""
    std = features.float().flatten(0, -2).std(0)
    return F.relu(target_std - std).mean()


@torch.no_grad()
def feature_spread(vision_model, num_scenes: int = 16, seed: int = 0, world: WorldSpec | None = None) -> dict:
    """
    How much of the encoder's output depends on the image, on `num_scenes` random scenes: `token_norm` (mean norm of
    a patch feature), `mean_norm` (norm of the mean feature over all patches and scenes) and `across_image_std`
    (per channel and patch position, the std over the scenes, averaged). A collapsed encoder has
    `mean_norm ~ token_norm` and a small `across_image_std`.
    """
    world = world or WorldSpec()
    rng = np.random.default_rng([seed, 10])
    scenes = [random_scene(rng, world) for _ in range(num_scenes)]
    training = vision_model.training
    vision_model.eval()
    features = vision_model(pixel_values=scene_pixels(scenes)).last_hidden_state.float()
    vision_model.train(training)
    return {"token_norm": round(features.norm(dim=-1).mean().item(), 4),
            "mean_norm": round(features.mean(dim=(0, 1)).norm().item(), 4),
            "across_image_std": round(features.std(0).mean().item(), 4)}


def pretrain_vision_encoder(
    vision_model,
    num_steps: int,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    warmup_steps: int = 20,
    seed: int = 0,
    world: WorldSpec | None = None,
    log: Callable[[dict], None] | None = None,
    log_every: int = 25,
    autocast_dtype: torch.dtype | None = None,
):
    """
    Pretrain `vision_model` (a `SiglipVisionModel` whose `image_size` is the world's canvas) in place on freshly
    rendered scenes (all colour–shape pairs: understanding may see the held-out ones); AdamW, linear warm-up then
    cosine decay. Calls `log({"step", "colour_loss", "shape_loss", "counts_loss", "variance_loss", "patch_accuracy",
    "seconds"})`.
    `autocast_dtype` (e.g. `torch.bfloat16`) runs each step's forward under autocast. Do not wrap the call in
    `torch.autocast` instead: autocast caches its low-precision copies of the weights until its context exits, so
    one context around the loop runs every step on the first step's weights while the optimizer moves the real ones
    (measured: logged variance loss 0.06, the saved encoder's 0.97, its features collapsed).
    Returns `vision_model` in eval mode.
    """
    world = world or WorldSpec()
    config = vision_model.config
    if config.image_size != world.image_size:
        raise ValueError(
            f"The vision model's image_size ({config.image_size}) must be the canvas ({world.image_size})."
        )
    rng = np.random.default_rng([seed, 9])
    torch.manual_seed(seed)
    device = next(vision_model.parameters()).device
    probes = PretrainingProbes(config.hidden_size).to(device)
    parameters = [*vision_model.parameters(), *probes.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, betas=(0.9, 0.98), weight_decay=0.01)
    vision_model.train()
    start = time.perf_counter()
    for step in range(num_steps):
        scale = (step + 1) / warmup_steps if step < warmup_steps else 0.5 * (
            1 + math.cos(math.pi * (step - warmup_steps) / max(1, num_steps - warmup_steps)))
        for group in optimizer.param_groups:
            group["lr"] = learning_rate * scale
        scenes = [random_scene(rng, world) for _ in range(batch_size)]
        colours, shapes = (labels.to(device) for labels in patch_labels(scenes, config.patch_size, config.image_size))
        pixels = scene_pixels(scenes).to(device)
        with torch.autocast(device.type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
            features = vision_model(pixel_values=pixels).last_hidden_state
            losses = probes.losses(features, colours, shapes, count_labels(scenes).to(device))
        sum(losses.values()).backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if log is not None and (step % log_every == 0 or step == num_steps - 1):
            with torch.no_grad():
                accuracy = (probes.colour(features).argmax(-1) == colours) & (
                    probes.shape(features).argmax(-1) == shapes)
            log({"step": step + 1, **{f"{k}_loss": round(v.item(), 4) for k, v in losses.items()},
                 "patch_accuracy": round(accuracy.float().mean().item(), 4),
                 "seconds": round(time.perf_counter() - start, 1)})
    return vision_model.eval()


__all__ = ["PretrainingProbes", "count_labels", "feature_spread", "patch_labels", "pretrain_vision_encoder",
           "variance_loss"]
