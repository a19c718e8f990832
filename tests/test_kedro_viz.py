"""kedro-viz: `kedro viz build --include-previews` lists every pipeline, layers and previews."""

from __future__ import annotations

import json

import pytest

from tests.conftest import kedro_cli

pytestmark = pytest.mark.slow


def test_viz_build_lists_pipelines_layers_and_previews(kedro_project):
    kedro_cli(
        kedro_project, "run", "--env=test", "--params=clip_finetune.train.max_epochs=1"
    )  # the main job
    kedro_cli(kedro_project, "viz", "build", "--include-previews")

    api = kedro_project / "build" / "api"
    main = json.loads((api / "main").read_text())
    pipelines = {p["id"] for p in main["pipelines"]}
    assert {
        "__default__",
        "ingestion",
        "image_processing",
        "embeddings",
        "probing",
        "tuning",
    } <= pipelines
    data = {n["name"]: n for n in main["nodes"] if n["type"] == "data"}
    assert not [name for name, n in data.items() if not n.get("layer")], (
        "every dataset sits in a layer"
    )

    def details(name: str) -> dict:
        return json.loads((api / "nodes" / data[name]["id"]).read_text())

    emb = details("tiny_ruclip.embeddings")
    assert emb["preview_type"] == "TablePreview"
    assert emb["preview"]["columns"] == ["id", "text[:4]", "image[:4]"]
    assert details("processed_images")["preview_type"] == "ImagePreview"
    assert details("tiny_ruclip.checkpoint")["preview_type"] == "JSONPreview"
    assert details("products")["preview_type"] == "TablePreview"
