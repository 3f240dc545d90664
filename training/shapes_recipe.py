# /// script
# dependencies = [
#     "transformers-janus[train]",
# ]
# ///
"""
# The whole shapes-world recipe (docs/shapes.md): data, tokenizer, VQ autoencoder, SigLIP, LLM, stages I-III, scores
python training/shapes_recipe.py --config training/configs/shapes/recipe.yaml --output_dir runs/shapes

# The few-minute smoke version of the same command (what CI runs)
python training/shapes_recipe.py --config training/configs/shapes/recipe_smoke.yaml --output_dir runs/shapes-smoke

Each part writes its own folder under `output_dir` and is skipped when that folder is complete, so a run that stopped
goes on from its last finished part when started again with the same arguments. A finished part records the arguments
it was made from (`PART_INPUTS`); a run whose arguments differ from them refuses to reuse it.
"""

from dataclasses import dataclass, field


@dataclass
class RecipeArguments:
    """
    Args:
        output_dir (`str`):
            Where every part goes: `data/`, `components/{tokenizer,vq,vision}/`, `init/`, `llm/`, `stage1/`,
            `stage2/`, `stage3/` (the final model), `export/` (the final model in the form meant to ship
            inside the package: bfloat16 weights, no code copies, and `evaluation_sample.json`, a slice of the
            evaluation any install can rerun), `eval/scores.json` (the exported model's scores; its images in
            `eval/images/`), `report/` (`loss_curves.png`, `samples.png`: the first four prompts of each category),
            and `recipe_log.jsonl` (one line per part, with its wall time).
        seed (`int`, *optional*, defaults to 0):
            Seeds the data, every component's initialisation and training, and the stages (`--seed` of train.py).
        num_understanding / num_text / num_generation / num_stage1 (`int`):
            Understanding images (a conversation each), text conversations, text-to-image and class-name images.
        num_eval_prompts_per_tag / num_eval_vqa_images (`int`):
            Held-out evaluation: GenEval-style prompts per category, and unseen images for VQA.
        vocab_size (`int`, *optional*, defaults to 1024):
            Most BPE tokens (the world's text needs fewer; the tokenizer stops when no merge is left).
        vq_steps / vq_batch_size / vision_steps / vision_batch_size (`int`):
            Training of the VQ autoencoder and pretraining of SigLIP.
        vq_eval_scenes (`int`, *optional*, defaults to 500):
            Unseen scenes (and, 2/5 as many, scenes with a held-out pair) whose VQ reconstructions the detector reads.
        vq_background_share (`float`, *optional*, defaults to 0.5):
            After training, the VQ codes background patches hold at least this share of the uses of are merged into
            one (`shapes.autoencoder.merge_background_codes`: a background code then no longer depends on objects
            later in raster order) and the decoder alone is refined on them to the bar; 0 leaves the codes as trained.
        text_config (`str`, *optional*):
            JSON overrides of the small Llama's config (`transformers_janus.shapes.assembly.TEXT_CONFIG`).
        vq_config / vision_config (`str`, *optional*):
            JSON overrides of the VQ autoencoder's (`VQ_CONFIG`) and SigLIP's (`VISION_CONFIG`) configs, e.g. a 16x VQ
            (`{"block_out_channels": [16, 32, 64, 128, 128]}`) with SigLIP `{"patch_size": 16}`: both encoders must
            give the same token grid, checked before any part runs.
        llm_steps / stage1_steps / stage2_steps / stage3_steps (`int`, *optional*):
            Optimizer steps of the LLM's text pretraining and of each stage; the stage config's by default.
        stage_configs_dir (`str`, *optional*, defaults to `training/configs/shapes`):
            Folder of `llm.yaml`, `stage1.yaml`, `stage2.yaml`, `stage3.yaml` (train.py configs).
        stage3_mix_ratio (`str`, *optional*):
            Stage III's understanding:text:generation ratio instead of the config's 5:1:4 (for the ablation).
        stage3_seed (`int`, *optional*):
            Seed of stage III's training (its data order and caption drops) instead of `seed`, which still seeds the
            data, the components, the earlier stages and the evaluation: a second stage-III arm on the same stage II
            measures the seed noise of a stage-III comparison.
        understanding_encoder (`str`, *optional*, defaults to `"siglip"`):
            `siglip` (Janus-Pro's decoupled encoders) or `vq`: one shared encoder, understanding reading the VQ codes
            through the generation embedding and adaptor (`JanusProConfig.understanding_encoder`, for the ablation).
        mixed_precision (`str`, *optional*, defaults to `"auto"`):
            `no` or `bf16` autocast (float32 master weights) for SigLIP's pretraining and the stages (train.py's
            `--mixed_precision`); `auto` is `bf16` where the CPU has bfloat16 matrix instructions (AMX or AVX-512
            BF16: 1.8x the float32 steps on an Intel Xeon with AMX) and `no` elsewhere. The VQ autoencoder trains in
            float32 always (its nearest-code search is what the codes are).
        eval_guidance_scale (`float`, defaults to 5.0) / eval_batch_size (`int`, defaults to 24):
            Classifier-free guidance and batch size (images; twice as many VQA questions) of the evaluation.
    """

    output_dir: str = field(metadata={"help": "Folder of every part of the recipe."})
    seed: int = field(default=0, metadata={"help": "Seeds data, components and stages."})
    num_understanding: int = field(default=4000, metadata={"help": "Understanding images."})
    num_text: int = field(default=4000, metadata={"help": "Text conversations."})
    num_generation: int = field(default=6000, metadata={"help": "Text-to-image images."})
    num_stage1: int = field(default=1500, metadata={"help": "Class-name images for stage I."})
    num_eval_prompts_per_tag: int = field(default=20, metadata={"help": "Evaluation prompts per GenEval category."})
    num_eval_vqa_images: int = field(default=100, metadata={"help": "Unseen images for VQA evaluation."})
    vocab_size: int = field(default=1024, metadata={"help": "Most BPE tokens."})
    vq_steps: int = field(default=1000, metadata={"help": "VQ autoencoder steps."})
    vq_batch_size: int = field(default=32, metadata={"help": "VQ autoencoder batch (crops)."})
    vq_eval_scenes: int = field(default=500, metadata={"help": "Unseen scenes the VQ's reconstructions are scored on."})
    vq_min_accuracy: float = field(default=0.0, metadata={
        "help": "Bar on the VQ: share of 200 check scenes the detector reads right in its reconstructions; below it "
                "the VQ trains on in rounds of vq_extra_steps whole-image steps, and the recipe stops if still below."})
    vq_extra_steps: int = field(default=300, metadata={"help": "Whole-image VQ steps per round under the bar."})
    vq_extra_rounds: int = field(default=3, metadata={"help": "Most rounds of vq_extra_steps."})
    vq_background_share: float = field(default=0.5, metadata={
        "help": "Merge the VQ codes background patches hold at least this share of the uses of into one (0: off)."})
    vision_steps: int = field(default=300, metadata={"help": "SigLIP pretraining steps."})
    vision_batch_size: int = field(default=32, metadata={"help": "SigLIP pretraining batch."})
    text_config: str | None = field(default=None, metadata={"help": "JSON overrides of the Llama config."})
    vq_config: str | None = field(default=None, metadata={"help": "JSON overrides of the VQ config."})
    vision_config: str | None = field(default=None, metadata={"help": "JSON overrides of the SigLIP config."})
    llm_steps: int | None = field(default=None, metadata={"help": "LLM text-pretraining steps (llm.yaml's)."})
    stage1_steps: int | None = field(default=None, metadata={"help": "Stage I steps (stage1.yaml's)."})
    stage2_steps: int | None = field(default=None, metadata={"help": "Stage II steps (stage2.yaml's)."})
    stage3_steps: int | None = field(default=None, metadata={"help": "Stage III steps (stage3.yaml's)."})
    stage_configs_dir: str = field(default="training/configs/shapes", metadata={"help": "Folder of the stage configs."})
    stage3_mix_ratio: str | None = field(default=None, metadata={"help": "Stage III ratio instead of 5:1:4."})
    stage3_seed: int | None = field(default=None, metadata={"help": "Stage III's training seed instead of --seed."})
    understanding_encoder: str = field(default="siglip", metadata={
        "help": "siglip (decoupled encoders) or vq (one shared VQ encoder, the ablation).",
        "choices": ["siglip", "vq"]})
    mixed_precision: str = field(default="auto", metadata={"help": "auto, no or bf16.",
                                                            "choices": ["auto", "no", "bf16"]})
    eval_guidance_scale: float = field(default=5.0, metadata={"help": "CFG weight of the evaluation."})
    eval_batch_size: int = field(default=24, metadata={"help": "Evaluation batch size."})


# What each part is made from: the arguments it reads, and the parts it reads (whose arguments it inherits). A finished
# part records them in `.complete`; a later run with other values refuses to reuse it instead of mixing runs.
PART_INPUTS = {
    "data": ((), ("seed", "num_understanding", "num_text", "num_generation", "num_stage1", "num_eval_prompts_per_tag",
                  "num_eval_vqa_images")),
    "components/tokenizer": (("data",), ("vocab_size",)),
    "components/vq": (("data",), ("vq_steps", "vq_batch_size", "vq_eval_scenes", "vq_min_accuracy", "vq_extra_steps",
                                  "vq_extra_rounds", "vq_background_share", "vq_config")),
    "components/vision": (("data",), ("vision_steps", "vision_batch_size", "vision_config", "mixed_precision")),
    "init": (("components/tokenizer", "components/vq", "components/vision"), ("text_config", "understanding_encoder")),
    "llm": (("init",), ("llm_steps", "mixed_precision")),
    "stage1": (("llm",), ("stage1_steps",)),
    "stage2": (("stage1",), ("stage2_steps",)),
    "stage3": (("stage2",), ("stage3_steps", "stage3_mix_ratio", "stage3_seed")),
    "export": (("stage3",), ()),
    "eval": (("export",), ("eval_guidance_scale", "eval_batch_size")),
    "report": (("eval",), ()),
}
# The train.py config each training part reads from `stage_configs_dir` (recorded by its contents' SHA-256).
STAGE_CONFIGS = {"llm": "llm.yaml", "stage1": "stage1.yaml", "stage2": "stage2.yaml", "stage3": "stage3.yaml"}


class Recipe:
    """The parts of the recipe, in order; each one's output folder is written atomically and skipped when done."""

    def __init__(self, args: RecipeArguments):
        from pathlib import Path

        self.args = args
        self.root = Path(args.output_dir)
        self.root.mkdir(parents=True, exist_ok=True)
        self.log_path = self.root / "recipe_log.jsonl"
        self.mixed_precision = resolve_mixed_precision(args.mixed_precision)
        self.vq_config, self.vision_config = component_configs(args.vq_config, args.vision_config)

    def part_inputs(self, name: str) -> dict:
        """The arguments part `name` is made from, its own and those of the parts it reads (`PART_INPUTS`)."""
        parts, arguments = PART_INPUTS[name]
        inputs = {}
        for part in parts:
            inputs.update(self.part_inputs(part))
        for argument in arguments:
            # The precision that ran, not `auto`: the same `auto` resolves differently on another CPU.
            inputs[argument] = self.mixed_precision if argument == "mixed_precision" else getattr(self.args, argument)
        if name in STAGE_CONFIGS:
            import hashlib
            from pathlib import Path

            config = Path(self.args.stage_configs_dir) / STAGE_CONFIGS[name]
            inputs[f"{STAGE_CONFIGS[name]} sha256"] = hashlib.sha256(config.read_bytes()).hexdigest()
        return inputs

    def log(self, record: dict) -> None:
        import json

        print(json.dumps(record), flush=True)
        with open(self.log_path, "a") as log:
            log.write(json.dumps(record) + "\n")

    def part(self, name: str, function) -> None:
        """Run `function(staging_dir)` unless `name/` is complete; the folder appears only once it is."""
        import json
        import shutil
        import time

        target = self.root / name
        inputs = self.part_inputs(name)
        if (target / ".complete").exists():
            recorded = (target / ".complete").read_text()
            # An empty marker is a part finished before the inputs were recorded: reused as before.
            changed = {key: (value, inputs.get(key)) for key, value in json.loads(recorded or "{}").items()
                       if inputs.get(key) != value}
            if changed:
                raise ValueError(
                    f"{target} was made with other arguments than this run's (argument: (that part's, this run's)): "
                    f"{changed}. Give this run another --output_dir (copy into it only the parts made from the same "
                    f"arguments, as docs/shapes.md's arms do), or delete {target} and the parts made from it."
                )
            print(f"[recipe] {name}: done already, skipped", flush=True)
            return
        staging = self.root / f".{name.replace('/', '_')}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        if target.exists():
            shutil.rmtree(target)
        staging.mkdir(parents=True)
        print(f"[recipe] {name} ...", flush=True)
        start = time.perf_counter()
        details = function(staging) or {}
        (staging / ".complete").write_text(json.dumps(inputs, sort_keys=True))
        target.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(target)
        self.log({"part": name, "seconds": round(time.perf_counter() - start, 1), **details})

    # The parts ------------------------------------------------------------------------------------------------

    def data(self, staging):
        from transformers_janus.shapes import write_shapes_data

        a = self.args
        staging.rmdir()  # write_shapes_data refuses an existing non-empty folder and writes atomically itself
        files = write_shapes_data(
            staging, a.num_understanding, a.num_text, a.num_generation, seed=a.seed, num_stage1=a.num_stage1,
            num_eval_prompts_per_tag=a.num_eval_prompts_per_tag, num_eval_vqa_images=a.num_eval_vqa_images,
        )
        return {"files": sorted(files)}

    def tokenizer(self, staging):
        from transformers_janus.shapes.tokenizer import conversation_texts, train_tokenizer
        from transformers_janus.training.data import load_samples

        data = self.root / "data"
        texts = []
        for kind, name in (("understanding", "understanding.jsonl"), ("text", "text.jsonl"),
                           ("generation", "generation.jsonl"), ("generation", "generation_stage1.jsonl")):
            texts += conversation_texts(load_samples(str(data / name), kind))
        tokenizer = train_tokenizer(texts, vocab_size=self.args.vocab_size)
        tokenizer.save_pretrained(staging)
        return {"vocab_size": len(tokenizer), "texts": len(texts)}

    def vq(self, staging):
        import json

        import torch
        from diffusers import VQModel

        from transformers_janus import JanusProVQConfig
        from transformers_janus.shapes.autoencoder import (
            merge_background_codes,
            reconstruction_accuracy,
            refine_vq_autoencoder,
            train_vq_autoencoder,
        )

        a = self.args
        torch.manual_seed(a.seed)
        vq = VQModel(**JanusProVQConfig(**self.vq_config).to_diffusers_kwargs())
        with open(staging / "train_log.jsonl", "w") as log:
            def write(record):
                log.write(json.dumps(record) + "\n")
                log.flush()

            train_vq_autoencoder(vq, a.vq_steps, batch_size=a.vq_batch_size, seed=a.seed, log=write)
            checks = refine_vq_autoencoder(vq, a.vq_min_accuracy, steps=a.vq_extra_steps, max_rounds=a.vq_extra_rounds,
                                           batch_size=a.vq_batch_size, seed=a.seed, log=write, step_offset=a.vq_steps)
            steps = a.vq_steps + (len(checks) - 1) * a.vq_extra_steps
            merged = None
            if a.vq_background_share > 0 and checks[-1] >= a.vq_min_accuracy:
                merged = merge_background_codes(vq, min_background_share=a.vq_background_share, seed=a.seed)
                merged["check_accuracies"] = refine_vq_autoencoder(
                    vq, a.vq_min_accuracy, steps=a.vq_extra_steps, max_rounds=a.vq_extra_rounds,
                    batch_size=a.vq_batch_size, seed=a.seed + 50, log=write, step_offset=steps, decoder_only=True)
                steps += (len(merged["check_accuracies"]) - 1) * a.vq_extra_steps
        final_check = (merged["check_accuracies"] if merged else checks)[-1]
        if final_check < a.vq_min_accuracy:
            raise RuntimeError(
                f"The VQ autoencoder's reconstructions are read right for {final_check:.3f} of the check scenes after "
                f"{steps} steps (checks: {checks}{', after merging its background codes: ' if merged else ''}"
                f"{merged['check_accuracies'] if merged else ''}), under "
                f"--vq_min_accuracy {a.vq_min_accuracy}: a generation-side VQ that cannot carry the scene caps every "
                "score. Raise --vq_steps or --vq_extra_rounds (or lower the bar) and rerun: the parts before are kept."
            )
        n = a.vq_eval_scenes
        scores = {"detector_accuracy": reconstruction_accuracy(vq, n, seed=a.seed + 1),
                  "detector_accuracy_held_out_pairs": reconstruction_accuracy(
                      vq, max(1, 2 * n // 5), seed=a.seed + 2, held_out_only=True),
                  "check_accuracies": checks, "steps": steps, "background_merge": merged}
        (staging / "scores.json").write_text(json.dumps(scores, indent=2) + "\n")
        vq.save_pretrained(staging)
        return scores

    def vision(self, staging):
        import json

        import torch
        from transformers import SiglipVisionConfig, SiglipVisionModel

        from transformers_janus.shapes.vision_encoder import feature_spread, pretrain_vision_encoder

        torch.manual_seed(self.args.seed)
        config = SiglipVisionConfig(**self.vision_config, hidden_act="gelu", layer_norm_eps=1e-6, vision_use_head=False)
        vision = SiglipVisionModel(config)
        final = {}
        with open(staging / "train_log.jsonl", "w") as log:
            def write(record):
                final.update(record)
                log.write(json.dumps(record) + "\n")
                log.flush()

            pretrain_vision_encoder(vision, self.args.vision_steps, batch_size=self.args.vision_batch_size,
                                    seed=self.args.seed, log=write,
                                    autocast_dtype=torch.bfloat16 if self.mixed_precision == "bf16" else None)
        vision.save_pretrained(staging)
        return {"patch_accuracy": final.get("patch_accuracy"), "mixed_precision": self.mixed_precision,
                "feature_spread": feature_spread(vision, seed=self.args.seed + 1)}

    def init(self, staging):
        import json

        from diffusers import VQModel
        from transformers import AutoTokenizer, SiglipVisionModel

        from transformers_janus.shapes.assembly import assemble_shapes_model, save_shapes_model

        components = self.root / "components"
        model, processor = assemble_shapes_model(
            AutoTokenizer.from_pretrained(components / "tokenizer"),
            SiglipVisionModel.from_pretrained(components / "vision"),
            VQModel.from_pretrained(components / "vq"),
            text_config=json.loads(self.args.text_config) if self.args.text_config else None,
            seed=self.args.seed,
            understanding_encoder=self.args.understanding_encoder,
        )
        save_shapes_model(model, processor, staging)
        return {"parameters": sum(p.numel() for p in model.parameters()),
                "understanding_encoder": self.args.understanding_encoder}

    def train_stage(self, name: str, previous: str, steps: int | None, data: dict, extra=(), seed: int | None = None):
        """Run train.py with the stage's config (`STAGE_CONFIGS[name]`) from the model in `previous/`."""
        seed = self.args.seed if seed is None else seed

        def run(staging):
            import os
            import sys
            from pathlib import Path

            script = Path(__file__).resolve().parent / "train.py"
            config = Path(self.args.stage_configs_dir) / STAGE_CONFIGS[name]
            command = [sys.executable, str(script), "--config", str(config),
                       "--model_name_or_path", str(self.root / previous), "--output_dir", str(staging),
                       "--seed", str(seed), "--vq_cache_dir", str(self.root / "vq_codes"),
                       "--mixed_precision", self.mixed_precision, *extra]
            for kind, file in data.items():
                command += [f"--{kind}_data", str(self.root / "data" / file)]
            if steps is not None:
                command += ["--max_steps", str(steps)]
            run_child(command, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
            details = {"max_steps": steps, "mixed_precision": self.mixed_precision, "seed": seed}
            if "understanding" in data:
                details["image_reliance"] = self.image_reliance(staging)
            return details

        self.part(name, run)

    def image_reliance(self, model_dir) -> dict | None:
        """Answer loss with the right images against another question's (a blind understanding path shows no gap)."""
        import json

        from transformers_janus import JanusProForConditionalGeneration, JanusProProcessor
        from transformers_janus.shapes.evaluation import image_reliance

        questions = self.root / "data" / "eval_vqa.jsonl"
        if not questions.exists():
            return None
        records = [json.loads(line) for line in questions.read_text().splitlines()]
        model = JanusProForConditionalGeneration.from_pretrained(model_dir).eval()
        return image_reliance(model, JanusProProcessor.from_pretrained(model_dir), records, image_root=questions.parent)

    def evaluate(self, staging):
        import json

        from transformers_janus.shapes.evaluation import SAMPLE_FILE, evaluate_shapes, format_report, sample_agrees

        # The exported model is what ships (weights rounded to bfloat16): its scores are the ones reported.
        result = evaluate_shapes(self.root / "export", self.root / "data", guidance_scale=self.args.eval_guidance_scale,
                                 generation_batch_size=self.args.eval_batch_size,
                                 vqa_batch_size=2 * self.args.eval_batch_size, seed=self.args.seed,
                                 save_dir=staging / "images")
        # What rewrites the evaluation files: write_shapes_data's streams are independent, so these three suffice.
        a = self.args
        result["data_settings"] = {"seed": a.seed, "num_eval_prompts_per_tag": a.num_eval_prompts_per_tag,
                                   "num_eval_vqa_images": a.num_eval_vqa_images}
        (staging / "scores.json").write_text(json.dumps(result, indent=2) + "\n")
        print(format_report(result), flush=True)
        sample = json.loads((self.root / "export" / SAMPLE_FILE).read_text())
        return {"geneval_overall": result["generation"]["scores"]["overall"],
                "vqa_overall": result["vqa"]["scores"]["overall"],
                # The shipped sample was computed alone, in smaller batches: the full run should hold it unchanged.
                "sample_agrees": sample_agrees(sample, result)}

    def export(self, staging):
        import json

        from transformers_janus.shapes.assembly import export_shipped_model
        from transformers_janus.shapes.evaluation import GENERATION_FILE, write_evaluation_sample

        export_shipped_model(self.root / "stage3", staging)
        # The slice of the evaluation the shipped folder carries, so any install can check it reproduces the scores:
        # one prompt per category (the prompt file interleaves the tags) and the first questions.
        lines = (self.root / "data" / GENERATION_FILE).read_text().splitlines()[:6]
        sample = write_evaluation_sample(staging, [json.loads(line) for line in lines], data_seed=self.args.seed,
                                         guidance_scale=self.args.eval_guidance_scale, seed=self.args.seed)
        return {"megabytes": round(sum(f.stat().st_size for f in staging.iterdir()) / 2**20, 1),
                "sample_images_correct": sum(item["correct"] for item in sample["generation"]),
                "sample_answers_correct": sum(item["correct"] for item in sample["vqa"])}

    def report(self, staging):
        import json

        from PIL import Image

        from transformers_janus.shapes.figures import plot_recipe_losses, sample_grid

        plot_recipe_losses(self.root, staging / "loss_curves.png")
        images = self.root / "eval" / "images"
        records = [json.loads(line) for line in (images / "results.jsonl").read_text().splitlines()]
        picks = [r for tag in ("single_object", "two_object", "counting", "colors", "position", "color_attr")
                 for r in [r for r in records if r["tag"] == tag][:4]]
        sample_grid([Image.open(images / r["image"]) for r in picks], [r["prompt"] for r in picks],
                    staging / "samples.png", columns=6, marks=[r["correct"] for r in picks])
        return {"figures": ["loss_curves.png", "samples.png"]}

    def run(self) -> None:
        a = self.args
        understanding, text = "understanding.jsonl", "text.jsonl"
        self.part("data", self.data)
        self.part("components/tokenizer", self.tokenizer)
        self.part("components/vq", self.vq)
        self.part("components/vision", self.vision)
        self.part("init", self.init)
        self.train_stage("llm", "init", a.llm_steps, {"text": text})
        self.train_stage("stage1", "llm", a.stage1_steps,
                         {"understanding": understanding, "generation": "generation_stage1.jsonl"})
        self.train_stage("stage2", "stage1", a.stage2_steps,
                         {"understanding": understanding, "text": text, "generation": "generation.jsonl"})
        self.train_stage("stage3", "stage2", a.stage3_steps,
                         {"understanding": understanding, "text": text, "generation": "generation.jsonl"},
                         extra=("--mix_ratio", a.stage3_mix_ratio) if a.stage3_mix_ratio else (), seed=a.stage3_seed)
        self.part("export", self.export)
        self.part("eval", self.evaluate)
        self.part("report", self.report)
        # A part run again (a rerun after a failure, or an arm's stage III in a copied run folder) is logged again:
        # the latest record of each part is the one that made its folder.
        latest = {record["part"]: record for record in _read_jsonl(self.log_path)}
        total = sum(record["seconds"] for record in latest.values())
        print(f"[recipe] done: the model is {self.root / 'stage3'}; parts logged took {total / 60:.1f} min in all",
              flush=True)


def _die_with_parent():  # runs in the child before exec: Linux sends it SIGTERM when the recipe dies, even by SIGKILL
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (AttributeError, OSError):
        pass


def run_child(command: list[str], env: dict | None = None) -> None:
    """
    Run a stage's train.py and wait for it. Stopping the recipe stops the child too: SIGTERM or Ctrl-C terminates it
    before the recipe exits, and on Linux the child also gets SIGTERM if the recipe is killed outright (two trainings
    on the same cores slow each other down many times over). Raises `CalledProcessError` if the child fails.
    """
    import signal
    import subprocess
    import sys

    preexec = _die_with_parent if sys.platform.startswith("linux") else None
    child = subprocess.Popen(command, env=env, preexec_fn=preexec)
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        returncode = child.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    if returncode:
        raise subprocess.CalledProcessError(returncode, command)


def component_configs(vq_overrides: str | None, vision_overrides: str | None) -> tuple[dict, dict]:
    """The VQ and SigLIP configs with the recipe's JSON overrides; refuses, before any training, unknown fields and
    encoders whose token grids differ (the model reads one grid for both)."""
    import json

    from transformers_janus.shapes.assembly import VISION_CONFIG, VQ_CONFIG

    configs = []
    for name, defaults, overrides in (("vq_config", VQ_CONFIG, vq_overrides), ("vision_config", VISION_CONFIG,
                                                                             vision_overrides)):
        values = json.loads(overrides) if overrides else {}
        if not isinstance(values, dict):
            raise ValueError(f"--{name} must be a JSON object, got {overrides!r}.")
        unknown = sorted(set(values) - set(defaults))
        if unknown:
            raise ValueError(f"--{name} has unknown fields {unknown}; it overrides {sorted(defaults)}.")
        configs.append({**defaults, **values})
    vq, vision = configs
    vq_grid = vision["image_size"] // 2 ** (len(vq["block_out_channels"]) - 1)
    vision_grid = vision["image_size"] // vision["patch_size"]
    if vq_grid != vision_grid:
        raise ValueError(
            f"The VQ gives a {vq_grid}x{vq_grid} token grid ({len(vq['block_out_channels'])} levels at "
            f"{vision['image_size']} px) and SigLIP a {vision_grid}x{vision_grid} one (patch {vision['patch_size']}); "
            "they must be equal: set --vision_config '{\"patch_size\": ...}' to the VQ's downsampling."
        )
    return vq, vision


def resolve_mixed_precision(mixed_precision: str) -> str:
    """`auto` -> `bf16` where oneDNN has bfloat16 matrix kernels on this CPU (AMX / AVX-512 BF16), else `no`."""
    from transformers_janus.utils import cpu_has_bf16_kernels

    if mixed_precision != "auto":
        return mixed_precision
    return "bf16" if cpu_has_bf16_kernels() else "no"


def _read_jsonl(path):
    import json

    return [json.loads(line) for line in open(path)] if path.exists() else []


def make_parser(prog: str | None = None):
    from trl import TrlParser

    return TrlParser((RecipeArguments,), prog=prog)


if __name__ == "__main__":
    (recipe_args,) = make_parser().parse_args_and_config()
    Recipe(recipe_args).run()
