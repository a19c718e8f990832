"""The defects planted in the demo catalogue (vitrina.demo.defects)."""

from __future__ import annotations

import pytest
from PIL import Image

from tests.demo.conftest import N, decode, planted_defects
from vitrina.demo import (
    DEFECT_KINDS,
    PATH_TRAVERSAL_PICTURE,
    defect_plan,
)


def test_defect_plan_cycles():
    assert defect_plan(0) == []
    assert defect_plan(8) == list(DEFECT_KINDS)
    assert defect_plan(10) == list(DEFECT_KINDS) + list(DEFECT_KINDS[:2])


def test_defects_present_exactly(catalogue):
    out, df = catalogue
    defects = planted_defects(out)
    assert sorted(d["kind"] for d in defects) == sorted(defect_plan(8))
    rows_by_kind: dict[str, list[int]] = {}
    for d in defects:
        rows_by_kind.setdefault(d["kind"], []).append(d["row"])
        assert df.loc[d["row"], "sku"] == d["sku"]
        assert df.loc[d["row"], "picture"] == d["picture"]
    assert len({d["row"] for d in defects}) == 8

    # two empty names, one empty text, nothing else missing
    assert sorted(df.index[df["name"].isna()]) == sorted(rows_by_kind["missing_name"])
    assert list(df.index[df["text"].isna()]) == rows_by_kind["missing_text"]
    assert df.drop(columns=["name", "text"]).notna().all().all()

    # exactly one sku appears twice; the copy sits after the original
    dup_rows = list(df.index[df["sku"].duplicated(keep=False)])
    (dup,) = [d for d in defects if d["kind"] == "duplicate_sku"]
    assert dup_rows == sorted([dup["duplicate_of_row"], dup["row"]])
    assert dup["duplicate_of_row"] < dup["row"]

    # missing image files
    for row in rows_by_kind["missing_image"]:
        assert not (out / "images" / df.loc[row, "picture"]).exists()

    # corrupt (truncated) JPEG: opens, fails to decode
    (row,) = rows_by_kind["corrupt_image"]
    path = out / "images" / df.loc[row, "picture"]
    assert path.read_bytes()[:2] == b"\xff\xd8"
    with pytest.raises(OSError), Image.open(path) as im:
        im.load()

    # path traversal
    (row,) = rows_by_kind["path_traversal"]
    assert df.loc[row, "picture"] == PATH_TRAVERSAL_PICTURE
    assert (df["picture"] == PATH_TRAVERSAL_PICTURE).sum() == 1

    # every other picture is an existing file named by its sku
    bad = set(rows_by_kind["missing_image"]) | set(rows_by_kind["path_traversal"])
    for row in set(range(N)) - bad:
        assert (out / "images" / df.loc[row, "picture"]).is_file()


def test_clean_catalogue_has_noplanted_defects(clean):
    out, df = clean
    assert planted_defects(out) == []
    assert df.notna().all().all()
    assert df["sku"].is_unique
    assert (df["picture"] == df["sku"] + ".jpg").all()
    for picture in df["picture"]:
        decode(out / "images" / picture)
