"""kill -9 during a run, then the next run: its results equal an uninterrupted run's.

Every case runs ``kedro run --pipelines=<case>`` in a subprocess that is killed with
SIGKILL right after it began writing ``kill_at`` (:mod:`tests.faults.inject`), checks what
the kill left (the previous file intact, no partial result), reruns the same command and
compares the results with one uninterrupted reference run of the tiny demo, shared by all
cases. A new step adds its case to :data:`CASES` (one line; its pipeline joins the
reference run), e.g. for a classification step that checkpoints ``state.pt``::

    FaultCase("classification", "classification", "state.pt", nth=2,
              reset=("06_models/test/classifier*",), results=("06_models/test/classifier/*",)),
"""

from __future__ import annotations

import pytest

from tests.conftest import kedro_cli, make_project
from tests.faults.harness import (
    FaultCase,
    assert_same,
    copy_project,
    delete,
    run_killed,
    snapshot,
    temporaries,
)

pytestmark = pytest.mark.slow

T = "test"  # the catalogue of make_project's test environment

CASES = [
    # resumable: processed images are complete files, the rerun does the rest
    FaultCase(
        "image_processing",
        "image_processing",
        kill_at="D0*.jpg",
        nth=25,
        reset=(f"02_intermediate/{T}/images", f"02_intermediate/{T}/image_manifest.parquet"),
        results=(
            f"02_intermediate/{T}/images/*/*.jpg",  # not the shard manifest, done after the kill
            f"02_intermediate/{T}/image_manifest.parquet",
            f"08_reporting/{T}/image_quality_report.csv",
        ),
    ),
    # atomic saves through kedro-datasets (the project hook): the old table survives
    FaultCase(
        "products_parquet",
        "ingestion",
        kill_at="products.parquet",
        results=(f"03_primary/{T}/products.parquet", f"08_reporting/{T}/*quality_report.csv"),
    ),
    FaultCase(
        "quality_report_csv",
        "ingestion",
        kill_at="ingestion_quality_report.csv",
        results=(f"03_primary/{T}/products.parquet", f"08_reporting/{T}/*quality_report.csv"),
    ),
    # sharded embeddings (3 shards of 40): killed while writing the second shard, the
    # rerun resumes there; its views and NPZ export equal an uninterrupted run's
    FaultCase(
        "embeddings_shards",
        "embeddings",
        kill_at="shard-00001.parquet",
        reset=(f"04_feature/{T}/embeddings",),
        results=(f"04_feature/{T}/embeddings/*/*.npy", f"04_feature/{T}/embeddings/*.npz"),
    ),
    # resumable training on the engine: resumed from last.ckpt, then the rest
    FaultCase(
        "clip_finetune",
        "clip_finetune",
        kill_at="last.ckpt",
        nth=2,
        reset=(f"06_models/{T}/clip_finetune", f"06_models/{T}/tiny_ruclip_finetuned"),
        results=(
            f"06_models/{T}/tiny_ruclip_finetuned/**/*",
            f"08_reporting/{T}/clip_finetune_history.csv",
            f"08_reporting/{T}/clip_finetune_retrieval.csv",
        ),
    ),
    FaultCase(
        "captioning_training",
        "captioning",
        kill_at="last.ckpt",
        nth=3,
        reset=(f"06_models/{T}/captioner", f"06_models/{T}/captioner_training"),
        results=(
            f"06_models/{T}/captioner/*",
            f"08_reporting/{T}/captioning_training_history.csv",
            f"08_reporting/{T}/captioning_metrics.csv",
        ),
    ),
    # Lightning checkpoints: resumed from last.ckpt, the same model and metrics
    FaultCase(
        "classification_training",
        "classification",
        kill_at="last.ckpt",
        nth=2,
        reset=(f"06_models/{T}/classification", f"07_model_output/{T}/classification"),
        results=(
            f"06_models/{T}/classification/category/model/model.safetensors",
            f"07_model_output/{T}/classification/category_metrics.csv",
        ),
    ),
]

#: The tiny demo, sized for seconds per step: cheap probing, 3 fine-tuning epochs, a
#: one-layer captioner that checkpoints every 2 steps.
ENV = {
    "parameters_embeddings.yml": """
        embeddings:
          shard_size: 40
    """,
    "parameters_probing.yml": """
        probing:
          modalities: [text]
          probes: {logreg: {C: 1.0, max_iter: 200}, mlp: {max_iter: 50}}
    """,
    "parameters_clip_finetune.yml": """
        clip_finetune:
          train: {max_epochs: 3, learning_rate: 5.0e-4, num_workers: 1}
    """,
    "parameters_captioning.yml": """
        captioning:
          models:
            small: {vocab_size: 600, encoder_layers: 1, encoder_width: 64, encoder_heads: 2,
                    encoder_mlp: 128, decoder_layers: 1, decoder_width: 64, decoder_heads: 2,
                    n_positions: 64, max_target_length: 48}
          training: {pretrain_max_epochs: 1, max_epochs: 2, batch_size: 16,
                     sample_images: 0, num_threads: 1, n_decode_workers: 1}
          evaluation: {decodings: [greedy], num_threads: 1}
          report: {n_examples: 4}
    """,
}
ENV["parameters_classification.yml"] = """
    classification:
      image_size: 32
      training: {max_epochs: 3, patience: null, num_threads: 1}
      export: {formats: [onnx]}
      tasks: {tags: null, subcategory_retrieval: null}
"""
UPSTREAM = ("ingestion", "image_processing", "embeddings")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run of every case's pipelines (and what they need)."""
    project = make_project(tmp_path_factory.mktemp("faults") / "reference", 120, ENV)
    names = dict.fromkeys([*UPSTREAM, *(n for c in CASES for n in (*c.needs, c.pipelines))])
    kedro_cli(project, "run", f"--pipelines={','.join(names)}", "--env=test")
    return project


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_a_run_killed_mid_write_then_rerun_equals_an_uninterrupted_run(case, reference, tmp_path):
    project = copy_project(reference, tmp_path / "project")
    delete(project, case.reset)
    before = snapshot(project, case.results)
    expected = snapshot(reference, case.results)
    assert expected, f"{case.name}: the reference run wrote none of {case.results}"

    command = ["kedro", "run", f"--pipelines={case.pipelines}", "--env=test"]
    run_killed(project, command, case.kill_at, case.nth)
    after_kill = snapshot(project, case.results)
    if not case.reset:  # an atomic save: the previous results are all still there, intact
        assert_same(after_kill, before, f"{case.name} after the kill")
    else:  # a resumable step: what was written is complete, nothing else
        for key, value in after_kill.items():
            assert_same(value, expected[key], f"{case.name} after the kill: {key}")

    kedro_cli(project, *command[1:])
    assert_same(snapshot(project, case.results), expected, case.name)
    assert temporaries(project) == []  # the rerun removed what the killed writer left
