# /// script
# dependencies = [
#     "transformers-janus[train]",
# ]
# ///
"""
# Understanding SFT, full fine-tuning (all but the VQ model and the generation head)
```bash
python training/sft_trl.py \
    --model_name_or_path deepseek-ai/Janus-Pro-1B \
    --dataset_name data/understanding.jsonl \
    --learning_rate 2.0e-5 \
    --num_train_epochs 1 \
    --per_device_train_batch_size 4 \
    --gradient_accumulation_steps 4 \
    --max_length 2048 \
    --output_dir runs/janus-pro-1b-sft
```

# Understanding SFT with LoRA (on the language model's attention and MLP projections by default)
```bash
python training/sft_trl.py \
    --model_name_or_path deepseek-ai/Janus-Pro-1B \
    --dataset_name data/understanding.jsonl \
    --learning_rate 2.0e-4 \
    --num_train_epochs 1 \
    --per_device_train_batch_size 4 \
    --gradient_accumulation_steps 4 \
    --use_peft \
    --lora_r 16 \
    --lora_alpha 32 \
    --output_dir runs/janus-pro-1b-sft-lora
```

# Text-to-image SFT (caption -> VQ codes, the image loss), with LoRA
```bash
python training/sft_trl.py \
    --model_name_or_path deepseek-ai/Janus-Pro-1B \
    --dataset_name data/generation.jsonl \
    --data_kind generation \
    --learning_rate 2.0e-4 \
    --max_steps 500 \
    --use_peft \
    --output_dir runs/janus-pro-1b-t2i-lora
```

# Several GPUs; `--config sft.yaml` takes any of these arguments from a YAML file (the command line wins)
```bash
accelerate launch --config_file training/configs/accelerate/multi_gpu.yaml training/sft_trl.py --config sft.yaml
```
"""

import argparse
from dataclasses import dataclass, field


@dataclass
class JanusProDataArguments:
    """
    Args:
        data_kind (`str`, *optional*, defaults to `"understanding"`):
            `understanding`: conversations (with or without images), only the assistant answers supervised (text
            loss). `generation`: `{"caption", "image"}` records, the image's VQ codes supervised (image loss).
        on_bad_sample (`str`, *optional*, defaults to `"fail"`):
            Every record is checked before training (missing image, placeholder/image count, longer than
            `--max_length`, ...). `fail`: stop, naming the records; `skip`: train without them.
        cfg_drop_prob (`float`, *optional*, defaults to 0.1):
            Generation: probability of training a caption as the unconditional prompt (classifier-free guidance).
        vq_cache_dir (`str`, *optional*):
            Generation: where the VQ codes of the images are cached; `OUTPUT_DIR/vq_codes` by default.
        eval_dataset_name (`str`, *optional*):
            Evaluation records of the same kind (with `--eval_strategy steps`); else `--dataset_test_split` of
            `--dataset_name` when that is a Hub dataset or a folder with splits.
    """

    data_kind: str = field(
        default="understanding",
        metadata={"help": "understanding (text loss) or generation (image loss).", "choices": ["understanding", "generation"]},
    )
    on_bad_sample: str = field(default="fail", metadata={"help": "fail or skip.", "choices": ["fail", "skip"]})
    cfg_drop_prob: float = field(default=0.1, metadata={"help": "Generation: caption drop probability for CFG."})
    vq_cache_dir: str | None = field(default=None, metadata={"help": "VQ code cache; OUTPUT_DIR/vq_codes by default."})
    eval_dataset_name: str | None = field(default=None, metadata={"help": "Evaluation records of the same kind."})


def main(script_args, data_args, training_args, model_args):
    import os

    import torch
    import transformers
    from accelerate.logging import get_logger
    from trl import get_peft_config

    from transformers_janus import JanusProForConditionalGeneration, JanusProProcessor
    from transformers_janus.training.data import VQCodeCache, load_samples
    from transformers_janus.training.sft import FULL_FINETUNING_MODULES, JanusProSFTTrainer, lora_target_modules
    from transformers_janus.training.stages import apply_freeze_policy

    logger = get_logger(__name__)
    if script_args.dataset_name is None:
        raise ValueError("`--dataset_name` is required: a JSONL file, a folder or a Hub dataset id of records.")
    if model_args.model_name_or_path is None:
        raise ValueError("`--model_name_or_path` is required: a Janus-Pro checkpoint in our format or DeepSeek's.")
    kind = data_args.data_kind

    # Load the model (our format or DeepSeek's) and its processor
    dtype = model_args.dtype if model_args.dtype in (None, "auto") else getattr(torch, model_args.dtype)
    model_init_kwargs = {"revision": model_args.model_revision, "dtype": dtype, **(training_args.model_init_kwargs or {})}
    if model_args.attn_implementation is not None:
        model_init_kwargs["attn_implementation"] = model_args.attn_implementation
    model = JanusProForConditionalGeneration.from_pretrained(model_args.model_name_or_path, **model_init_kwargs)
    processor = JanusProProcessor.from_pretrained(model_args.model_name_or_path, revision=model_args.model_revision)
    peft_config = get_peft_config(model_args)
    if peft_config is not None:
        peft_config.target_modules = lora_target_modules(model_args.lora_target_modules)
    else:
        apply_freeze_policy(model, FULL_FINETUNING_MODULES[kind])

    # Load the dataset
    train_dataset = load_samples(script_args.dataset_name, kind, split=script_args.dataset_train_split)
    eval_dataset = None
    if training_args.eval_strategy != "no":
        if data_args.eval_dataset_name is not None:
            eval_dataset = load_samples(data_args.eval_dataset_name, kind, split=script_args.dataset_test_split)
        elif os.path.isfile(script_args.dataset_name):
            raise ValueError(
                f"`--eval_strategy {training_args.eval_strategy}` needs evaluation records: pass "
                "`--eval_dataset_name FILE` (`--dataset_name` is a single file, which has no test split)."
            )
        else:
            eval_dataset = load_samples(script_args.dataset_name, kind, split=script_args.dataset_test_split)

    # VQ codes of the generation images, computed once with the frozen VQ model and cached on disk
    vq_codes = None
    if kind == "generation":
        cache_dir = data_args.vq_cache_dir or os.path.join(training_args.output_dir, "vq_codes")
        vq_codes = VQCodeCache(model, processor.image_processor, cache_dir)
        images = list(train_dataset["image"]) + (list(eval_dataset["image"]) if eval_dataset is not None else [])
        model.model.vq_model.to(training_args.device)
        with training_args.main_process_first(desc="VQ codes"):
            encoded = vq_codes.precompute([image for image in images if image])
        model.model.vq_model.to("cpu")
        if encoded:
            logger.info(f"Encoded {encoded} generation images into {vq_codes.cache_dir}")

    # Initialize the SFT trainer
    trainer = JanusProSFTTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=processor,
        peft_config=peft_config,
        vq_codes=vq_codes,
        cfg_drop_prob=data_args.cfg_drop_prob,
        on_bad_sample=data_args.on_bad_sample,
    )

    # Train the model
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.accelerator.print("✅ Training completed.")

    # Save and push to Hub
    trainer.save_model(training_args.output_dir)
    trainer.create_model_card(dataset_name=script_args.dataset_name)  # ours, not TRL's (see JanusProSFTTrainer)
    trainer.accelerator.print(f"💾 Model saved to {training_args.output_dir}.")
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name)
        trainer.accelerator.print(f"🤗 Model pushed to the Hub in https://huggingface.co/{trainer.hub_model_id}.")

    # Finish the trackers and destroy the process group
    if hasattr(trainer, "end"):  # transformers >= 5.18
        trainer.end()
    return trainer


def make_parser(subparsers: argparse._SubParsersAction | None = None, prog: str | None = None):
    import torch
    from trl import ModelConfig, ScriptArguments, SFTConfig, TrlParser

    dataclass_types = (ScriptArguments, JanusProDataArguments, SFTConfig, ModelConfig)
    if subparsers is not None:
        parser = subparsers.add_parser("sft", help="SFT of Janus-Pro with TRL", dataclass_types=dataclass_types)
    else:
        parser = TrlParser(dataclass_types, prog=prog)
    if not torch.accelerator.is_available():
        # CPU defaults (a YAML config or the command line still wins): fp32, no recomputation, no device search
        parser.set_defaults_with_config(bf16=False, gradient_checkpointing=False, use_cpu=True)
    return parser


if __name__ == "__main__":
    parser = make_parser()
    script_args, data_args, training_args, model_args = parser.parse_args_and_config()
    main(script_args, data_args, training_args, model_args)
