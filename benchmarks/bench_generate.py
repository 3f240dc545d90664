"""
Text-to-image decoding speed: `JanusProForConditionalGeneration.generate_images` (its default path, the opt-in fast
path and prepacked weights; and `JanusProImagePipeline` end to end) against transformers' built-in
`JanusForConditionalGeneration.generate(generation_mode="image")` on the converted weights and against DeepSeek's
reference loop (SPEC §4, `tests/reference.py`), on the same random weights, in float32 and bfloat16.

    python benchmarks/bench_generate.py
    python benchmarks/bench_generate.py --quick
    python benchmarks/bench_generate.py --dtypes bfloat16 --batch_sizes 8 --implementations ours_static builtin
    python benchmarks/bench_generate.py --device cuda --batch_sizes 1 16
"""

import json
import logging
import os
import platform
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch


logger = logging.getLogger("bench_generate")

REPO_ROOT = Path(__file__).resolve().parents[1]
# The parity oracle (DeepSeek's loop) lives with the tests, which anchor it to DeepSeek's golden numbers.
sys.path.insert(0, str(REPO_ROOT / "tests"))
from reference import reference_generate  # noqa: E402

IMPLEMENTATIONS = (
    "ours",
    "ours_static",
    "ours_fast",
    "ours_prepacked",
    "ours_jacobi",
    "ours_jacobi_fast",
    "pipeline",
    "pipeline_prepacked",
    "builtin",
    "reference",
)
# Janus-Pro's special tokens (DeepSeek-LLM's tokenizer), added to the benchmark's byte-level tokenizer
SPECIAL_TOKENS = (
    "<｜begin▁of▁sentence｜>",
    "<｜end▁of▁sentence｜>",
    "<｜▁pad▁｜>",
    "<image_placeholder>",
    "<patch_placeholder>",
    "<|User|>",
    "<|Assistant|>",
    "<begin_of_image>",
    "<end_of_image>",
)
QUICK_SETTINGS = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "image_size": 64,
    "vq_block_out_channels": [32, 32, 32, 32, 32],
    "vq_latent_channels": 32,
    "codebook_size": 512,
    "batch_sizes": [1, 2],
}


@dataclass
class BenchmarkArguments:
    """
    Args:
        quick: Tiny model (16 image tokens) and batches 1 and 2 (unless `batch_sizes` says otherwise): a smoke run.
        device: Where to run (`cpu`, `cuda`, `cuda:1`, ...).
        dtypes: Precisions to measure, each on the same weights.
        batch_sizes: Images per prompt.
        implementations: Which of `ours` (`generate_images`, dynamic cache), `ours_static` (static cache),
            `ours_fast` (`fast_decoding=True`), `ours_prepacked` (`prepack_weights=True`; dropped where oneDNN cannot
            run it: off CPU, or bfloat16 on CPUs without bfloat16 instructions), `ours_jacobi` (`decoding="jacobi"`),
            `ours_jacobi_fast` (`decoding="jacobi"` with `fast_decoding=True`), `pipeline` (`JanusProImagePipeline` end to end:
            prompt, tokens, VQ decode, PIL images), `pipeline_prepacked`, `builtin` (transformers' Janus) and
            `reference` (DeepSeek's loop) to run.
        repeats: Timed runs per measurement; the fastest counts.
        num_threads: CPU threads for torch (default: torch's choice).
        check_greedy: Run every implementation greedily once per dtype (this is also the warm-up) and compare tokens.
        model: `random` (random weights of the shape below) or a checkpoint directory, e.g. `shapes`
            (`transformers_janus.DEFAULT_MODEL`, the trained shapes model: drafts are only accepted as often as a
            trained model's predictions allow, so Jacobi decoding is measured there).
        jacobi_window: Positions per pass of the Jacobi implementations.
        hidden_size, intermediate_size, num_hidden_layers, num_attention_heads: The random language model.
        image_size: Image side; the image has `(image_size // 16) ** 2` tokens (24 x 24 = 576 at 384).
        vq_block_out_channels, vq_latent_channels, codebook_size: The VQ tokenizer (16x down with 5 levels).
        prompt: The text of every image.
        guidance_scale, temperature: Sampling settings shared by all implementations.
        seed: Seed of the random weights and of the sampling.
        output_json: Also write the results there.
    """

    quick: bool = field(default=False, metadata={"help": "Tiny model and batches 1 and 2: a smoke run of seconds."})
    device: str = field(default="cpu", metadata={"help": "cpu, cuda, cuda:1, ..."})
    dtypes: list[str] = field(default_factory=lambda: ["float32", "bfloat16"], metadata={"help": "Precisions."})
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8], metadata={"help": "Images per prompt."})
    implementations: list[str] = field(
        default_factory=lambda: list(IMPLEMENTATIONS), metadata={"help": f"Any of {', '.join(IMPLEMENTATIONS)}."}
    )
    repeats: int = field(default=1, metadata={"help": "Timed runs per measurement; the fastest counts."})
    num_threads: int | None = field(default=None, metadata={"help": "CPU threads for torch."})
    check_greedy: bool = field(default=True, metadata={"help": "Compare greedy tokens (also the warm-up)."})
    model: str = field(default="random", metadata={"help": "`random`, `shapes` (the shipped model) or a checkpoint."})
    jacobi_window: int = field(default=16, metadata={"help": "Positions per pass with decoding='jacobi'."})
    hidden_size: int = field(default=512, metadata={"help": "Language model width."})
    intermediate_size: int = field(default=1376, metadata={"help": "Language model MLP width."})
    num_hidden_layers: int = field(default=8, metadata={"help": "Language model layers."})
    num_attention_heads: int = field(default=8, metadata={"help": "Language model heads."})
    image_size: int = field(default=384, metadata={"help": "Image side; (image_size // 16) ** 2 image tokens."})
    vq_block_out_channels: list[int] = field(
        default_factory=lambda: [32, 32, 64, 64, 64], metadata={"help": "VQ channels per level (5 levels: 16x down)."}
    )
    vq_latent_channels: int = field(default=32, metadata={"help": "VQ latent channels."})
    codebook_size: int = field(default=16384, metadata={"help": "Image-token vocabulary (Janus-Pro: 16384)."})
    prompt: str = field(
        default="a red square on the left of a blue circle, under a night sky full of stars",
        metadata={"help": "The text of every image."},
    )
    guidance_scale: float = field(default=5.0, metadata={"help": "Classifier-free guidance weight."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature."})
    seed: int = field(default=0, metadata={"help": "Seed of the weights and the sampling."})
    output_json: str | None = field(default=None, metadata={"help": "Also write the results to this file."})

    def __post_init__(self):
        if self.quick:  # the tiny model; batches 1 and 2 unless others were asked for
            for name, value in QUICK_SETTINGS.items():
                if name != "batch_sizes" or self.batch_sizes == [1, 8]:
                    setattr(self, name, value)
        if not self.device.startswith("cpu"):  # prepacked weights are oneDNN's, on CPU only
            self.implementations = [name for name in self.implementations if not name.endswith("_prepacked")]
        unknown = sorted(set(self.implementations) - set(IMPLEMENTATIONS))
        if unknown:
            raise ValueError(f"Unknown `implementations` {unknown}; choose from {list(IMPLEMENTATIONS)}.")
        if self.model == "shapes" and self.prompt == BenchmarkArguments.prompt:
            self.prompt = "a photo of a red square and a green circle"
        if self.image_size % 16:
            raise ValueError(f"`image_size` must be a multiple of 16 (the VQ downsampling), got {self.image_size}.")


# ---------------------------------------------------------------------------------------------------------------
# The model, its processor and the built-in twin
# ---------------------------------------------------------------------------------------------------------------


def build_tokenizer():
    """
    A byte-level tokenizer built here (no download, no test fixture): the 256 byte symbols, no merges, and Janus-Pro's
    special tokens. Prompts tokenize to about one token per character, longer than with DeepSeek's BPE; the decoding
    steps, which the benchmark times, do not depend on the tokenizer.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Tokenizer(models.BPE(vocab={symbol: index for index, symbol in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(list(SPECIAL_TOKENS))
    bos = SPECIAL_TOKENS[0]
    backend.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, backend.token_to_id(bos))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=bos,
        eos_token=SPECIAL_TOKENS[1],
        pad_token=SPECIAL_TOKENS[2],
        additional_special_tokens=list(SPECIAL_TOKENS[3:]),
    )


def build_model(args: BenchmarkArguments, tokenizer):
    """A randomly initialised Janus-Pro of the benchmark's shape (fixed seed), with the tokenizer's special ids."""
    from transformers_janus import JanusProConfig, JanusProForConditionalGeneration

    token_id = tokenizer.convert_tokens_to_ids
    config = JanusProConfig(
        vision_config={
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": args.image_size,
            "patch_size": 16,
        },
        text_config={
            "vocab_size": 512,
            "hidden_size": args.hidden_size,
            "intermediate_size": args.intermediate_size,
            "num_hidden_layers": args.num_hidden_layers,
            "num_attention_heads": args.num_attention_heads,
            "num_key_value_heads": args.num_attention_heads,
            "max_position_embeddings": 4096,
            "bos_token_id": token_id(tokenizer.bos_token),
            "eos_token_id": token_id(tokenizer.eos_token),
        },
        vq_config={
            "block_out_channels": args.vq_block_out_channels,
            "latent_channels": args.vq_latent_channels,
            "num_vq_embeddings": args.codebook_size,
        },
        image_token_id=token_id("<image_placeholder>"),
        boi_token_id=token_id("<begin_of_image>"),
        eoi_token_id=token_id("<end_of_image>"),
        pad_token_id=token_id("<｜▁pad▁｜>"),
    )
    torch.manual_seed(args.seed)
    model = JanusProForConditionalGeneration(config).eval()
    # Janus-Pro stores its codebook L2-normalised (as loading DeepSeek's checkpoints does).
    codebook = model.model.vq_model.quantize.embedding.weight
    codebook.data = torch.nn.functional.normalize(codebook.data, dim=-1)
    return model.to(args.device)


def load_pipeline(args: BenchmarkArguments):
    """A trained checkpoint's pipeline (`shapes`: the shipped model), float32, on the benchmark's device."""
    from transformers_janus import DEFAULT_MODEL, JanusProImagePipeline

    path = DEFAULT_MODEL if args.model == "shapes" else args.model
    pipe = JanusProImagePipeline.from_pretrained(path, dtype=torch.float32)
    pipe.model.eval().to(args.device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_pipeline(model, tokenizer):
    from transformers_janus import JanusProImagePipeline, JanusProImageProcessor, JanusProProcessor

    image_processor = JanusProImageProcessor(image_size=model.config.image_size)
    processor = JanusProProcessor(image_processor, tokenizer, num_image_tokens=model.config.num_image_tokens)
    pipe = JanusProImagePipeline(model=model, processor=processor)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ---------------------------------------------------------------------------------------------------------------
# One call of each implementation
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Contestants:
    """What the implementations run on: one set of weights, one prompt."""

    model: object
    builtin: object
    pipeline: object
    input_ids: torch.LongTensor
    args: BenchmarkArguments


@dataclass
class Run:
    """What one call made: its image tokens (None for the pipeline's PIL images) and its language-model passes."""

    tokens: torch.Tensor | None
    forward_passes: int
    draft_acceptance_rate: float | None = None


def run_implementation(name: str, contestants: Contestants, batch_size: int, greedy: bool) -> Run:
    """Make `batch_size` images of the prompt with one implementation."""
    args, model = contestants.args, contestants.model
    device = contestants.input_ids.device
    rows = contestants.input_ids[None].repeat(batch_size, 1)
    sampling = {"top_k": 1} if greedy else {"temperature": args.temperature}
    generators = [torch.Generator(device=device).manual_seed(args.seed + row) for row in range(batch_size)]
    prepack = {"prepack_weights": name.endswith("_prepacked")}
    num_tokens = model.config.num_image_tokens
    if name.startswith("ours"):
        output = model.generate_images(
            rows,
            guidance_scale=args.guidance_scale,
            generator=generators,
            cache_implementation="static" if name == "ours_static" else "dynamic",
            fast_decoding=name in ("ours_fast", "ours_jacobi_fast"),
            decoding="jacobi" if name.startswith("ours_jacobi") else "sequential",
            jacobi_window=args.jacobi_window,
            **sampling,
            **prepack,
        )
        return Run(output.image_tokens, output.num_forward_passes, output.draft_acceptance_rate)
    if name.startswith("pipeline"):
        pipe = contestants.pipeline
        if greedy:
            tokens = pipe(args.prompt, num_images_per_prompt=batch_size, top_k=1, output_type="latent", **prepack).images
            return Run(tokens, num_tokens)
        images = pipe(
            args.prompt,
            num_images_per_prompt=batch_size,
            guidance_scale=args.guidance_scale,
            temperature=args.temperature,
            generator=generators,
            **prepack,
        ).images
        if len(images) != batch_size:
            raise RuntimeError(f"The pipeline made {len(images)} images, expected {batch_size}.")
        return Run(None, num_tokens)
    if name == "builtin":
        torch.manual_seed(args.seed)
        tokens = contestants.builtin.generate(
            input_ids=rows,
            attention_mask=torch.ones_like(rows),
            generation_mode="image",
            do_sample=not greedy,
            guidance_scale=args.guidance_scale,
            temperature=args.temperature,
        )
        return Run(tokens, num_tokens)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    tokens = reference_generate(
        model,
        contestants.input_ids,
        batch_size,
        cfg_weight=args.guidance_scale,
        temperature=args.temperature,
        greedy=greedy,
        generator=generator,
    )
    return Run(tokens, num_tokens)


# ---------------------------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------------------------


def _proc_status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_memory(device: torch.device) -> tuple[float | None, bool]:
    """Start a new peak-memory window; returns the memory in use (MiB) and whether the peak could be reset."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device) / 2**20, True
    try:  # Linux: writing 5 to clear_refs resets the process's peak RSS (VmHWM)
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
        resettable = True
    except OSError:
        resettable = False
    current = _proc_status_kib("VmRSS")
    return (current / 1024 if current is not None else None), resettable


def peak_memory(device: torch.device) -> float | None:
    """Peak memory (MiB) since `reset_peak_memory`: GPU memory allocated by torch on CUDA, resident memory on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = _proc_status_kib("VmHWM")
    if peak is None:  # no /proc: the process's lifetime peak (KiB on Linux, bytes on macOS)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak = peak / 1024 if sys.platform == "darwin" else peak
    return peak / 1024


def synchronize(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Measurement:
    implementation: str
    dtype: str
    batch_size: int
    seconds: float
    seconds_per_image: float
    tokens_per_second: float
    ms_per_step: float
    peak_memory_mib: float | None
    extra_memory_per_image_mib: float | None
    memory_kind: str
    forward_passes: int
    tokens_per_pass: float
    draft_acceptance_rate: float | None


def measure(name: str, contestants: Contestants, batch_size: int, dtype: str) -> Measurement:
    args = contestants.args
    device = contestants.input_ids.device
    num_tokens = contestants.model.config.num_image_tokens
    best, peak, before = float("inf"), None, None
    for _ in range(args.repeats):
        before, resettable = reset_peak_memory(device)
        synchronize(device)
        start = time.perf_counter()
        run = run_implementation(name, contestants, batch_size, greedy=False)
        synchronize(device)
        best = min(best, time.perf_counter() - start)
        peak = peak_memory(device)
        if not resettable:
            before = None
    extra = max(peak - before, 0.0) / batch_size if peak is not None and before is not None else None
    return Measurement(
        implementation=name,
        dtype=dtype,
        batch_size=batch_size,
        seconds=best,
        seconds_per_image=best / batch_size,
        tokens_per_second=num_tokens * batch_size / best,
        ms_per_step=best / num_tokens * 1000,
        peak_memory_mib=peak,
        extra_memory_per_image_mib=extra,
        memory_kind="GPU allocated" if device.type == "cuda" else "RSS",
        forward_passes=run.forward_passes,
        tokens_per_pass=num_tokens / run.forward_passes,
        draft_acceptance_rate=run.draft_acceptance_rate,
    )


def required_matches(dtype: str, implementations: list[str]) -> list[tuple[str, str]]:
    """
    The (implementation, baseline) pairs whose greedy tokens must be identical. In float32 every implementation but
    the prepacked ones computes bit for bit what the reference loop computes, and Jacobi decoding gives the same
    greedy tokens (its passes round differently, far below the margins of a trained model's argmax). In bfloat16 the
    reference loop and the built-in combine the guidance in bfloat16 and we in float32, so only our own variants must
    agree with `ours` (prepacked ones included: oneDNN's bfloat16 products are the default ones; Jacobi passes are
    reported, not required: bfloat16 rounding of a 16-position pass can flip a near tie). The fast path must always
    give the default path's tokens.
    """
    ours_variants = ["ours_static", "ours_fast", "pipeline"]
    if dtype == "float32":
        pairs = [
            (name, "reference")
            for name in ("ours", "ours_static", "ours_fast", "ours_jacobi", "ours_jacobi_fast", "pipeline", "builtin")
        ]
    else:
        ours_variants += ["ours_prepacked", "pipeline_prepacked"]
        pairs = []
    pairs += [(name, "ours") for name in ours_variants]
    return [(name, baseline) for name, baseline in pairs if name in implementations and baseline in implementations]


def check_greedy_tokens(contestants: Contestants, implementations: list[str], dtype: str) -> dict:
    """
    One greedy image from every implementation (the run doubles as the warm-up), compared with the reference loop's
    and with `ours`: equal tokens mean the implementations do the same work.
    """
    tokens = {name: run_implementation(name, contestants, 1, greedy=True).tokens.long().cpu() for name in implementations}
    # Warm the VQ decoder up too (the pipeline's greedy run stops at the tokens), and time it
    device = contestants.input_ids.device
    start = time.perf_counter()
    contestants.model.decode_image_tokens(next(iter(tokens.values())).to(device))
    synchronize(device)
    report = {"tokens": {}, "vq_decode_seconds_per_image": time.perf_counter() - start}
    for name, found in tokens.items():
        report["tokens"][name] = {}
        for baseline in ("reference", "ours"):
            if baseline in tokens and baseline != name:
                differ = (found != tokens[baseline]).nonzero()
                report["tokens"][name][f"vs_{baseline}"] = {
                    "identical": bool(differ.numel() == 0),
                    "first_difference": int(differ[0, -1]) if differ.numel() else None,
                    "agreement": float((found == tokens[baseline]).float().mean()),
                }
    required = required_matches(dtype, implementations)
    report["required"] = [f"{name} == {baseline}" for name, baseline in required]
    report["passed"] = all(report["tokens"][name][f"vs_{baseline}"]["identical"] for name, baseline in required)
    return report


def describe_greedy_check(report: dict) -> str:
    parts = []
    for name, comparisons in report["tokens"].items():
        for key, result in comparisons.items():
            found = "identical" if result["identical"] else f"differ from step {result['first_difference']}"
            parts.append(f"{name} {key.replace('_', ' ')}: {found}")
    return "; ".join(parts)


# ---------------------------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------------------------


def format_table(measurements: list[Measurement]) -> str:
    header = (
        "| implementation | dtype | batch | s | s/image | image tokens/s | passes | tokens/pass | drafts kept | "
        "peak MiB | +MiB/image |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    lines = [header]
    for item in measurements:
        peak = f"{item.peak_memory_mib:.0f}" if item.peak_memory_mib is not None else "n/a"
        extra = f"{item.extra_memory_per_image_mib:.1f}" if item.extra_memory_per_image_mib is not None else "n/a"
        kept = f"{item.draft_acceptance_rate:.2f}" if item.draft_acceptance_rate is not None else "-"
        lines.append(
            f"| {item.implementation} | {item.dtype} | {item.batch_size} | {item.seconds:.2f} | "
            f"{item.seconds_per_image:.2f} | {item.tokens_per_second:.1f} | {item.forward_passes} | "
            f"{item.tokens_per_pass:.2f} | {kept} | {peak} | {extra} |"
        )
    return "\n".join(lines)


def ratios(measurements: list[Measurement]) -> list[dict]:
    """Tokens/s of each of our implementations over our sequential path's, the built-in's and the reference loop's,
    per dtype and batch."""
    speed = {(m.implementation, m.dtype, m.batch_size): m.tokens_per_second for m in measurements}
    rows = []
    for (name, dtype, batch_size), value in speed.items():
        if name in ("builtin", "reference"):
            continue
        row = {"implementation": name, "dtype": dtype, "batch_size": batch_size}
        for baseline in ("ours", "builtin", "reference"):
            other = speed.get((baseline, dtype, batch_size))
            row[f"over_{baseline}"] = value / other if other else None
        rows.append(row)
    return rows


def format_ratios(rows: list[dict]) -> str:
    lines = [
        "| implementation | dtype | batch | / ours (sequential) | / built-in | / reference |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        keys = ("over_ours", "over_builtin", "over_reference")
        cells = [f"{row[key]:.2f}x" if row[key] is not None else "n/a" for key in keys]
        lines.append(f"| {row['implementation']} | {row['dtype']} | {row['batch_size']} | {' | '.join(cells)} |")
    return "\n".join(lines)


def describe_machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            name = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (
        f"{name} CPU, {os.cpu_count()} cores, {torch.get_num_threads()} torch "
        f"threads ({torch.backends.cpu.get_cpu_capability()}), torch {torch.__version__}"
    )


# ---------------------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------------------


def main(args: BenchmarkArguments) -> dict:
    import transformers

    from transformers_janus.conversion import JanusConversionError, janus_pro_to_janus
    from transformers_janus.fast_image_decoding import prepacking_unsupported_reason

    if args.num_threads is not None:
        torch.set_num_threads(args.num_threads)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    device = torch.device(args.device)

    # Build the model once, in float32; other dtypes are casts of the same weights
    if args.model == "random":
        tokenizer = build_tokenizer()
        model = build_model(args, tokenizer)
        pipeline = build_pipeline(model, tokenizer)
    else:
        pipeline = load_pipeline(args)
        model = pipeline.model
    input_ids = pipeline.encode_prompt([args.prompt], None, None, 1, device)["input_ids"][0]
    config = model.config
    logger.info(
        f"Model: LLM hidden {config.text_config.hidden_size}, {config.text_config.num_hidden_layers} layers, "
        f"{config.text_config.num_attention_heads} heads, MLP {config.text_config.intermediate_size}; "
        f"{config.num_image_tokens} image tokens ({config.image_token_grid}x{config.image_token_grid}), codebook "
        f"{config.vq_config.num_vq_embeddings}, image {config.image_size}px; prompt {input_ids.shape[0]} tokens; "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters"
    )
    logger.info(f"Machine: {describe_machine(device)}")

    measurements, verification, skipped = [], {}, {}
    for dtype in args.dtypes:
        model.to(getattr(torch, dtype))
        implementations = list(args.implementations)
        reason = prepacking_unsupported_reason(model)
        if reason is not None and any(name.endswith("_prepacked") for name in implementations):
            implementations = [name for name in implementations if not name.endswith("_prepacked")]
            skipped[dtype] = f"prepacked implementations: {reason}"
            logger.info(f"[{dtype}] skipping the prepacked implementations: {reason}")
        builtin = None
        if "builtin" in implementations:
            try:
                builtin = janus_pro_to_janus(model).eval()
            except JanusConversionError as error:  # e.g. the shapes model's VQ (16 norm groups; the built-in has 32)
                implementations.remove("builtin")
                skipped[dtype] = "; ".join(filter(None, [skipped.get(dtype), f"builtin: {error}"]))
                logger.info(f"[{dtype}] skipping the built-in: {error}")
        contestants = Contestants(
            model=model,
            builtin=builtin,
            pipeline=pipeline,
            input_ids=input_ids,
            args=args,
        )
        # Warm-up (and equal-work check): one greedy image from each implementation
        if args.check_greedy:
            start = time.perf_counter()
            verification[dtype] = report = check_greedy_tokens(contestants, implementations, dtype)
            logger.info(
                f"[{dtype}] greedy tokens ({time.perf_counter() - start:.1f}s): {describe_greedy_check(report)}. "
                f"Required identical: {', '.join(report['required']) or 'none'}: "
                f"{'PASSED' if report['passed'] else 'FAILED'}. VQ decode: "
                f"{report['vq_decode_seconds_per_image']:.2f} s/image"
            )
        for batch_size in args.batch_sizes:
            for name in implementations:
                if not args.check_greedy:
                    run_implementation(name, contestants, batch_size, greedy=False)
                measurement = measure(name, contestants, batch_size, dtype)
                measurements.append(measurement)
                logger.info(
                    f"[{dtype}] {name:18s} batch {batch_size}: {measurement.tokens_per_second:8.1f} tokens/s, "
                    f"{measurement.seconds_per_image:6.2f} s/image"
                )
        contestants.builtin = None

    ratio_rows = ratios(measurements)
    logger.info("\n" + format_table(measurements))
    logger.info("\n" + format_ratios(ratio_rows))
    results = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": describe_machine(device),
        "arguments": asdict(args),
        "num_image_tokens": config.num_image_tokens,
        "prompt_tokens": int(input_ids.shape[0]),
        "measurements": [asdict(item) for item in measurements],
        "ratios": ratio_rows,
        "skipped": skipped,
        "greedy_check": verification,
        "greedy_check_passed": all(report["passed"] for report in verification.values()),
    }
    if args.output_json:
        Path(args.output_json).write_text(json.dumps(results, indent=2) + "\n")
    failed = [dtype for dtype, report in verification.items() if not report["passed"]]
    if failed:
        raise RuntimeError(f"Greedy tokens that must be identical differ in {failed}: {verification}")
    return results


def make_parser():
    from transformers import HfArgumentParser

    return HfArgumentParser(BenchmarkArguments)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    (arguments,) = make_parser().parse_args_into_dataclasses()
    main(arguments)
