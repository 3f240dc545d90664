"""
Training throughput: real (non-pad) tokens per second and peak memory of optimizer steps, side by side in one run
on the same random weights and the same synthetic data (576-token images at 384 px, answers of mixed length):

- `ours_packed` / `ours_padded`: `transformers_janus.training` (sample encoder, collator with and without packing,
  `training_step`) on understanding data, everything but the VQ tokenizer trained (stage III's policy);
- `ours_packed_masked`: packed, but attention as transformers' SDPA computes it for packed rows (one masked
  `row x row` attention) instead of per sample (`transformers_janus.training.packed_attention`);
- `trl_sft`: the peer a user would otherwise pick, TRL's `SFTTrainer` with its defaults (padded batches) on the same
  model, data, trainable parts, optimizer (AdamW 0.9/0.95, no weight decay, clip 1.0) and batch size; gradient
  checkpointing off for both (TRL turns it on by default);
- `stage1`, `stage2`, `stage3`: ours packed at each stage's freeze policy and data mix (SPEC §5);
- `generation_only` / `text_only`: the cost of the image-loss path (generation adaptor in, image head out) per token,
  against text samples through `lm_head`.

    python benchmarks/bench_train.py
    python benchmarks/bench_train.py --quick
    python benchmarks/bench_train.py --implementations ours_packed trl_sft --steps 5
"""

import importlib.util
import json
import logging
import random
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch


logger = logging.getLogger("bench_train")

REPO_ROOT = Path(__file__).resolve().parents[1]
IMPLEMENTATIONS = (
    "ours_packed",
    "ours_packed_masked",
    "ours_padded",
    "trl_sft",
    "stage1",
    "stage2",
    "stage3",
    "generation_only",
    "text_only",
)
QUICK_SETTINGS = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "image_size": 64,
    "vq_block_out_channels": [32, 32, 32, 32, 32],
    "codebook_size": 512,
    "max_length": 1024,
    "steps": 2,
    "warmup_steps": 1,
    "num_records": 16,
}
WORDS = "red green blue circle square triangle left right above below small large the a of and is on near".split()


def _load_bench_generate():
    """The text-to-image benchmark's tokenizer and model builders (one definition of the benchmark model)."""
    spec = importlib.util.spec_from_file_location("bench_generate", REPO_ROOT / "benchmarks" / "bench_generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class BenchmarkArguments:
    """
    Args:
        quick: Tiny model (16 image tokens), two steps: a smoke run of seconds.
        implementations: Which of the contestants (module docstring) to run.
        steps: Timed optimizer steps per contestant, after `warmup_steps` untimed ones.
        batch_size: Samples per optimizer step (one micro-batch).
        max_length: Packed row length (and the longest sample).
        num_records: Records per data kind.
        hidden_size, intermediate_size, num_hidden_layers, num_attention_heads: The language model.
        image_size: Image side; `(image_size // 16) ** 2` tokens per image (576 at 384).
        vq_block_out_channels, vq_latent_channels, codebook_size: The VQ tokenizer.
        learning_rate: Of every contestant.
        num_threads: CPU threads for torch (default: torch's choice).
        seed: Seed of the weights, the data and the mix.
        output_json: Also write the results there.
    """

    quick: bool = field(default=False, metadata={"help": "Tiny model, two steps: a smoke run of seconds."})
    implementations: list[str] = field(
        default_factory=lambda: list(IMPLEMENTATIONS), metadata={"help": f"Any of {', '.join(IMPLEMENTATIONS)}."}
    )
    steps: int = field(default=4, metadata={"help": "Timed optimizer steps per contestant."})
    warmup_steps: int = field(default=1, metadata={"help": "Untimed steps first."})
    batch_size: int = field(default=8, metadata={"help": "Samples per optimizer step."})
    max_length: int = field(default=4096, metadata={"help": "Packed row length (train.py's default)."})
    num_records: int = field(default=64, metadata={"help": "Records per data kind."})
    hidden_size: int = field(default=256, metadata={"help": "Language model width."})
    intermediate_size: int = field(default=688, metadata={"help": "Language model MLP width."})
    num_hidden_layers: int = field(default=4, metadata={"help": "Language model layers."})
    num_attention_heads: int = field(default=4, metadata={"help": "Language model heads."})
    image_size: int = field(default=384, metadata={"help": "Image side."})
    vq_block_out_channels: list[int] = field(
        default_factory=lambda: [32, 32, 64, 64, 64], metadata={"help": "VQ channels per level."}
    )
    vq_latent_channels: int = field(default=32, metadata={"help": "VQ latent channels."})
    codebook_size: int = field(default=16384, metadata={"help": "Image-token vocabulary."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Learning rate of every contestant."})
    num_threads: int | None = field(default=None, metadata={"help": "CPU threads for torch."})
    seed: int = field(default=0, metadata={"help": "Seed of weights, data and mix."})
    output_json: str | None = field(default=None, metadata={"help": "Also write the results to this file."})

    def __post_init__(self):
        if self.quick:
            for name, value in QUICK_SETTINGS.items():
                setattr(self, name, value)
        unknown = sorted(set(self.implementations) - set(IMPLEMENTATIONS))
        if unknown:
            raise ValueError(f"Unknown `implementations` {unknown}; choose from {list(IMPLEMENTATIONS)}.")
        self.device = "cpu"


# ---------------------------------------------------------------------------------------------------------------
# Model, processor, data
# ---------------------------------------------------------------------------------------------------------------


def _sentence(rng: random.Random, min_chars: int, max_chars: int) -> str:
    target, words = rng.randint(min_chars, max_chars), []
    while sum(len(word) + 1 for word in words) < target:
        words.append(rng.choice(WORDS))
    return " ".join(words)


def write_data(folder: Path, args: BenchmarkArguments) -> dict[str, Path]:
    """
    JSONL files of the three kinds in `folder` with random images. The byte-level tokenizer gives about a token per
    character: understanding = 576 image tokens + 40-420 chat tokens, text 50-400, generation 576 + a 20-80 prompt.
    """
    import numpy as np
    import PIL.Image

    rng, pixels = random.Random(args.seed), np.random.default_rng(args.seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    records = {"understanding": [], "text": [], "generation": []}
    for index in range(args.num_records):
        width, height = rng.choice([(args.image_size, args.image_size), (args.image_size, args.image_size * 3 // 4)])
        image = PIL.Image.fromarray(pixels.integers(0, 256, (height, width, 3), dtype=np.uint8))
        image.save(folder / "images" / f"{index}.png")
        question = _sentence(rng, 10, 40)
        records["understanding"].append(
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]},
                    {"role": "assistant", "content": [{"type": "text", "text": _sentence(rng, 20, 370)}]},
                ],
                "images": [f"images/{index}.png"],
            }
        )
        records["text"].append(
            {
                "messages": [
                    {"role": "user", "content": _sentence(rng, 10, 60)},
                    {"role": "assistant", "content": _sentence(rng, 30, 330)},
                ]
            }
        )
        records["generation"].append({"caption": _sentence(rng, 10, 70), "image": f"images/{index}.png"})
    paths = {}
    for kind, rows in records.items():
        paths[kind] = folder / f"{kind}.jsonl"
        paths[kind].write_text("".join(json.dumps(row) + "\n" for row in rows))
    return paths


def build_model_and_processor(args: BenchmarkArguments):
    from transformers_janus import JanusProImageProcessor, JanusProProcessor

    bench_generate = _load_bench_generate()
    tokenizer = bench_generate.build_tokenizer()
    model = bench_generate.build_model(args, tokenizer)
    image_processor = JanusProImageProcessor(image_size=model.config.image_size)
    processor = JanusProProcessor(image_processor, tokenizer, num_image_tokens=model.config.num_image_tokens)
    return model, processor


# ---------------------------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Measurement:
    implementation: str
    steps: int
    real_tokens: int
    seconds: float
    real_tokens_per_second: float
    token_efficiency: float  # real tokens / tokens the model ran (rows x row length)
    peak_memory_mib: float | None


class Timer:
    """Wall time and real tokens of the steps after the warm-up, and the peak memory over them."""

    def __init__(self, warmup_steps: int, bench_generate):
        self.warmup_steps, self.bench_generate = warmup_steps, bench_generate
        self.step, self.real, self.ran, self.start = 0, 0, 0, None

    def step_done(self, real_tokens: int, tokens_run: int):
        self.step += 1
        if self.step == self.warmup_steps:
            self.bench_generate.reset_peak_memory(torch.device("cpu"))
            self.start = time.perf_counter()
        elif self.step > self.warmup_steps:
            self.real += real_tokens
            self.ran += tokens_run

    def result(self, name: str) -> Measurement:
        seconds = time.perf_counter() - self.start
        return Measurement(
            implementation=name,
            steps=self.step - self.warmup_steps,
            real_tokens=self.real,
            seconds=seconds,
            real_tokens_per_second=self.real / seconds,
            token_efficiency=self.real / max(self.ran, 1),
            peak_memory_mib=self.bench_generate.peak_memory(torch.device("cpu")),
        )


def run_ours(name, model, processor, data_paths, args, timer) -> Measurement:
    """Our data path and optimizer step: `ours_*`, `stage*`, `generation_only`, `text_only`."""
    from accelerate import Accelerator

    from transformers_janus.training.collator import JanusProDataCollator
    from transformers_janus.training.data import (
        JanusProSampleEncoder,
        VQCodeCache,
        load_samples,
        sample_generator,
    )
    from transformers_janus.training.mixing import RatioMixer
    from transformers_janus.training.optimization import create_optimizer_and_scheduler, training_step
    from transformers_janus.training.packed_attention import register_packed_sdpa
    from transformers_janus.training.stages import MAX_GRAD_NORM, apply_freeze_policy, get_stage

    stage = get_stage(int(name[-1])) if name.startswith("stage") else get_stage(3)
    ratio = {"generation_only": (0, 0, 1), "text_only": (0, 1, 0)}.get(name, stage.mix_ratio)
    if name.startswith("ours"):
        ratio = (1, 0, 0)
    apply_freeze_policy(model, stage.trainable_modules)
    datasets_by_kind = {
        kind: load_samples(path, kind) for kind, path in data_paths.items() if ratio[("understanding", "text", "generation").index(kind)]
    }
    vq_codes = VQCodeCache(model, processor.image_processor, data_paths["generation"].parent / "vq-cache")
    if "generation" in datasets_by_kind:  # computed once before training, as `training/train.py` does
        vq_codes.precompute(list(datasets_by_kind["generation"]["image"]))
    encoder = JanusProSampleEncoder(processor, max_length=args.max_length, vq_codes=vq_codes)
    collator = JanusProDataCollator(processor.pad_token_id, max_length=args.max_length, packing=name != "ours_padded")
    mixer = RatioMixer({kind: len(data) for kind, data in datasets_by_kind.items()}, ratio, args.batch_size, args.seed)

    packed_attention = name != "ours_padded" and not name.endswith("_masked")
    if packed_attention:
        model.set_attn_implementation({"text_config": register_packed_sdpa()})
    accelerator = Accelerator(cpu=True)
    optimizer, scheduler = create_optimizer_and_scheduler(model, args.learning_rate, warmup_steps=0)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    for step in range(args.warmup_steps + args.steps):
        items = mixer.global_batch(step)
        samples = [
            encoder.encode(datasets_by_kind[item.kind][item.index], generator=sample_generator(args.seed, step, item.position))
            for item in items
        ]
        batch = collator(samples)
        meta = batch.pop("meta")
        if not packed_attention:  # transformers' SDPA over the block-diagonal mask of the packed rows
            for key in ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k"):
                batch.pop(key, None)
        training_step(accelerator, model, optimizer, scheduler, [batch], MAX_GRAD_NORM)
        timer.step_done(meta["num_real_tokens"], meta["num_tokens"])
    model.set_attn_implementation({"text_config": "sdpa"})
    return timer.result(name)


def run_trl(model, processor, data_paths, args, timer, output_dir: Path) -> Measurement:
    """TRL's `SFTTrainer` on the understanding data, with its defaults except what equal work needs."""
    import datasets
    import PIL.Image
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from transformers_janus.training.stages import apply_freeze_policy, get_stage

    apply_freeze_policy(model, get_stage(3).trainable_modules)
    rows = [json.loads(line) for line in data_paths["understanding"].read_text().splitlines()]
    folder = data_paths["understanding"].parent
    dataset = datasets.Dataset.from_list(
        [{"messages": row["messages"], "images": [PIL.Image.open(folder / path).convert("RGB") for path in row["images"]]} for row in rows]
    )

    batches = []  # (real tokens, tokens run) of each batch TRL's collator made, in order

    class StepTimer(TrainerCallback):
        def on_step_end(self, training_args, state, control, **kwargs):
            timer.step_done(*batches[state.global_step - 1])

    config = SFTConfig(
        output_dir=str(output_dir),
        per_device_train_batch_size=args.batch_size,
        max_steps=args.warmup_steps + args.steps,
        learning_rate=args.learning_rate,
        lr_scheduler_type="constant",
        adam_beta1=0.9,
        adam_beta2=0.95,
        weight_decay=0.0,
        max_grad_norm=1.0,
        max_length=args.max_length,
        gradient_checkpointing=False,
        bf16=False,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        dataloader_num_workers=0,
        seed=args.seed,
        disable_tqdm=True,
    )
    trainer = SFTTrainer(
        model=model, args=config, train_dataset=dataset, processing_class=processor, callbacks=[StepTimer()]
    )
    collate = trainer.data_collator

    def counting_collator(examples):
        batch = collate(examples)
        batches.append((int(batch["attention_mask"].sum()), batch["input_ids"].numel()))
        return batch

    trainer.data_collator = counting_collator
    trainer.train()
    return timer.result("trl_sft")


def format_table(measurements: list[Measurement]) -> str:
    lines = [
        "| implementation | steps | real tokens | real tokens/s | token efficiency | peak memory (MiB) |",
        "|---|---|---|---|---|---|",
    ]
    for m in measurements:
        efficiency = f"{m.token_efficiency:.1%}" if m.token_efficiency else "n/a"
        memory = f"{m.peak_memory_mib:.0f}" if m.peak_memory_mib is not None else "n/a"
        lines.append(
            f"| {m.implementation} | {m.steps} | {m.real_tokens} | {m.real_tokens_per_second:.0f} | {efficiency} | {memory} |"
        )
    return "\n".join(lines)


RATIOS = (
    ("ours_packed", "trl_sft", "ours packed vs TRL SFTTrainer (understanding)"),
    ("ours_packed", "ours_padded", "packing vs padding (understanding)"),
    ("ours_packed", "ours_packed_masked", "per-sample attention vs one masked attention per packed row"),
    ("generation_only", "text_only", "image-loss path vs text path, per real token"),
)


def ratios(measurements: list[Measurement]) -> list[dict]:
    by_name = {m.implementation: m for m in measurements}
    rows = []
    for numerator, denominator, what in RATIOS:
        if numerator in by_name and denominator in by_name:
            rows.append(
                {
                    "what": what,
                    "tokens_per_second_ratio": by_name[numerator].real_tokens_per_second
                    / by_name[denominator].real_tokens_per_second,
                    "peak_memory_ratio": (by_name[numerator].peak_memory_mib or 0)
                    / (by_name[denominator].peak_memory_mib or 1),
                }
            )
    return rows


def main(args: BenchmarkArguments) -> dict:
    from transformers.utils import logging as transformers_logging

    from transformers_janus.training.collator import packing_efficiency, realistic_length_mix

    transformers_logging.set_verbosity_error()
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    bench_generate = _load_bench_generate()
    model, processor = build_model_and_processor(args)
    initial_state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    measurements = []
    with tempfile.TemporaryDirectory(prefix="bench-train-") as folder:
        data_paths = write_data(Path(folder), args)
        for name in args.implementations:
            model.load_state_dict(initial_state)
            torch.manual_seed(args.seed)
            timer = Timer(args.warmup_steps, bench_generate)
            if name == "trl_sft":
                measurement = run_trl(model, processor, data_paths, args, timer, Path(folder) / "trl")
            else:
                measurement = run_ours(name, model, processor, data_paths, args, timer)
            logger.info("%s: %.0f real tokens/s", name, measurement.real_tokens_per_second)
            measurements.append(measurement)
    lengths, _ = realistic_length_mix(4096, seed=args.seed)
    efficiency = packing_efficiency(lengths, max_length=4096, batch_size=16)
    report = {
        "machine": bench_generate.describe_machine(torch.device("cpu")),
        "arguments": asdict(args),
        "measurements": [asdict(m) for m in measurements],
        "ratios": ratios(measurements),
        "packing_efficiency_realistic_mix": efficiency,
    }
    print(f"\n{report['machine']}\n")
    print(format_table(measurements))
    for row in report["ratios"]:
        print(f"- {row['what']}: {row['tokens_per_second_ratio']:.2f}x real tokens/s, "
              f"{row['peak_memory_ratio']:.2f}x peak memory")
    print(
        f"- packing efficiency on the stage III length mix (4096 samples, rows of 4096, 16 per micro-batch): "
        f"{efficiency['packed']:.1%} packed, {efficiency['unpacked']:.1%} padded"
    )
    if args.output_json:
        Path(args.output_json).write_text(json.dumps(report, indent=2) + "\n")
    return report


def make_parser():
    from transformers import HfArgumentParser

    return HfArgumentParser(BenchmarkArguments)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    (arguments,) = make_parser().parse_args_into_dataclasses()
    main(arguments)
