# /// script
# dependencies = [
#     "transformers-janus[train]",
# ]
# ///
"""
# Stage III (SFT) of Janus-Pro-1B on one GPU or CPU (stage I / II: stage1.yaml / stage2.yaml)
python training/train.py \
    --config training/configs/stage3.yaml \
    --model_name_or_path deepseek-ai/Janus-Pro-1B \
    --understanding_data data/understanding.jsonl \
    --text_data data/text.jsonl \
    --generation_data data/generation.jsonl \
    --output_dir runs/janus-pro-1b-sft

# Two CPU processes (gloo); `accelerate launch --num_processes 2 --cpu` would start only one
torchrun --nproc_per_node 2 training/train.py --config training/configs/stage3.yaml [...] --output_dir runs/two

# Multi-GPU: DDP, FSDP2 or DeepSpeed ZeRO-3 (edit num_processes / num_machines in the file)
accelerate launch --config_file training/configs/accelerate/multi_gpu.yaml training/train.py --config [...]
accelerate launch --config_file training/configs/accelerate/fsdp2.yaml training/train.py --config [...]
accelerate launch --config_file training/configs/accelerate/deepspeed_zero3.yaml training/train.py --config [...]

# Resume the latest complete checkpoint of a run (same data, seed, mix ratio and global batch size)
python training/train.py --config training/configs/stage3.yaml [...] --resume_from_checkpoint latest
"""

import argparse
from dataclasses import dataclass, field


@dataclass
class ModelArguments:
    """
    Args:
        model_name_or_path (`str`):
            Checkpoint to start from: a folder or Hub id in our format or DeepSeek's (`deepseek-ai/Janus-Pro-1B`).
        trainable_modules (`list[str]`, *optional*):
            Parameter-name prefixes to train instead of the stage's (e.g. `model.gen_head.` `lm_head.`).
        gradient_checkpointing (`bool`, *optional*, defaults to `False`):
            Recompute the language model's activations in the backward pass (non-reentrant) to save memory.
        attn_implementation (`str`, *optional*):
            Attention kernel (`sdpa`, `eager`, `flash_attention_2`); the checkpoint's default otherwise. With
            `--packing` and SDPA, the language model attends per packed sample
            (`transformers_janus.training.packed_attention`), which skips the attention between samples.
        use_peft (`bool`, *optional*, defaults to `False`):
            Train a LoRA adapter (PEFT) instead of the stage's weights (the stage still gives the schedule and mix
            defaults); the output folder then holds the adapter, which `PeftModel.from_pretrained`,
            `AutoPeftModelForCausalLM` and `JanusProImagePipeline.load_lora_weights` load.
        lora_r (`int`, *optional*, defaults to 16) / lora_alpha (`int`, *optional*) / lora_dropout (`float`, *optional*, defaults to 0.0):
            LoRA rank, alpha (`lora_r` by default: the update is scaled by alpha / r) and dropout.
        lora_target (`str`, *optional*, defaults to `"language_model"`):
            Language-model linears to adapt: `language_model` (attention and MLP projections) or
            `language_model_attention` (attention only). SigLIP is never adapted (see `transformers_janus.training.lora`).
        lora_include (`list[str]`, *optional*):
            Parts that also get LoRA on their linears: `aligner`, `gen_aligner`, `gen_head`, `lm_head`.
        lora_modules_to_save (`list[str]`, *optional*):
            Parts trained in full and saved with the adapter: `aligner`, `gen_aligner`, `gen_head`, `gen_embed`,
            `lm_head`.
    """

    model_name_or_path: str = field(metadata={"help": "Folder or Hub id, our format or DeepSeek's."})
    trainable_modules: list[str] | None = field(
        default=None, metadata={"help": "Parameter-name prefixes to train instead of the stage's policy."}
    )
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Recompute activations in the backward."})
    attn_implementation: str | None = field(default=None, metadata={"help": "sdpa, eager, flash_attention_2."})
    use_peft: bool = field(default=False, metadata={"help": "Train a LoRA adapter instead of the stage's weights."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int | None = field(default=None, metadata={"help": "LoRA alpha; lora_r by default (scale 1)."})
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout of the LoRA branch."})
    lora_target: str = field(
        default="language_model",
        metadata={"help": "Language-model linears to adapt.", "choices": ["language_model", "language_model_attention"]},
    )
    lora_include: list[str] | None = field(
        default=None, metadata={"help": "Also LoRA on the linears of: aligner, gen_aligner, gen_head, lm_head."}
    )
    lora_modules_to_save: list[str] | None = field(
        default=None, metadata={"help": "Parts trained in full and saved with the adapter (gen_head, ...)."}
    )


@dataclass
class DataArguments:
    """
    Args:
        understanding_data / text_data / generation_data (`str`, *optional*):
            Each a JSONL file, a directory `datasets.load_dataset` reads or a Hub dataset id (see docs/training.md).
        mix_ratio (`str`, *optional*):
            understanding:text:generation samples per step, e.g. `5:1:4`; the stage's by default.
        max_length (`int`, *optional*, defaults to 4096):
            Longest sample, and the length of a packed row.
        packing (`bool`, *optional*, defaults to `True`):
            Pack several samples per row (no attention across samples); else right-pad each sample.
        on_bad_sample (`str`, *optional*, defaults to `"fail"`):
            `fail`: stop before training, listing the bad records per kind; `skip`: train without them.
        cfg_drop_prob (`float`, *optional*, defaults to 0.1):
            Probability of replacing a generation caption by the unconditional prompt (classifier-free guidance).
        vq_cache_dir (`str`, *optional*):
            Where VQ codes of generation images are cached; `OUTPUT_DIR/vq_codes` by default.
        dataloader_num_workers (`int`, *optional*, defaults to 0):
            Processes that encode the next steps' batches while the model trains.
        log_samples (`bool`, *optional*, defaults to `False`):
            Write the record ids of every micro-batch to `OUTPUT_DIR/samples/rank-R.jsonl` (what each process trained
            on, step by step).
    """

    understanding_data: str | None = field(default=None, metadata={"help": "Understanding data (JSONL, dir, Hub)."})
    text_data: str | None = field(default=None, metadata={"help": "Text-only chat data (JSONL, dir, Hub)."})
    generation_data: str | None = field(default=None, metadata={"help": "Text-to-image data (JSONL, dir, Hub)."})
    mix_ratio: str | None = field(default=None, metadata={"help": "understanding:text:generation, e.g. 5:1:4."})
    max_length: int = field(default=4096, metadata={"help": "Longest sample / packed row length."})
    packing: bool = field(default=True, metadata={"help": "Pack samples into rows of max_length."})
    on_bad_sample: str = field(default="fail", metadata={"help": "fail or skip.", "choices": ["fail", "skip"]})
    cfg_drop_prob: float = field(default=0.1, metadata={"help": "Caption drop probability for CFG."})
    vq_cache_dir: str | None = field(default=None, metadata={"help": "VQ code cache; OUTPUT_DIR/vq_codes by default."})
    dataloader_num_workers: int = field(default=0, metadata={"help": "Worker processes encoding batches ahead."})
    log_samples: bool = field(default=False, metadata={"help": "Record ids per micro-batch to OUTPUT_DIR/samples/."})


@dataclass
class StageTrainingArguments:
    """
    Args:
        stage (`int`, *optional*, defaults to 3):
            Paper stage (SPEC §5): 1 adaptors + image head, 2 all but both encoders, 3 all but the VQ tokenizer.
        output_dir (`str`):
            Checkpoints (`checkpoint-STEP/`) and the final model and processor.
        max_steps (`int`, *optional*):
            Optimizer steps; the paper's for the stage by default.
        learning_rate (`float`, *optional*) / warmup_steps (`int`, *optional*):
            The stage's (1e-3 / 600, 1e-4 / 5000, 4e-5 / 0) by default.
        lr_scheduler_type (`str`, *optional*, defaults to `"constant"`):
            After the warm-up: `constant` (the paper's), or `cosine` / `linear` decay to 0 at `max_steps`.
        per_device_train_batch_size (`int`, *optional*, defaults to 8):
            Samples per micro-batch per process (packed into rows of `max_length` with `--packing`).
        gradient_accumulation_steps (`int`, *optional*, defaults to 1):
            Micro-batches per optimizer step; global batch = per-device batch x accumulation x processes.
        max_grad_norm (`float`, *optional*, defaults to 1.0):
            Gradient clipping norm (0 disables).
        seed (`int`, *optional*, defaults to 42):
            Seeds the data order, the caption drops and every RNG.
        save_steps (`int`, *optional*, defaults to 0):
            Save `checkpoint-STEP` every this many steps (0: only the final model).
        resume_from_checkpoint (`str`, *optional*):
            A `checkpoint-STEP` folder, or `latest` for the highest complete one in `output_dir`.
        logging_steps (`int`, *optional*, defaults to 10):
            Log the losses every this many steps (each log syncs with the device); each log is also a line of
            `OUTPUT_DIR/train_log.jsonl` (`step`, `text_loss`, `image_loss`, `learning_rate`, ...; a resumed run
            appends to it).
        report_to (`list[str]`, *optional*, defaults to `["none"]`):
            Accelerate trackers: `tensorboard`, `wandb`, `all` or `none`.
        mixed_precision (`str`, *optional*):
            `no`, `bf16` or `fp16`; the Accelerate config's by default. Master weights stay float32.
        use_cpu (`bool`, *optional*, defaults to `False`):
            Train on CPU even if an accelerator is present (set automatically for several processes without GPU).
    """

    output_dir: str = field(metadata={"help": "Checkpoints and the final model."})
    stage: int = field(default=3, metadata={"help": "1, 2 or 3 (SPEC §5).", "choices": [1, 2, 3]})
    max_steps: int | None = field(default=None, metadata={"help": "Optimizer steps; the stage's by default."})
    learning_rate: float | None = field(default=None, metadata={"help": "Peak LR; the stage's by default."})
    warmup_steps: int | None = field(default=None, metadata={"help": "Linear warm-up steps; the stage's by default."})
    lr_scheduler_type: str = field(
        default="constant", metadata={"help": "constant (the paper's), cosine or linear.",
                                      "choices": ["constant", "cosine", "linear"]}
    )
    per_device_train_batch_size: int = field(default=8, metadata={"help": "Samples per micro-batch per process."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping (0: off)."})
    seed: int = field(default=42, metadata={"help": "Data order, caption drops, RNGs."})
    save_steps: int = field(default=0, metadata={"help": "Checkpoint every N steps (0: off)."})
    resume_from_checkpoint: str | None = field(default=None, metadata={"help": "checkpoint-STEP folder or `latest`."})
    logging_steps: int = field(default=10, metadata={"help": "Log every N steps."})
    report_to: list[str] = field(default_factory=lambda: ["none"], metadata={"help": "tensorboard, wandb, all, none."})
    mixed_precision: str | None = field(default=None, metadata={"help": "no, bf16 or fp16; Accelerate's config's."})
    use_cpu: bool = field(default=False, metadata={"help": "Train on CPU."})


class StepBatches:
    """
    The micro-batches of one process for each optimizer step, indexed by step: a map-style dataset for a
    `DataLoader` (whose workers then encode the next steps ahead). A function of (seed, step) only, so a resumed run
    sees exactly the batches an uninterrupted one does.
    """

    def __init__(
        self, mixer, encoder, collator, datasets_by_kind, seed, rank, world_size, accumulation_steps, num_steps
    ):
        self.mixer, self.encoder, self.collator, self.datasets_by_kind = mixer, encoder, collator, datasets_by_kind
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.accumulation_steps, self.num_steps = accumulation_steps, num_steps

    def __len__(self) -> int:
        return self.num_steps

    def __getitem__(self, step: int) -> list[dict]:
        from transformers_janus.training.data import sample_generator

        micro_batches = []
        for accumulation_index in range(self.accumulation_steps):
            items = self.mixer.micro_batch(
                step, self.rank, self.world_size, accumulation_index, self.accumulation_steps
            )
            samples = [
                self.encoder.encode(
                    self.datasets_by_kind[item.kind][item.index],
                    generator=sample_generator(self.seed, step, item.position),
                )
                for item in items
            ]
            micro_batches.append(self.collator(samples))
        return micro_batches


def check_arguments(model_args: ModelArguments, data_args: DataArguments, training_args: StageTrainingArguments):
    """Refuse bad values before anything is loaded."""
    for name in ("per_device_train_batch_size", "gradient_accumulation_steps", "logging_steps"):
        if getattr(training_args, name) < 1:
            raise ValueError(f"`--{name}` must be at least 1, got {getattr(training_args, name)}.")
    for name in ("save_steps", "max_grad_norm"):
        if getattr(training_args, name) < 0:
            raise ValueError(f"`--{name}` must be >= 0, got {getattr(training_args, name)}.")
    if training_args.max_steps is not None and training_args.max_steps < 1:
        raise ValueError(f"`--max_steps` must be at least 1, got {training_args.max_steps}.")
    if data_args.max_length < 1:
        raise ValueError(f"`--max_length` must be at least 1, got {data_args.max_length}.")
    if training_args.mixed_precision not in (None, "no", "bf16", "fp16"):
        raise ValueError(f"`--mixed_precision` must be no, bf16 or fp16, got {training_args.mixed_precision!r}.")
    unknown = sorted(set(training_args.report_to) - {"none", "all", "tensorboard", "wandb"})
    if unknown:
        raise ValueError(f"`--report_to` {unknown} unknown; use tensorboard, wandb, all or none.")
    if model_args.use_peft and model_args.trainable_modules:
        raise ValueError(
            f"`--trainable_modules` {model_args.trainable_modules} and `--use_peft`: a LoRA run trains the adapter "
            "only; name parts to train in full with `--lora_modules_to_save` instead."
        )
    if not any((data_args.understanding_data, data_args.text_data, data_args.generation_data)):
        raise ValueError(
            "No training data: pass at least one of `--understanding_data`, `--text_data`, `--generation_data`."
        )


def stage_settings(data_args: DataArguments, training_args: StageTrainingArguments):
    """The stage's defaults (SPEC §5) where the arguments leave a value unset: (stage, learning rate, warm-up steps,
    max steps, mix ratio)."""
    from transformers_janus.training.stages import get_stage

    stage = get_stage(training_args.stage)
    return (
        stage,
        training_args.learning_rate if training_args.learning_rate is not None else stage.learning_rate,
        training_args.warmup_steps if training_args.warmup_steps is not None else stage.warmup_steps,
        training_args.max_steps if training_args.max_steps is not None else stage.paper_max_steps,
        data_args.mix_ratio if data_args.mix_ratio is not None else stage.mix_ratio,
    )


def main(model_args: ModelArguments, data_args: DataArguments, training_args: StageTrainingArguments):
    import json
    import logging
    import os
    import time
    from dataclasses import asdict

    import torch
    import transformers
    from accelerate import Accelerator
    from accelerate.logging import get_logger
    from accelerate.utils import DistributedDataParallelKwargs, set_seed
    from tqdm.auto import tqdm

    from transformers_janus import JanusProForConditionalGeneration, JanusProProcessor
    from transformers_janus.training.checkpointing import (
        load_checkpoint,
        resolve_checkpoint,
        save_checkpoint,
        save_final_model,
    )
    from transformers_janus.training.collator import JanusProDataCollator
    from transformers_janus.training.data import (
        JanusProSampleEncoder,
        VQCodeCache,
        check_samples,
        load_samples,
    )
    from accelerate.utils import gather_object

    from transformers_janus.training.mixing import RatioMixer
    from transformers_janus.training.optimization import create_optimizer_and_scheduler, training_step
    from transformers_janus.training.stages import apply_freeze_policy
    from transformers_janus.training.packed_attention import PACKED_SDPA, register_packed_sdpa

    check_arguments(model_args, data_args, training_args)
    stage, learning_rate, warmup_steps, max_steps, mix_ratio = stage_settings(data_args, training_args)

    # Set up the accelerator. Parts without a gradient in a micro-batch (the understanding adaptor when it holds no
    # image; SigLIP in stage III) make DDP's reducer wait forever unless it looks for unused parameters. The scheduler
    # counts optimizer steps: Accelerate would otherwise step it once per process at each step.
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    use_cpu = training_args.use_cpu or (world_size > 1 and not torch.cuda.is_available())
    report_to = [name for name in training_args.report_to if name != "none"]
    accelerator = Accelerator(
        cpu=use_cpu,
        mixed_precision=training_args.mixed_precision,
        log_with=report_to or None,
        project_dir=training_args.output_dir,
        step_scheduler_with_optimizer=False,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    for backend, variable in (("FSDP", "ACCELERATE_USE_FSDP"), ("DEEPSPEED", "ACCELERATE_USE_DEEPSPEED")):
        if os.environ.get(variable, "false").lower() == "true" and accelerator.distributed_type.name != backend:
            raise ValueError(
                f"The Accelerate config asks for {backend}, but the accelerator runs "
                f"{accelerator.distributed_type.name} (Accelerate runs {backend} only on GPUs; on CPU it would fall "
                "back to DDP without saying so). On CPU launch with torchrun (DDP over gloo)."
            )
    if accelerator.num_processes != world_size:
        raise ValueError(
            f"The launcher started {world_size} processes but the accelerator joined {accelerator.num_processes}; "
            "on CPU launch with `torchrun --nproc_per_node N` (or pass `--use_cpu`)."
        )
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    if accelerator.is_local_main_process:
        transformers.utils.logging.set_verbosity_warning()
    else:
        transformers.utils.logging.set_verbosity_error()
    logger = get_logger(__name__)
    set_seed(training_args.seed)

    # Load the data and check every record before any training (needs only the processor)
    processor = JanusProProcessor.from_pretrained(model_args.model_name_or_path)
    sources = {
        "understanding": data_args.understanding_data,
        "text": data_args.text_data,
        "generation": data_args.generation_data,
    }
    with accelerator.main_process_first():  # the main process fills the datasets cache, the others read it
        datasets_by_kind = {kind: load_samples(source, kind) for kind, source in sources.items() if source}
    checking_encoder = JanusProSampleEncoder(processor, data_args.max_length, cfg_drop_prob=data_args.cfg_drop_prob)
    # Each process checks its share of the records; all reach the same verdict
    datasets_by_kind = check_samples(
        datasets_by_kind,
        checking_encoder,
        on_bad_sample=data_args.on_bad_sample,
        shard=(accelerator.process_index, accelerator.num_processes),
        gather=gather_object if accelerator.num_processes > 1 else None,
    )
    per_step = training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps
    mixer = RatioMixer(
        {kind: len(dataset) for kind, dataset in datasets_by_kind.items()},
        mix_ratio,
        global_batch_size=per_step * accelerator.num_processes,
        seed=training_args.seed,
    )

    # Load the model; the stage's freeze policy
    model_kwargs = {"dtype": torch.float32}
    if model_args.attn_implementation is not None:
        model_kwargs["attn_implementation"] = model_args.attn_implementation
    model = JanusProForConditionalGeneration.from_pretrained(model_args.model_name_or_path, **model_kwargs)
    if data_args.packing and model_args.attn_implementation in (None, "sdpa"):
        # Packed rows: causal SDPA per sample instead of one masked attention over the whole row (same numbers)
        model.set_attn_implementation({"text_config": register_packed_sdpa()})
    janus = model  # the model itself, also under a PEFT wrapper
    if model_args.use_peft:
        # LoRA: PEFT freezes every base weight and trains the adapter (and any `modules_to_save`)
        from peft import get_peft_model

        from transformers_janus.training.lora import count_lora_layers, janus_lora_config

        lora_config = janus_lora_config(
            r=model_args.lora_r,
            lora_alpha=model_args.lora_alpha,
            lora_dropout=model_args.lora_dropout,
            target=model_args.lora_target,
            include=tuple(model_args.lora_include or ()),
            modules_to_save=model_args.lora_modules_to_save,
        )
        model = get_peft_model(model, lora_config)
        trainable_modules = [f"LoRA r={lora_config.r} on {dict(count_lora_layers(model))}"]
        trainable_modules += [f"{name} in full" for name in lora_config.modules_to_save or ()]
    else:
        trainable_modules = model_args.trainable_modules or stage.trainable_modules
        apply_freeze_policy(model, trainable_modules)
    trainable = [name for name, parameter in model.named_parameters() if parameter.requires_grad]
    num_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info(
        f"Stage {stage.stage}: training {trainable_modules} ({len(trainable)} tensors, {num_trainable:,} parameters)",
        main_process_only=True,
    )
    if model_args.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    # VQ codes of the generation images, computed once (main process first, the others then read the cache)
    vq_codes = None
    if "generation" in datasets_by_kind:
        vq_model = janus.model.vq_model.to(accelerator.device)
        cache_dir = data_args.vq_cache_dir or os.path.join(training_args.output_dir, "vq_codes")
        vq_codes = VQCodeCache(janus, processor.image_processor, cache_dir)
        with accelerator.main_process_first():
            encoded = vq_codes.precompute(datasets_by_kind["generation"]["image"])
        if encoded:
            logger.info(f"Encoded {encoded} generation images into {vq_codes.cache_dir}")
        vq_model.to("cpu")
    encoder = JanusProSampleEncoder(
        processor, data_args.max_length, vq_codes=vq_codes, cfg_drop_prob=data_args.cfg_drop_prob
    )
    collator = JanusProDataCollator(processor.pad_token_id, max_length=data_args.max_length, packing=data_args.packing)

    optimizer, scheduler = create_optimizer_and_scheduler(
        model, learning_rate, warmup_steps, training_args.lr_scheduler_type, num_training_steps=max_steps
    )
    if accelerator.state.deepspeed_plugin is not None:  # no prepared dataloader to read the micro-batch size from
        accelerator.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = (
            training_args.per_device_train_batch_size
        )
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    # Resume: weights, optimizer, scheduler, RNGs; the step is the data position
    start_step = 0
    checkpoint = resolve_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
    if checkpoint is not None:
        state = load_checkpoint(accelerator, checkpoint)
        mixer.load_state_dict(state["data"])
        start_step = state["step"]
        logger.info(f"Resumed from {checkpoint} at step {start_step}", main_process_only=True)

    if report_to:
        config = {**asdict(model_args), **asdict(data_args), **asdict(training_args)}
        config.update(learning_rate=learning_rate, warmup_steps=warmup_steps, max_steps=max_steps)
        config["mix_ratio"] = mixer.ratio_string
        config = {key: json.dumps(value) if isinstance(value, (list, dict)) else value for key, value in config.items()}
        accelerator.init_trackers(f"janus-pro-stage{stage.stage}", config=config)

    # Every step's batches are a function of (seed, step): this process's micro-batches, encoded ahead by workers
    step_batches = StepBatches(
        mixer,
        encoder,
        collator,
        datasets_by_kind,
        seed=training_args.seed,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
        accumulation_steps=training_args.gradient_accumulation_steps,
        num_steps=max_steps,
    )
    step_loader = torch.utils.data.DataLoader(
        step_batches,
        sampler=range(start_step, max_steps),
        batch_size=None,
        num_workers=data_args.dataloader_num_workers,
    )

    logger.info(
        f"Training steps {start_step}..{max_steps} of {mixer.global_batch_size} samples "
        f"({dict(mixer.counts)} per step) on {accelerator.num_processes} process(es)",
        main_process_only=True,
    )
    progress = tqdm(
        total=max_steps, initial=start_step, desc=f"stage {stage.stage}", disable=not accelerator.is_local_main_process
    )
    logged = {"text_loss": 0.0, "image_loss": 0.0, "num_real_tokens": 0}
    last_logged, last_logged_time = start_step, time.perf_counter()
    window = torch.zeros(3, device=accelerator.device)  # text loss, image loss, real tokens since the last log
    train_log = None
    if accelerator.is_main_process:  # the logged losses, one JSON line per log, for plots and tests
        os.makedirs(training_args.output_dir, exist_ok=True)
        train_log = open(os.path.join(training_args.output_dir, "train_log.jsonl"), "a")
    samples_log = None
    if data_args.log_samples:
        samples_path = os.path.join(training_args.output_dir, "samples", f"rank-{accelerator.process_index}.jsonl")
        os.makedirs(os.path.dirname(samples_path), exist_ok=True)
        samples_log = open(samples_path, "a")
    for step, micro_batches in zip(range(start_step, max_steps), step_loader):
        metas = [batch.pop("meta") for batch in micro_batches]
        if samples_log is not None:
            for index, meta in enumerate(metas):
                row = {"step": step, "micro_batch": index, "record_ids": meta["record_ids"]}
                samples_log.write(json.dumps(row) + "\n")
            samples_log.flush()
        output = training_step(
            accelerator, model, optimizer, scheduler, micro_batches, max_grad_norm=training_args.max_grad_norm
        )
        window += torch.stack(
            [output.text_loss, output.image_loss, torch.tensor(float(sum(m["num_real_tokens"] for m in metas)))]
        ).to(window.device)
        done = step + 1
        progress.update(1)
        if done % training_args.logging_steps == 0 or done == max_steps:
            steps_in_window, last_logged = done - last_logged, done
            now = time.perf_counter()
            seconds, last_logged_time = now - last_logged_time, now
            totals = accelerator.reduce(window, reduction="sum").tolist()
            logged = {
                "text_loss": totals[0] / steps_in_window,
                "image_loss": totals[1] / steps_in_window,
                "num_real_tokens": int(totals[2]),
            }
            logs = {**logged, "learning_rate": scheduler.get_last_lr()[0], "tokens_per_second": totals[2] / seconds}
            if output.grad_norm is not None:
                logs["grad_norm"] = float(output.grad_norm)
            progress.set_postfix(text_loss=f"{logged['text_loss']:.4f}", image_loss=f"{logged['image_loss']:.4f}")
            accelerator.log(logs, step=done)
            if train_log is not None:
                train_log.write(json.dumps({"step": done, **logs}) + "\n")
                train_log.flush()
            window.zero_()
        if training_args.save_steps and done % training_args.save_steps == 0:
            save_checkpoint(
                accelerator,
                training_args.output_dir,
                done,
                {"data": mixer.state_dict(), "stage": stage.stage, "learning_rate": learning_rate},
            )
    progress.close()
    for log_file in (train_log, samples_log):
        if log_file is not None:
            log_file.close()

    # Save the final model and processor (loadable by from_pretrained, the chat pipeline and JanusProImagePipeline);
    # with `--use_peft`, the adapter and the processor (PeftModel.from_pretrained, pipe.load_lora_weights)
    if accelerator.unwrap_model(model).config.text_config._attn_implementation == PACKED_SDPA:
        accelerator.unwrap_model(model).set_attn_implementation({"text_config": "sdpa"})
    from transformers_janus.model_card import TrainingSummary

    training_summary = TrainingSummary(
        method=f"Janus-Pro stage {stage.stage} with `training/train.py` (trained: {', '.join(trainable_modules)})",
        datasets=[source for source in sources.values() if source],
        arguments={
            "stage": stage.stage,
            "max_steps": max_steps,
            "learning_rate": learning_rate,
            "warmup_steps": warmup_steps,
            "lr_scheduler_type": training_args.lr_scheduler_type,
            "mix_ratio": mixer.ratio_string,
            "global_batch_size": mixer.global_batch_size,
            "max_length": data_args.max_length,
            "packing": data_args.packing,
            "seed": training_args.seed,
        },
        metrics={"step": max_steps, "text_loss": logged["text_loss"], "image_loss": logged["image_loss"]},
    )
    save_final_model(accelerator, model, processor, training_args.output_dir, training_summary=training_summary)
    if accelerator.is_main_process:
        results_path = os.path.join(training_args.output_dir, "train_results.json")
        with open(results_path + ".tmp", "w") as file:
            json.dump({"step": max_steps, **logged}, file, indent=2)
        os.replace(results_path + ".tmp", results_path)
    accelerator.end_training()


def make_parser(subparsers: argparse._SubParsersAction | None = None, prog: str | None = None):
    from trl import TrlParser

    dataclass_types = (ModelArguments, DataArguments, StageTrainingArguments)
    if subparsers is not None:
        return subparsers.add_parser("train", help="Train Janus-Pro (stages I-III)", dataclass_types=dataclass_types)
    return TrlParser(dataclass_types, prog=prog)


if __name__ == "__main__":
    parser = make_parser()
    model_args, data_args, training_args = parser.parse_args_and_config()
    main(model_args, data_args, training_args)
