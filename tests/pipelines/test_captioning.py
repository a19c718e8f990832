"""Captioning pipelines: data preparation, a SequentialRunner run, inference, bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from PIL import Image

from tests.conftest import REPO
from vitrina.datasets.captioner import CaptionerDataset
from vitrina.datasets.embeddings import Embeddings
from vitrina.models.captioner import Captioner, make_captioning_splits
from vitrina.pipelines.captioning.nodes import METRIC_COLUMNS
from vitrina.pipelines.captioning.pipeline import create_pipeline as captioning
from vitrina.pipelines.captioning_inference.nodes import list_images
from vitrina.pipelines.captioning_inference.pipeline import create_pipeline as inference

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (40, 60, 220)}
GARMENTS = ["top", "dress", "skirt", "jacket", "shirt"]
TINY_MODEL = {
    "image_size": 32,
    "patch_size": 16,
    "encoder_layers": 1,
    "encoder_width": 32,
    "encoder_heads": 2,
    "encoder_mlp": 64,
    "decoder_layers": 1,
    "decoder_width": 32,
    "decoder_heads": 2,
    "n_positions": 24,
    "max_target_length": 12,
    "vocab_size": 400,
    "min_frequency": 1,
}


def base_params(name: str) -> dict:
    return yaml.safe_load((REPO / "conf" / "base" / f"parameters_{name}.yml").read_text())[name]


class KeptDataset(MemoryDataset):
    """A MemoryDataset the runner does not release, so tests can read intermediates."""

    def _release(self) -> None:
        pass


def run(pipeline, catalog_extra=None, **data):
    catalog = DataCatalog({k: MemoryDataset(v) for k, v in data.items()})
    for name, dataset in (catalog_extra or {}).items():
        catalog[name] = dataset
    for name in pipeline.all_outputs():
        if name not in catalog:
            catalog[name] = KeptDataset(copy_mode="assign")
    SequentialRunner().run(pipeline, catalog)
    return catalog


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    """60 products: coloured garments on white, described by colour and garment.

    Planted defects: one product without a description, one without a processed image,
    two duplicate descriptions, and one description far longer than the decoder context.
    """
    root = tmp_path_factory.mktemp("captioning")
    rows, manifest, vectors = [], [], []
    rng = np.random.default_rng(0)
    k = 0
    for colour, rgb in COLOURS.items():
        for garment in GARMENTS:
            for variant in range(4):
                pid = f"P{k:03d}"
                path = root / f"{pid}.jpg"
                img = Image.new("RGB", (32, 32), (255, 255, 255))
                img.paste(Image.new("RGB", (16 + 3 * variant, 20), rgb), (6, 6))
                img.save(path)
                rows.append(
                    {
                        "product_id": pid,
                        "title": f"{colour} {garment}",
                        "description": f"A {colour} {garment} in soft fabric, style {variant}.",
                        "group_id": f"G{k // 2}",
                    }
                )
                manifest.append({"product_id": pid, "processed_path": str(path)})
                vectors.append(np.r_[np.array(rgb) / 255.0, rng.normal(0, 0.05, 5)])
                k += 1
    products = pd.DataFrame(rows)
    products.loc[1, "description"] = None
    products.loc[5, "description"] = products.loc[4, "description"]
    products.loc[9, "description"] = "  " + products.loc[8, "description"].replace(" ", "  ")
    products.loc[10, "description"] = "A very long description " * 20
    manifest = pd.DataFrame(manifest).drop(index=2)
    image = np.asarray(vectors, dtype=np.float32)
    image /= np.linalg.norm(image, axis=1, keepdims=True)
    embeddings = Embeddings(ids=products["product_id"], text=image.copy(), image=image)
    return root, products, manifest, embeddings


def captioning_params(tmp_path) -> dict:
    params = base_params("captioning")
    params["models"]["tiny"] = TINY_MODEL
    params["model"] = "tiny"
    params["generation"] = {**params["generation"], "max_new_tokens": 10, "num_beams": 2}
    params["output_dir"] = str(tmp_path / "training")
    params["training"] = {
        **params["training"],
        "max_epochs": 2,
        "pretrain_max_epochs": 2,
        "batch_size": 16,
        "learning_rate": 0.003,
        "accelerator": "cpu",
        "num_threads": "auto",  # applied inside training only, restored afterwards
        "n_decode_workers": 1,
    }
    params["evaluation"] = {
        **params["evaluation"],
        "batch_size": 8,
        "device": "cpu",
        "num_threads": None,
    }
    params["report"] = {**params["report"], "n_examples": 4, "thumbnail": 32}
    return params


def test_make_captioning_splits_drops_and_counts(catalogue):
    _, products, manifest, _ = catalogue
    splits, report = make_captioning_splits(products, manifest, base_params("captioning"))
    counts = report.set_index("reason")["n_rows"]
    assert counts["input"] == 60
    assert counts["missing_description"] == 1 and counts["missing_image"] == 1
    assert counts["duplicate_description"] == 2  # one exact copy, one differing in spaces
    assert len(splits) == 56 == counts[["kept_train", "kept_validation", "kept_test"]].sum()
    assert splits["description"].is_unique
    assert (splits.groupby("group_id")["split"].nunique() == 1).all()
    with pytest.raises(ValueError, match="No product has both a description"):
        make_captioning_splits(products, manifest.iloc[:0], base_params("captioning"))


@pytest.fixture(scope="module")
def trained(catalogue, tmp_path_factory):
    """The captioning pipeline end to end on the synthetic catalogue."""
    _, products, manifest, embeddings = catalogue
    tmp_path = tmp_path_factory.mktemp("run")
    params = captioning_params(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(7)  # a value `num_threads: auto` will not pick on this machine
    try:
        catalog = run(
            captioning(baseline="tfidf_svd"),
            {"captioner": CaptionerDataset(str(tmp_path / "captioner"))},
            products=products,
            image_manifest=manifest,
            **{"tfidf_svd.embeddings": embeddings, "params:captioning": params},
        )
        assert torch.get_num_threads() == 7  # the nodes' thread counts did not leak out
    finally:
        torch.set_num_threads(threads)
    return catalog, tmp_path, params


def test_captioning_pipeline_outputs(trained):
    catalog, tmp_path, params = trained
    metrics = catalog["captioning_metrics"].load()
    assert list(metrics.columns) == METRIC_COLUMNS
    assert metrics[["system", "decoding"]].values.tolist() == [
        ["captioner", "greedy"],
        ["captioner", "beam"],
        ["nearest_neighbour", "retrieval"],
    ]
    assert metrics["sacrebleu"].between(0, 100).all()
    assert (metrics["n_test"] == metrics["n_test"].iloc[0]).all() and metrics["n_test"].iloc[0] > 0
    # Embeddings encode the colour: the neighbour shares it, so its BLEU is far from 0.
    assert metrics.set_index("system").loc["nearest_neighbour", "sacrebleu"] > 10

    history = catalog["captioning_training_history"].load()
    assert history["phase"].tolist() == ["pretraining"] * 2 + ["captioning"] * 2
    captioning_epochs = history[history["phase"] == "captioning"]
    assert captioning_epochs["epoch"].tolist() == [1, 2] and captioning_epochs["is_best"].sum() == 1
    assert history["val_bow_loss"].iloc[:2].notna().all()
    assert captioning_epochs["val_loss"].notna().all()
    captions = catalog["captioning_test_captions"].load()
    assert list(captions.columns) == ["product_id", "reference", "greedy", "beam"]
    page = catalog["captioning_examples"].load()
    assert page.count('<img src="data:image/jpeg;base64,') == 4 and "nearest neighbour" in page
    mlflow_metrics = catalog["captioning_mlflow_metrics"].load()
    assert set(mlflow_metrics) == {
        "test.sacrebleu.captioner.greedy",
        "test.sacrebleu.captioner.beam",
        "test.sacrebleu.nearest_neighbour.retrieval",
    }
    training = catalog["captioning_training_metrics"].load()
    assert len(training["val_loss"]) == 2 and training["n_truncated"]["value"] >= 1

    # The model directory: tokenizer and model saved together, previewable in kedro-viz.
    dataset = CaptionerDataset(str(tmp_path / "captioner"))
    preview = json.loads(dataset.preview())
    assert preview["captioner"]["config"]["name"] == "tiny"
    assert preview["captioner"]["training"]["epochs"] == 2
    assert preview["architecture"]["decoder"]["n_positions"] == 24
    for phase in ("pretraining", "captioning"):
        assert (tmp_path / "training" / phase / "checkpoints" / "last.ckpt").is_file()
        assert (tmp_path / "training" / phase / "done.json").is_file()


def test_rerun_resumes_finished_training(trained, catalogue):
    """A second run finds the finished runs and only reloads the best checkpoint."""
    _, tmp_path, params = trained
    _, products, manifest, embeddings = catalogue
    best = tmp_path / "training" / "captioning" / "checkpoints" / "best.ckpt"
    before = best.stat().st_mtime_ns
    catalog = run(
        captioning(baseline="tfidf_svd").only_nodes(
            "make_captioning_splits", "build_captioner", "train_captioner"
        ),
        products=products,
        image_manifest=manifest,
        **{"params:captioning": params},
    )
    assert isinstance(catalog["captioner"].load(), Captioner)
    assert best.stat().st_mtime_ns == before
    history = catalog["captioning_training_history"].load()
    assert history.loc[history["phase"] == "captioning", "epoch"].tolist() == [1, 2]


def test_inference_pipeline_captions_good_images_and_reports_bad_ones(trained, catalogue, tmp_path):
    root, _, manifest, _ = catalogue
    _, run_dir, _ = trained
    folder = tmp_path / "in"
    folder.mkdir()
    for path in manifest["processed_path"].iloc[:3]:
        (folder / path.split("/")[-1]).write_bytes(open(path, "rb").read())
    (folder / "corrupt.jpg").write_bytes(b"not a jpeg at all")
    (folder / "notes.txt").write_text("ignored: not an image extension")
    params = {
        **base_params("captioning_inference"),
        "inputs": [str(folder), str(tmp_path / "missing.png")],
        "batch_size": 2,
        "device": "cpu",
        "num_threads": None,
    }
    catalog = run(
        inference(),
        {"captioner": CaptionerDataset(str(run_dir / "captioner"))},
        **{"params:captioning_inference": params},
    )
    out = catalog["captioning_inference_captions"].load()
    assert list(out.columns) == ["path", "caption", "status", "error"]
    assert len(out) == 5
    status = dict(zip(out["path"].str.split("/").str[-1], out["status"], strict=True))
    assert status == {
        "P000.jpg": "ok",
        "P001.jpg": "ok",
        "P003.jpg": "ok",
        "corrupt.jpg": "error",
        "missing.png": "error",
    }
    assert out.loc[out["status"] == "error", "error"].str.len().gt(0).all()


def test_inference_inputs_validation(tmp_path):
    params = base_params("captioning_inference")
    with pytest.raises(ValueError, match="captioning_inference.inputs is empty"):
        list_images({**params, "inputs": None})
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="No image to caption"):
        list_images({**params, "inputs": str(tmp_path / "empty")})
    Image.new("RGB", (8, 8)).save(tmp_path / "one.PNG")
    images = list_images({**params, "inputs": [str(tmp_path / "empty"), str(tmp_path)]})
    assert images["path"].str.endswith("one.PNG").tolist() == [True]
    several = list_images({**params, "inputs": f"{tmp_path / 'one.PNG'}; {tmp_path / 'x.jpg'}"})
    assert [p.split("/")[-1] for p in several["path"]] == ["one.PNG", "x.jpg"]


def test_catalogue_declares_every_captioning_dataset():
    catalog = yaml.safe_load((REPO / "conf" / "base" / "catalog_captioning.yml").read_text())
    upstream = {"products", "image_manifest", "tfidf_svd.embeddings"}
    for pipeline in (captioning(baseline="tfidf_svd"), inference()):
        for name in pipeline.datasets() - upstream:
            if name.startswith("params:"):
                continue
            assert name in catalog, name
            assert catalog[name]["metadata"]["kedro-viz"]["layer"], name
