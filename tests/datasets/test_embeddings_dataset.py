"""EmbeddingsDataset: NPZ round trip, validation, atomic writes, preview, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from kedro.io import DatasetError

from vitrina.datasets.embeddings import EmbeddingsDataset
from vitrina.embeddings import Embeddings


def sample(n=4, d=3):
    rng = np.random.default_rng(0)
    return Embeddings(
        ids=np.array([f"id{i}" for i in range(n)]),
        text=rng.normal(size=(n, d)),
        image=rng.normal(size=(n, d + 1)),
    )


def test_round_trip_keeps_ids_dtypes_and_values(tmp_path):
    ds = EmbeddingsDataset(str(tmp_path / "emb" / "m.npz"))
    emb = sample()
    ds.save(emb)
    back = ds.load()
    assert back.ids.tolist() == emb.ids.tolist()
    assert back.text.dtype == back.image.dtype == np.float32
    np.testing.assert_array_equal(back.text, emb.text)
    np.testing.assert_array_equal(back.image, emb.image)
    with np.load(tmp_path / "emb" / "m.npz") as npz:  # plain NPZ other tools can read
        assert sorted(npz.files) == ["ids", "image", "text"]
        assert npz["ids"].dtype.kind == "U"


def test_missing_file_names_the_pipeline_to_run(tmp_path):
    with pytest.raises(
        DatasetError, match=r"does not exist: run `kedro run --pipeline=embeddings`"
    ):
        EmbeddingsDataset(str(tmp_path / "nope.npz")).load()


def test_failed_save_leaves_previous_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "m.npz"
    ds = EmbeddingsDataset(str(path))
    ds.save(sample(n=4))

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(DatasetError, match="disk full"):
        ds.save(sample(n=6))
    monkeypatch.undo()
    assert len(ds.load()) == 4
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ids": np.array(["a", "a"])}, "not unique"),
        ({"text": np.zeros((3, 2))}, r"'text' must have shape \[N=2, D\]"),
        ({"image": np.array([[np.nan, 0.0], [0.0, 0.0]])}, "1 rows with NaN"),
    ],
)
def test_invalid_embeddings_are_rejected(kwargs, message):
    base = {"ids": np.array(["a", "b"]), "text": np.zeros((2, 2)), "image": np.zeros((2, 2))}
    with pytest.raises(ValueError, match=message):
        Embeddings(**{**base, **kwargs})


def test_align_and_modalities():
    emb = sample()
    aligned = emb.align(["id2", "id0"])
    np.testing.assert_array_equal(aligned.text, emb.text[[2, 0]])
    assert emb.modality("text+image").shape == (4, 3 + 4)
    with pytest.raises(ValueError, match=r"1 of 2 products have no embedding \(e.g. \['zz'\]\)"):
        emb.align(["id1", "zz"])


def test_preview_shows_shapes(tmp_path):
    ds = EmbeddingsDataset(str(tmp_path / "m.npz"))
    assert ds.preview()["data"] == [["not written yet"]]
    ds.save(sample())
    preview = ds.preview(nrows=2)
    assert preview["columns"] == ["id", "text[:4]", "image[:4]"]
    assert preview["data"][0][0] == "id0"
    assert preview["data"][-1] == ["shape", "[4, 3]", "[4, 4]"]


def test_image_folder_dataset(tmp_path):
    import base64
    import io

    from PIL import Image

    from vitrina.datasets import ImageFolderDataset

    ds = ImageFolderDataset(str(tmp_path / "images"))
    with pytest.raises(DatasetError, match="run `kedro run --pipeline=image_processing`"):
        ds.load()
    folder = tmp_path / "images" / "32_pad"
    folder.mkdir(parents=True)
    with pytest.raises(DatasetError, match="holds no image"):
        ds.save(folder)
    for i in range(3):
        Image.new("RGB", (32, 32), (80 * i, 0, 0)).save(folder / f"{i}.jpg")
    ds.save(folder)  # the folder the node filled: accepted, nothing copied
    with pytest.raises(DatasetError, match="lies outside it"):
        ds.save(tmp_path)
    assert [p.name for p in ds.load()] == ["0.jpg", "1.jpg", "2.jpg"]
    sheet = Image.open(io.BytesIO(base64.b64decode(ds.preview(side=16))))
    assert sheet.size == (8 * 16, 16)
