"""youtokentome BPE model: golden ids from the real youtokentome, file format, encoder."""

from __future__ import annotations

import pytest

from tests.models.ruclip.common import toy_with_duplicate_pieces
from vitrina.models.ruclip.yttm import YttmFormatError, read_yttm_model, write_yttm_model


def test_golden_fixture_covers_the_edge_cases(texts, golden):
    assert len(texts) > 300
    assert "" in texts
    assert any(t != t.strip() for t in texts)  # leading / trailing whitespace
    assert any("  " in t for t in texts)  # repeated spaces
    assert any("😀" in t for t in texts) and any("漢" in t for t in texts)
    assert any(any(ch.isupper() for ch in t) for t in texts)
    assert any(1 in c["ids"] for c in golden["cases"])  # unknown characters


def test_python_encoder_reproduces_youtokentome_ids(bpe, golden, texts):
    got = bpe.encode(texts)
    mismatches = [
        (c["text"], c["ids"], ids)
        for c, ids in zip(golden["cases"], got, strict=True)
        if ids != c["ids"]
    ]
    assert not mismatches, mismatches[:5]
    assert bpe.encode(texts) == got  # word cache does not change results


def test_pieces_decode_and_vocab_match_youtokentome(bpe, golden):
    assert bpe.vocab_size == golden["vocab_size"] == 1000
    assert bpe.vocab() == golden["vocab"]
    for case in golden["cases"]:
        assert bpe.decode(case["ids"]) == case["decoded"]
        if 1 not in case["ids"]:  # youtokentome shows the raw text of unknown runs
            assert [bpe.id_to_piece(i) for i in case["ids"]] == case["subwords"]


def test_read_write_round_trip(bpe, tmp_path):
    out = write_yttm_model(bpe, tmp_path / "bpe.model")
    again = read_yttm_model(out)
    assert again.char2id == bpe.char2id
    assert again.rules == bpe.rules
    assert again.special == bpe.special
    assert write_yttm_model(again, tmp_path / "b.model").read_bytes() == out.read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left
    first, *_, last = out.read_text().splitlines()
    assert first == f"{len(bpe.char2id)} {len(bpe.rules)}"
    assert last == "1 0 2 3"  # file order: unk pad bos eos


@pytest.mark.parametrize(
    "content, match",
    [
        ("", "missing header"),
        ("2 0\n9601 4\n97 5\n1 0 2\n", "expected"),  # truncated special line
        ("1 0\n9601 4\nx 0 2 3\n", "non-integer"),
        ("1 0\n97 4\n1 0 2 3\n", "'▁'"),  # no meta symbol
        ("2 1\n9601 4\n97 5\n4 99 6\n1 0 2 3\n", "undefined"),
        ("2 0\n9601 4\n97 4\n1 0 2 3\n", "duplicate"),
        ("2 0\n9601 4\n32 5\n1 0 2 3\n", "whitespace"),
        ("2 0\n9601 4\n97 5\n1 0 1 3\n", "distinct"),
    ],
)
def test_malformed_files_raise(tmp_path, content, match):
    path = tmp_path / "bad.model"
    path.write_text(content)
    with pytest.raises(YttmFormatError, match=match):
        read_yttm_model(path)


def test_python_encoder_unknown_runs_do_not_merge():
    toy = toy_with_duplicate_pieces()
    assert toy.encode(["a☃☃b", "☃", "a☃bc"]) == [[4, 5, 1, 6], [4, 1], [4, 5, 1, 8]]
    with pytest.raises(TypeError):
        toy.encode("abc")
