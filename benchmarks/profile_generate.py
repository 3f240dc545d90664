"""
Where the time of one image goes: `torch.profiler` over a whole `generate_images` call, sequential and
`decoding="jacobi"`, on the shipped shapes model (or another checkpoint), grouped into the parts of a decoding step.

    python benchmarks/profile_generate.py
    python benchmarks/profile_generate.py --model path/to/checkpoint --dtype bfloat16 --batch_size 8
"""

import json
import logging
import time
from dataclasses import dataclass, field

import torch


logger = logging.getLogger("profile_generate")

# The profiler's operator names, grouped by what they serve in a decoding step
GROUPS = {
    "matrix products (linear layers, image head)": ("aten::addmm", "aten::mm", "aten::bmm", "aten::matmul", "aten::linear"),
    "attention (SDPA)": ("aten::_scaled_dot_product", "aten::scaled_dot_product"),
    "KV cache (concatenation, copies, crop)": ("aten::cat", "aten::copy_", "aten::index_copy_", "aten::slice"),
    "sampling and verification (softmax, cumsum, searchsorted, gather)": (
        "aten::softmax", "aten::_softmax", "aten::cumsum", "aten::searchsorted", "aten::gather", "aten::scatter",
        "aten::sort", "aten::topk", "aten::argmax",
    ),
    "elementwise (norms, activations, rotary, guidance)": (
        "aten::mul", "aten::add", "aten::sub", "aten::pow", "aten::mean", "aten::rsqrt", "aten::silu", "aten::gelu",
        "aten::neg", "aten::div", "aten::where", "aten::lt", "aten::eq", "aten::clamp",
    ),
}


@dataclass
class ProfileArguments:
    """
    Args:
        model: `shapes` (`transformers_janus.DEFAULT_MODEL`) or a checkpoint directory.
        prompt: The text of every image.
        dtype: Precision of the model.
        batch_size: Images per call.
        jacobi_window: Positions per pass with `decoding="jacobi"`.
        num_threads: CPU threads for torch.
        output_json: Also write the results to this file.
    """

    model: str = field(default="shapes", metadata={"help": "`shapes` (the shipped model) or a checkpoint."})
    prompt: str = field(default="a photo of a red square and a green circle", metadata={"help": "The prompt."})
    dtype: str = field(default="float32", metadata={"help": "float32 or bfloat16."})
    batch_size: int = field(default=1, metadata={"help": "Images per call."})
    jacobi_window: int = field(default=16, metadata={"help": "Positions per pass with decoding='jacobi'."})
    num_threads: int | None = field(default=None, metadata={"help": "CPU threads for torch."})
    output_json: str | None = field(default=None, metadata={"help": "Also write the results to this file."})


def group_of(name: str) -> str:
    for group, prefixes in GROUPS.items():
        if name.startswith(prefixes):
            return group
    return "other operators"


def profile_call(generate) -> dict:
    """Self CPU time per group of operators of one call, and the wall time it took under the profiler."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        start = time.perf_counter()
        output = generate()
        wall = time.perf_counter() - start
    groups: dict[str, float] = {}
    for event in profiler.key_averages():
        groups[group_of(event.key)] = groups.get(group_of(event.key), 0.0) + event.self_cpu_time_total / 1e6
    operators = sum(groups.values())
    # what no operator accounts for: Python, module dispatch, the profiler's own cost
    groups["Python and dispatch (no operator)"] = max(wall - operators, 0.0)
    return {
        "wall_seconds": wall,
        "forward_passes": output.num_forward_passes,
        "seconds_per_pass": wall / output.num_forward_passes,
        "groups": {name: seconds / wall for name, seconds in sorted(groups.items(), key=lambda item: -item[1])},
    }


def main(args: ProfileArguments) -> dict:
    import transformers

    from transformers_janus import DEFAULT_MODEL, JanusProImagePipeline

    if args.num_threads is not None:
        torch.set_num_threads(args.num_threads)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    pipe = JanusProImagePipeline.from_pretrained(DEFAULT_MODEL if args.model == "shapes" else args.model)
    model = pipe.model.eval().to(getattr(torch, args.dtype))
    inputs = pipe.processor.prepare_image_generation_inputs([args.prompt] * args.batch_size)

    def generate(decoding: str):
        generators = [torch.Generator().manual_seed(row) for row in range(args.batch_size)]
        return model.generate_images(
            **inputs, generator=generators, decoding=decoding, jacobi_window=args.jacobi_window
        )

    results = {"arguments": vars(args), "torch": torch.__version__, "threads": torch.get_num_threads()}
    for decoding in ("sequential", "jacobi"):
        generate(decoding)  # warm-up
        results[decoding] = report = profile_call(lambda: generate(decoding))
        lines = "\n".join(f"  {share:6.1%}  {name}" for name, share in report["groups"].items())
        logger.info(
            f"{decoding}: {report['wall_seconds']:.2f} s under the profiler, {report['forward_passes']} forward "
            f"passes, {report['seconds_per_pass'] * 1000:.1f} ms per pass\n{lines}"
        )
    if args.output_json:
        with open(args.output_json, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2)
    return results


if __name__ == "__main__":
    from transformers import HfArgumentParser

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    (arguments,) = HfArgumentParser(ProfileArguments).parse_args_into_dataclasses()
    main(arguments)
