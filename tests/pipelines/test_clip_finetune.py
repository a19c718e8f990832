"""clip_finetune: pairs, split, bad inputs, the pipeline with SequentialRunner, checkpoints."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
import torch
import yaml
from kedro.io import DataCatalog, DatasetError, MemoryDataset, Version
from kedro.runner import SequentialRunner

from tests.conftest import REPO
from tests.models.clip.helpers import FAST, make_checkpoint, make_pairs, tiny_hf_clip
from vitrina.config import finetune_spec
from vitrina.datasets import ClipCheckpointDataset
from vitrina.models.clip import ClipBundle, ClipFinetuneConfig
from vitrina.models.clip.finetune import fine_tune
from vitrina.models.ruclip import load_ruclip
from vitrina.pipelines.clip_finetune.nodes import (
    finetune_clip,
    make_finetune_pairs,
    split_finetune_pairs,
)
from vitrina.pipelines.clip_finetune.pipeline import finetune_pipeline
from vitrina.pipelines.embeddings.nodes import shard_products_with_checkpoint


def params(**train) -> dict:
    base = yaml.safe_load((REPO / "conf/base/parameters_clip_finetune.yml").read_text())
    p = base["clip_finetune"]
    p.update(output_dir=None, log_model_to_mlflow=False, val_size=0.5)
    p["train"].update({**FAST, "max_epochs": 3, "batch_size": 8, "learning_rate": 3e-3, **train})
    return p


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    """Products and image manifest of the 48 colour × part pairs, and a tiny base model."""
    root = tmp_path_factory.mktemp("clip_catalogue")
    pairs = make_pairs(root / "images")
    products = pairs[["product_id", "title", "group_id"]].assign(description="")
    manifest = pairs[["product_id", "processed_path"]]
    checkpoint = make_checkpoint(root / "tiny", pairs["title"].tolist())
    return products, manifest, checkpoint


def test_pairs_leave_out_empty_titles_and_join_identical_images(catalogue, tmp_path, caplog):
    products, manifest, _ = catalogue
    products = products.copy()
    products.loc[0, "title"] = "   "
    products.loc[1, "title"] = None
    manifest = manifest.copy()
    shutil.copy(manifest.loc[2, "processed_path"], tmp_path / "same.png")
    manifest.loc[5, "processed_path"] = str(
        tmp_path / "same.png"
    )  # product 2's bytes, another title
    manifest = manifest.drop(index=4)  # no processed image
    with caplog.at_level(logging.WARNING):
        pairs = make_finetune_pairs(products, manifest, {"text_field": "title"})
    assert len(pairs) == len(products) - 3
    assert "2 products have an empty title after ingestion" in caplog.text
    assert "1 identical images are shared by 2 products with different titles" in caplog.text
    a, b = (
        pairs.set_index("product_id")
        .loc[[products.loc[2, "product_id"], products.loc[5, "product_id"]]]
        .itertuples()
    )
    assert a.image_key == b.image_key and a.split_group == b.split_group
    assert a.group_id != b.group_id  # different products, joined for the split only
    split = split_finetune_pairs(pairs, {"val_size": 0.5, "split_seed": 0})
    assert split.loc[split.image_key == a.image_key, "split"].nunique() == 1
    with pytest.raises(KeyError, match="clip_finetune.text_field 'name' is not a products column"):
        make_finetune_pairs(products, manifest, {"text_field": "name"})
    with pytest.raises(
        ValueError,
        match="needs at least 2 products with a processed image and a non-empty title, got 0",
    ):
        make_finetune_pairs(products.assign(title=""), manifest, {})


def test_split_is_grouped_and_refuses_a_validation_split_too_small_for_recall_at_10(catalogue):
    products, manifest, _ = catalogue
    pairs = make_finetune_pairs(products, manifest, {})
    split = split_finetune_pairs(pairs, {"val_size": 0.5, "split_seed": 1})
    assert (
        split.groupby("group_id")["split"].nunique().max() == 1
    )  # copies of a combination together
    assert set(split["split"]) == {"train", "val"}
    with pytest.raises(
        ValueError,
        match=r"the validation split has 6 pairs \(48 pairs in 24 groups, val_size 0.1\), too few for recall@10",
    ):
        split_finetune_pairs(pairs, {"val_size": 0.1, "split_seed": 1})
    assert (
        split_finetune_pairs(pairs, {"val_size": 0.1, "train": {"recall_ks": [1, 3]}})["split"]
        == "val"
    ).sum() == 6


class KeptDataset(MemoryDataset):
    """A MemoryDataset the runner does not release after its last reader."""

    def _release(self) -> None:
        pass


def run(pipeline, **data):
    data.setdefault("params:mlflow", {"register_models": False})
    catalog = DataCatalog({k: MemoryDataset(v) for k, v in data.items()})
    for name in pipeline.all_outputs():
        catalog[name] = KeptDataset()
    SequentialRunner().run(pipeline, catalog)
    return {name: catalog[name].load() for name in pipeline.all_outputs()}


def test_pipeline_fine_tunes_and_reports_retrieval_before_and_after(catalogue):
    products, manifest, checkpoint = catalogue
    pipeline = finetune_pipeline("tiny", "tiny_finetuned", {"type": "ruclip", "init": "tiny"})
    assert pipeline.inputs() == {
        "products",
        "image_manifest",
        "tiny.checkpoint",
        "params:clip_finetune",
        "params:mlflow",
    }
    out = run(
        pipeline,
        products=products,
        image_manifest=manifest,
        **{"tiny.checkpoint": ClipBundle.load(checkpoint), "params:clip_finetune": params()},
    )
    assert pipeline.outputs() == {
        "clip_finetune.retrieval_report",
        "clip_finetune.summary",
        "clip_finetune.mlflow_metrics",
        "clip_finetune.model_registration",
    }
    assert {"tiny_finetuned.checkpoint", "clip_finetune.history", "clip_finetune.pairs"} <= set(out)
    assert out["tiny_finetuned.checkpoint"].kind == "ruclip"
    history = out["clip_finetune.history"]
    assert history["epoch"].tolist() == [1, 2, 3] and history["is_best"].sum() >= 1
    report = out["clip_finetune.retrieval_report"]
    assert list(report.columns) == [
        "model",
        "stage",
        "direction",
        "metric",
        "value",
        "chance",
        "n_val",
    ]
    assert len(report) == 2 * 2 * 4  # base/fine-tuned x directions x (recall@1/5/10, median rank)
    r10 = report[report.metric == "recall@10"].set_index(["stage", "direction"])["value"]
    assert r10["finetuned"].mean() > r10["base"].mean()
    assert "| text→image | recall@10 |" in out["clip_finetune.summary"]
    assert "finetuned.t2i_recall_10" in out["clip_finetune.mlflow_metrics"]
    assert out["clip_finetune.model_registration"]["registered"] is False  # off by default

    hub = finetune_pipeline(
        "clip", "clip_ft", {"type": "hf_clip", "checkpoint": "openai/clip-vit-base-patch32"}
    )
    assert "clip_finetune.load_base_model" in {n.name for n in hub.nodes}
    assert "params:embeddings.models.clip" in hub.inputs()


def test_checkpoint_dataset_is_versioned_and_keeps_the_ruclip_layout(catalogue, tmp_path):
    _, _, checkpoint = catalogue
    path = tmp_path / "models" / "tiny_finetuned"
    ds = ClipCheckpointDataset(path=str(path), version=Version(None, None))
    with pytest.raises(
        DatasetError,
        match=r"No version of checkpoint 'tiny_finetuned' has been saved.*kedro run --pipeline=clip_finetune",
    ):
        ds.load()
    assert not ds.exists() and "not written yet" in ds.preview()
    bundle = ClipBundle.load(checkpoint)
    ds.save(bundle)
    (version,) = ds.list_versions(full_path=False)
    saved = path / version / "tiny_finetuned"
    assert sorted(p.name for p in saved.iterdir()) == [
        "bpe.model",
        "config.json",
        "pytorch_model.bin",
    ]
    assert load_ruclip(saved).config == bundle.config  # the same loader as a hub checkpoint
    again = ClipCheckpointDataset(path=str(path), version=Version(None, None))
    again.save(bundle)
    assert len(again.list_versions()) == 2
    loaded = ClipCheckpointDataset(path=str(path), version=Version(None, None)).load()
    for a, b in zip(
        loaded.model.state_dict().values(), bundle.model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert '"versions"' in again.preview()
    with pytest.raises(DatasetError, match="saves a vitrina.models.clip.ClipBundle, got dict"):
        ClipCheckpointDataset(path=str(tmp_path / "x")).save({"not": "a bundle"})


def test_a_hugging_face_clip_fine_tunes_and_saves_with_save_pretrained(catalogue, tmp_path):
    products, manifest, _ = catalogue
    base = ClipBundle.load(tiny_hf_clip(tmp_path / "hf"))
    pairs = split_finetune_pairs(make_finetune_pairs(products, manifest, {}), {"val_size": 0.5})
    config = ClipFinetuneConfig.from_params({**params()["train"], "max_epochs": 1})
    result = fine_tune(
        base, pairs[pairs.split == "train"], pairs[pairs.split == "val"], config, tmp_path / "run"
    )
    assert len(result.history) == 1 and np.isfinite(result.history["train_loss"].iloc[0])
    ds = ClipCheckpointDataset(path=str(tmp_path / "hf_finetuned"))
    ds.save(result.bundle)
    assert {"config.json", "model.safetensors", "processor_config.json"} <= {
        p.name for p in (tmp_path / "hf_finetuned").iterdir()
    }
    loaded = ds.load()
    assert loaded.kind == "hf_clip"
    emb = shard_products_with_checkpoint(
        products, manifest, loaded, {"type": "hf_clip"}, {"batch_size": 16, "progress": False}
    ).collect()
    assert emb.text.shape == (len(products), 16) and emb.image.shape == (len(products), 16)


def test_old_step_keys_fail_naming_their_replacements(catalogue):
    products, manifest, checkpoint = catalogue
    pairs = split_finetune_pairs(make_finetune_pairs(products, manifest, {}), {"val_size": 0.5})
    bundle = ClipBundle.load(checkpoint)
    with pytest.raises(
        ValueError, match=r"clip_finetune.state_dir is no longer a setting: use output_dir"
    ):
        finetune_clip(bundle, pairs, {**params(), "state_dir": "x"})
    with pytest.raises(ValueError, match=r"clip_finetune.nproc_per_node .*train.devices"):
        finetune_clip(bundle, pairs, {**params(), "nproc_per_node": 2})
    with pytest.raises(
        ValueError, match=r"clip_finetune.train.lr is no longer a setting: use learning_rate"
    ):
        finetune_clip(bundle, pairs, params(lr=1e-3))


def test_finetune_spec_names_a_model_that_cannot_be_fine_tuned(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(REPO / "conf" / "base", conf / "base")
    spec = finetune_spec(conf, "base")
    assert spec["base_model"] == "tiny_ruclip" and spec["output_model"] == "tiny_ruclip_finetuned"
    (conf / "bad").mkdir()
    (conf / "bad" / "parameters_clip_finetune.yml").write_text(
        "clip_finetune:\n  base_model: tfidf_svd\n"
    )
    with pytest.raises(ValueError, match="has type 'tfidf_svd'; only CLIP models"):
        finetune_spec(conf, "bad")
    (conf / "bad" / "parameters_clip_finetune.yml").write_text(
        "clip_finetune:\n  base_model: nope\n"
    )
    with pytest.raises(ValueError, match="'nope' is not in embeddings.models"):
        finetune_spec(conf, "bad")
