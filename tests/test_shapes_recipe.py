"""The shapes-world recipe end to end, in its few-minute smoke version (the full one is the same command)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "training"))
from shapes_recipe import component_configs, resolve_mixed_precision  # noqa: E402

PARTS = ["data", "components/tokenizer", "components/vq", "components/vision", "init", "llm", "stage1", "stage2",
         "stage3", "export", "eval", "report"]


def run_recipe(output_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(REPO / "training" / "shapes_recipe.py"), "--config",
               str(REPO / "training" / "configs" / "shapes" / "recipe_smoke.yaml"), "--output_dir", str(output_dir),
               "--stage_configs_dir", str(REPO / "training" / "configs" / "shapes"), *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("shapes") / "run"
    result = run_recipe(output_dir)
    assert result.returncode == 0, result.stderr[-4000:]
    return output_dir, result


def test_recipe_runs_every_part_in_order(smoke_run):
    output_dir, _ = smoke_run
    log = [json.loads(line) for line in (output_dir / "recipe_log.jsonl").read_text().splitlines()]
    assert [record["part"] for record in log] == PARTS
    for part in PARTS:
        assert (output_dir / part / ".complete").exists(), part
    assert not list(output_dir.glob(".*.partial"))
    # Each stage ran train.py with the stage config's freeze policy and the recipe's step count.
    for stage in ("llm", "stage1", "stage2", "stage3"):
        steps = [json.loads(line)["step"] for line in (output_dir / stage / "train_log.jsonl").read_text().splitlines()]
        assert steps[-1] == 2, (stage, steps)
    card = (output_dir / "stage3" / "README.md").read_text()  # the model card's training summary
    assert "| `stage` | 3 |" in card and "| `mix_ratio` | `5:1:4` |" in card
    # `--mixed_precision auto` resolved once, for SigLIP and every stage alike.
    resolved = {record["mixed_precision"] for record in log if "mixed_precision" in record}
    assert resolved == {resolve_mixed_precision("auto")}
    assert {record["part"] for record in log if "mixed_precision" in record} == {
        "components/vision", "llm", "stage1", "stage2", "stage3"}
    # The understanding path's checks: SigLIP's feature spread, and after each stage with understanding data the
    # answer loss with each question's own image against another's.
    vision = next(record for record in log if record["part"] == "components/vision")
    assert set(vision["feature_spread"]) == {"token_norm", "mean_norm", "across_image_std"}
    for record in log:
        if record["part"] in ("stage1", "stage2", "stage3"):
            assert record["image_reliance"]["questions"] == 4, record  # the smoke data's 4 evaluation images


def test_auto_mixed_precision_is_bf16_only_where_the_cpu_has_bf16_kernels():
    from transformers_janus.utils import cpu_has_bf16_kernels

    assert resolve_mixed_precision("auto") == ("bf16" if cpu_has_bf16_kernels() else "no")
    assert resolve_mixed_precision("no") == "no" and resolve_mixed_precision("bf16") == "bf16"


def test_recipe_stages_chain_their_weights(smoke_run):
    """Each stage starts from the previous one, trains only its parts (SPEC §5), and the VQ never changes."""
    import torch
    from safetensors.torch import load_file

    output_dir, _ = smoke_run
    weights = {part: load_file(output_dir / part / "model.safetensors") for part in ("init", "llm", "stage1",
                                                                                       "stage2", "stage3")}
    vq = [key for key in weights["init"] if key.startswith("model.vq_model.")]
    vision = [key for key in weights["init"] if key.startswith("model.vision_model.")]
    language = [key for key in weights["init"] if key.startswith("model.language_model.")]
    head = [key for key in weights["init"] if key.startswith("model.gen_head.")]
    changed = lambda a, b, keys: any(not torch.equal(weights[a][k], weights[b][k]) for k in keys)  # noqa: E731
    assert not changed("init", "stage3", vq)  # the VQ tokenizer is frozen throughout
    assert changed("init", "llm", language) and not changed("init", "llm", head + vision)
    assert changed("llm", "stage1", head) and not changed("llm", "stage1", language + vision)
    assert changed("stage1", "stage2", language + head) and not changed("stage1", "stage2", vision)
    assert changed("stage2", "stage3", vision + language)
    # The components went in unchanged.
    from diffusers import VQModel

    trained_vq = VQModel.from_pretrained(output_dir / "components" / "vq").state_dict()
    assert all(torch.equal(weights["init"][f"model.vq_model.{k}"], v) for k, v in trained_vq.items())


def test_recipe_scores_and_components_are_reported(smoke_run):
    output_dir, result = smoke_run
    scores = json.loads((output_dir / "eval" / "scores.json").read_text())
    tags = {"single_object", "two_object", "counting", "colors", "position", "color_attr"}
    assert tags <= set(scores["generation"]["scores"]) and "overall" in scores["generation"]["scores"]
    assert "overall" in scores["vqa"]["scores"]
    vq_scores = json.loads((output_dir / "components" / "vq" / "scores.json").read_text())
    assert 0.0 <= vq_scores["detector_accuracy"] <= 1.0
    # The shipped VQ's background codes are merged: they share one vector, the lowest index of them.
    merge = vq_scores["background_merge"]
    from diffusers import VQModel

    weight = VQModel.from_pretrained(output_dir / "components" / "vq").quantize.embedding.weight
    same = (weight - weight[merge["background_code"]]).norm(dim=1) == 0
    assert merge["merged_codes"] > 1 and int(same.sum()) == merge["merged_codes"]
    assert int(same.nonzero()[0]) == merge["background_code"]
    assert "| tag | accuracy | n |" in result.stdout and "| category | accuracy | n |" in result.stdout
    from PIL import Image

    curves, samples = (Image.open(output_dir / "report" / name) for name in ("loss_curves.png", "samples.png"))
    assert curves.size == (900, 3 * 540)  # the language model, the VQ and SigLIP charts
    assert samples.width > 6 * 256  # six columns of 2x-upscaled 128 px samples


def test_recipe_export_carries_an_evaluation_sample_the_full_evaluation_holds(smoke_run):
    """export/ is the shipped form (no code, float32 on load, its own card) with `evaluation_sample.json`: one prompt
    per GenEval tag and the first questions, with the weights' SHA-256; the full evaluation gives the same verdicts and
    answers as its first images and questions, and a rerun recomputes them."""
    import hashlib

    from transformers_janus.shapes.evaluation import rerun_evaluation_sample, sample_agrees

    output_dir, _ = smoke_run
    export = output_dir / "export"
    assert not list(export.glob("*.py")) and "trust_remote_code" not in (export / "README.md").read_text()
    sample = json.loads((export / "evaluation_sample.json").read_text())
    assert sample["weights_sha256"] == hashlib.sha256((export / "model.safetensors").read_bytes()).hexdigest()
    assert [item["tag"] for item in sample["generation"]] == [
        "single_object", "two_object", "counting", "colors", "position", "color_attr"]
    assert len(sample["vqa"]) == 24 and {item["category"] for item in sample["vqa"]} >= {"position"}
    scores = json.loads((output_dir / "eval" / "scores.json").read_text())
    assert [item["question"] for item in sample["vqa"]] == [p["question"] for p in scores["vqa"]["predictions"][:24]]
    assert sample_agrees(sample, scores)
    log = [json.loads(line) for line in (output_dir / "recipe_log.jsonl").read_text().splitlines()]
    assert [record["sample_agrees"] for record in log if record["part"] == "eval"] == [True]
    recorded, rerun = rerun_evaluation_sample(export)
    assert rerun == recorded


def test_recipe_rerun_skips_finished_parts(smoke_run):
    output_dir, _ = smoke_run
    before = (output_dir / "stage3" / "model.safetensors").read_bytes()
    result = run_recipe(output_dir)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.count("done already, skipped") == len(PARTS)
    assert (output_dir / "stage3" / "model.safetensors").read_bytes() == before


@pytest.mark.parametrize("stop_signal", ["SIGTERM", "SIGKILL"])
def test_stopping_the_recipe_stops_its_training_child(tmp_path, stop_signal):
    """A recipe stopped mid-stage must not leave its train.py running (it would slow every later run on the cores)."""
    import signal
    import time

    if stop_signal == "SIGKILL" and not sys.platform.startswith("linux"):
        pytest.skip("the child learns of its parent's SIGKILL through Linux's PR_SET_PDEATHSIG")
    pid_file = tmp_path / "child.pid"
    child = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    parent = subprocess.Popen(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(REPO / 'training')!r}); "
         f"from shapes_recipe import run_child; run_child([sys.executable, '-c', {child!r}])"]
    )
    deadline = time.monotonic() + 60
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    child_pid = int(pid_file.read_text())
    parent.send_signal(getattr(signal, stop_signal))
    parent.wait(timeout=60)
    for _ in range(200):  # the child is gone (or a zombie about to be reaped by init) within seconds
        try:
            with open(f"/proc/{child_pid}/stat") as handle:
                if handle.read().split()[2] == "Z":
                    break
        except FileNotFoundError:
            break
        time.sleep(0.05)
    else:
        os.kill(child_pid, signal.SIGKILL)
        pytest.fail(f"the training child {child_pid} outlived the recipe stopped by {stop_signal}")


def test_a_stage3_arm_reuses_a_finished_runs_parts_and_cached_codes(smoke_run, tmp_path):
    """docs/shapes.md's arm procedure: the parts before stage III copied from a finished run are skipped, the VQ codes
    cached by its stage II are read, not recomputed, and stage III trains with the arm's ratio and seed."""
    import shutil

    output_dir, _ = smoke_run
    arm = tmp_path / "arm"
    copied = ["data", "components", "init", "llm", "stage1", "stage2", "vq_codes", "recipe_log.jsonl"]
    for name in copied:
        (shutil.copytree if (output_dir / name).is_dir() else shutil.copy2)(output_dir / name, arm / name)
    codes = {path.relative_to(arm): path.stat().st_mtime_ns for path in (arm / "vq_codes").rglob("*") if path.is_file()}
    assert codes
    result = run_recipe(arm, "--stage3_mix_ratio", "7:3:10", "--stage3_seed", "1")
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.count("done already, skipped") == PARTS.index("stage3")
    after = {path.relative_to(arm): path.stat().st_mtime_ns for path in (arm / "vq_codes").rglob("*") if path.is_file()}
    assert after == codes
    # The copied log holds the finished run's records; the arm's parts are logged again after them.
    log = [json.loads(line) for line in (arm / "recipe_log.jsonl").read_text().splitlines()]
    rerun = PARTS[PARTS.index("stage3"):]
    assert [record["part"] for record in log] == PARTS + rerun
    latest = {record["part"]: record for record in log}
    assert latest["stage3"]["seed"] == 1 and latest["stage2"]["seed"] == 0
    total = sum(record["seconds"] for record in latest.values())
    assert f"parts logged took {total / 60:.1f} min in all" in result.stdout
    card = (arm / "stage3" / "README.md").read_text()
    assert "| `mix_ratio` | `7:3:10` |" in card and "| `seed` | 1 |" in card
    assert (arm / "stage3" / "model.safetensors").read_bytes() != (output_dir / "stage3" / "model.safetensors").read_bytes()


def test_a_finished_part_made_from_other_arguments_is_refused_and_kept(tmp_path):
    from shapes_recipe import Recipe, RecipeArguments

    def recipe(**arguments):
        return Recipe(RecipeArguments(output_dir=str(tmp_path), mixed_precision="no",
                                      stage_configs_dir=str(REPO / "training" / "configs" / "shapes"), **arguments))

    made = []

    def make(name):
        def function(staging):
            made.append(name)
            (staging / "made").write_text(name)
        return function

    for name in ("data", "stage3"):
        recipe().part(name, make(name))
    recipe(vq_steps=5).part("data", lambda staging: made.append("again"))  # the data are not made from the VQ
    recipe(eval_batch_size=3).part("stage3", lambda staging: made.append("again"))  # nor stage III from the evaluation
    assert made == ["data", "stage3"]
    # The seed made the data, and through the parts chained on it, stage III.
    for name in ("data", "stage3"):
        with pytest.raises(ValueError, match=r"made with other arguments.*'seed': \(0, 1\).*another --output_dir"):
            recipe(seed=1).part(name, lambda staging: made.append("again"))
        assert (tmp_path / name / "made").read_text() == name
    with pytest.raises(ValueError, match=r"'vq_steps': \(1000, 5\)"):  # the VQ is in the model stage III trains
        recipe(vq_steps=5).part("stage3", lambda staging: made.append("again"))
    with pytest.raises(ValueError, match=r"'stage3_mix_ratio': \(None, '7:3:10'\)"):
        recipe(stage3_mix_ratio="7:3:10").part("stage3", lambda staging: made.append("again"))
    # A part finished before the inputs were recorded (an empty marker) is reused as before.
    (tmp_path / "data" / ".complete").write_text("")
    recipe(seed=1).part("data", lambda staging: made.append("again"))
    assert made == ["data", "stage3"]


def test_a_failing_training_child_fails_the_recipe_part():
    from shapes_recipe import run_child

    with pytest.raises(subprocess.CalledProcessError):
        run_child([sys.executable, "-c", "raise SystemExit(3)"])


def test_component_overrides_must_keep_one_token_grid_for_both_encoders():
    vq, vision = component_configs(None, None)
    assert (vq["num_vq_embeddings"], vision["patch_size"]) == (512, 8)  # the shipped model's 16 x 16 grid
    vq, vision = component_configs('{"block_out_channels": [16, 32, 64, 128, 128]}', '{"patch_size": 16}')
    assert len(vq["block_out_channels"]) == 5 and vision["patch_size"] == 16 and vq["latent_channels"] == 64
    with pytest.raises(ValueError, match=r"8x8 token grid .* 16x16 one \(patch 8\)"):
        component_configs('{"block_out_channels": [16, 32, 64, 128, 128]}', None)
    with pytest.raises(ValueError, match=r"--vq_config has unknown fields \['codebook'\]"):
        component_configs('{"codebook": 1024}', None)
    with pytest.raises(ValueError, match="must be a JSON object"):
        component_configs("[1, 2]", None)
