"""
Assembly of the shapes world's Janus-Pro from its trained parts: the BPE tokenizer, the pretrained SigLIP encoder,
the VQ autoencoder and a fresh small Llama, joined by fresh adaptors and image head — the starting point of stage I,
as DeepSeek-LLM, SigLIP and LlamaGen's VQ-16 are Janus-Pro's.
"""

from __future__ import annotations

import os

from ..utils import SPECIAL_TOKENS

# The shapes model's sizes (SigLIP patch = VQ downsampling, so both encoders give the same 16 x 16 grid at 128 px).
VISION_CONFIG = {
    "hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 4, "num_attention_heads": 4,
    "image_size": 128, "patch_size": 8,
}
VQ_CONFIG = {
    "block_out_channels": [16, 32, 64, 128], "layers_per_block": 1, "latent_channels": 64,
    "num_vq_embeddings": 512, "vq_embed_dim": 8, "norm_num_groups": 16,
}
TEXT_CONFIG = {
    "hidden_size": 256, "intermediate_size": 704, "num_hidden_layers": 4, "num_attention_heads": 4,
    "num_key_value_heads": 4, "max_position_embeddings": 2048,
}


def shapes_config(tokenizer, vision_config: dict | None = None, text_config: dict | None = None,
                  vq_config: dict | None = None, understanding_encoder: str = "siglip"):
    """
    A `JanusProConfig` for the shapes world whose vocabulary and special token ids are `tokenizer`'s;
    `understanding_encoder="vq"` makes the shared-encoder ablation (`JanusProConfig.understanding_encoder`).
    """
    from .. import JanusProConfig

    ids = {name: tokenizer.convert_tokens_to_ids(text) for name, text in SPECIAL_TOKENS.items()}
    text = {**TEXT_CONFIG, **(text_config or {}), "vocab_size": len(tokenizer),
            "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": ids["pad_token_id"]}
    return JanusProConfig(
        vision_config={**VISION_CONFIG, **(vision_config or {})},
        text_config=text,
        vq_config={**VQ_CONFIG, **(vq_config or {})},
        understanding_encoder=understanding_encoder,
        **ids,
    )


def assemble_shapes_model(tokenizer, vision_model, vq_model, text_config: dict | None = None, seed: int = 0,
                          understanding_encoder: str = "siglip"):
    """
    The stage-I starting model and its processor: `vision_model` (SiglipVisionModel) and `vq_model` (VQModel)
    weights copied in, the language model, adaptors and image head freshly initialised (seeded).
    """
    import torch

    from .. import JanusProForConditionalGeneration, JanusProImageProcessor, JanusProProcessor

    config = shapes_config(
        tokenizer,
        vision_config={k: getattr(vision_model.config, k) for k in VISION_CONFIG},
        text_config=text_config,
        vq_config={k: vq_model.config[k] for k in VQ_CONFIG},
        understanding_encoder=understanding_encoder,
    )
    torch.manual_seed(seed)
    model = JanusProForConditionalGeneration(config)
    model.model.vision_model.load_state_dict(vision_model.state_dict())
    model.model.vq_model.load_state_dict(vq_model.state_dict())
    model.eval()
    image_processor = JanusProImageProcessor(size={"height": config.image_size, "width": config.image_size})
    processor = JanusProProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                  num_image_tokens=config.num_image_tokens)
    return model, processor


def save_shapes_model(model, processor, output_dir: str | os.PathLike) -> None:
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)


def export_shipped_model(model_dir: str | os.PathLike, output_dir: str | os.PathLike, dtype: str = "bfloat16") -> None:
    """
    Write a trained shapes model in the form meant to ship inside the package: weights stored in `dtype` (bfloat16
    halves the size; every CPU reads it), loaded as float32 by default (`config.dtype`), without the copies of this
    package's code that `save_pretrained` adds for `trust_remote_code` (the package is installed wherever a shipped
    model is used).
    """
    import json
    from pathlib import Path

    import torch

    from .. import JanusProForConditionalGeneration, JanusProProcessor

    output_dir = Path(output_dir)
    model = JanusProForConditionalGeneration.from_pretrained(model_dir, dtype=getattr(torch, dtype))
    processor = JanusProProcessor.from_pretrained(model_dir)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    for code in output_dir.glob("*.py"):
        code.unlink()
    config_path = output_dir / "config.json"
    config = json.loads(config_path.read_text())
    config.pop("auto_map", None)
    config["dtype"] = "float32"
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    # The card save_pretrained wrote describes a Hub upload loaded with trust_remote_code; this folder has no code.
    (output_dir / "README.md").write_text(SHIPPED_MODEL_CARD)


SHIPPED_MODEL_CARD = """---
library_name: transformers
tags:
- janus-pro
- image-text-to-text
- text-to-image
---

# Janus-Pro, shapes world

A Janus-Pro (SigLIP encoder, Llama, VQ tokenizer, image head: 7.8 M parameters) trained from scratch on the
procedural shapes world of `transformers_janus.shapes` by `training/shapes_recipe.py`: it draws and answers
questions about coloured circles, squares and triangles on 128 x 128 canvases, and nothing else. Its scores, the
recipe and its wall time are in the package's `docs/shapes.md`; `evaluation_sample.json` holds a slice of its
evaluation that `transformers_janus.shapes.evaluation.rerun_evaluation_sample` recomputes.

It ships inside `transformers-janus` as `transformers_janus.DEFAULT_MODEL` (what `janus-pro generate` and
`janus-pro chat` run when no `--model` is given) and needs that package installed: this folder holds no code copies.
A folder the recipe exported loads the same way from its own path.

```python
from transformers_janus import DEFAULT_MODEL, JanusProImagePipeline

pipe = JanusProImagePipeline.from_pretrained(DEFAULT_MODEL)
image = pipe("a photo of a red circle and a green square").images[0]
```

```bash
janus-pro generate "a photo of two triangles" -o shapes.png
janus-pro chat --image shapes.png "How many triangles are there?"
```
"""


__all__ = ["TEXT_CONFIG", "VISION_CONFIG", "VQ_CONFIG", "assemble_shapes_model", "export_shipped_model",
           "save_shapes_model", "shapes_config", "SHIPPED_MODEL_CARD"]
