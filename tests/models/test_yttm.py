"""youtokentome BPE port: golden ids from the real youtokentome, file format, trainer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vitrina.models.yttm import (
    SPACE_TOKEN,
    YttmConversionError,
    YttmFormatError,
    YttmModel,
    YttmSpecialTokens,
    read_yttm_model,
    train_yttm_bpe,
    write_yttm_model,
    yttm_to_tokenizer,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ruclip"


@pytest.fixture(scope="module")
def golden() -> dict:
    """Produced by scripts/make_yttm_golden_ids.py with youtokentome 1.0.6."""
    return json.loads((FIXTURES / "golden_ids.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def bpe() -> YttmModel:
    return read_yttm_model(FIXTURES / "bpe.model")


@pytest.fixture(scope="module")
def texts(golden) -> list[str]:
    return [c["text"] for c in golden["cases"]]


def test_golden_fixture_covers_the_edge_cases(texts, golden):
    assert len(texts) > 300
    assert "" in texts
    assert any(t != t.strip() for t in texts)  # leading / trailing whitespace
    assert any("  " in t for t in texts)  # repeated spaces
    assert any("😀" in t for t in texts) and any("漢" in t for t in texts)
    assert any(any(ch.isupper() for ch in t) for t in texts)
    assert any(1 in c["ids"] for c in golden["cases"])  # unknown characters


def test_tokenizers_port_reproduces_youtokentome_ids(bpe, golden, texts):
    tok = yttm_to_tokenizer(bpe)
    got = [e.ids for e in tok.encode_batch(texts)]
    mismatches = [
        (c["text"], c["ids"], ids)
        for c, ids in zip(golden["cases"], got, strict=True)
        if ids != c["ids"]
    ]
    assert not mismatches, mismatches[:5]
    # single-text encode goes through the same pipeline
    assert tok.encode(texts[25]).ids == golden["cases"][25]["ids"]


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


def test_tokenizer_pieces_and_decoder(bpe):
    tok = yttm_to_tokenizer(bpe)
    enc = tok.encode("  футболка   женская ")
    assert enc.tokens == ["▁футболка", "▁женская"]
    assert tok.decode(enc.ids) == "футболка женская"
    assert tok.get_vocab_size() == bpe.vocab_size
    assert tok.token_to_id("<UNK>") == 1 and tok.token_to_id("<EOS>") == 3
    # special names are not matched inside texts: youtokentome spells them out
    assert tok.encode("<EOS>").ids == bpe.encode(["<EOS>"])[0]
    assert 3 not in tok.encode("<EOS>").ids


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


def _toy_with_duplicate_pieces() -> YttmModel:
    # 'abc' is spelled by two ids: 9 = ab+c and 10 = a+bc.
    char2id = {SPACE_TOKEN: 4, "a": 5, "b": 6, "c": 7}
    rules = [(6, 7, 8), (5, 6, 11), (11, 7, 9), (5, 8, 10)]
    return YttmModel(char2id=char2id, rules=rules)


def test_duplicate_pieces_fall_back_to_the_python_encoder():
    toy = _toy_with_duplicate_pieces()
    assert toy.duplicate_pieces() == {"abc": [9, 10]}
    with pytest.raises(YttmConversionError):
        yttm_to_tokenizer(toy)
    # "abc": bc (rule 0) first, then a+bc (rule 3) -> id 10; "xabc": x unknown, same for abc.
    assert toy.encode(["abc", "x abc", "ab", "abab", "cab"]) == [
        [4, 10],
        [4, 1, 4, 10],
        [4, 11],
        [4, 11, 11],
        [4, 7, 11],
    ]


def test_python_encoder_unknown_runs_do_not_merge():
    toy = _toy_with_duplicate_pieces()
    assert toy.encode(["a☃☃b", "☃", "a☃bc"]) == [[4, 5, 1, 6], [4, 1], [4, 5, 1, 8]]
    with pytest.raises(TypeError):
        toy.encode("abc")


CORPUS = [
    "Футболка женская хлопковая красная размер 42",
    "Кроссовки мужские Nike Air Max 90",
    "Smartphone Samsung Galaxy 128 GB black",
    "Чайник электрический Bosch 1.7 л",
    "Рюкзак городской водонепроницаемый 20 л",
    "women's cotton t-shirt size M",
] * 20 + ["редкий символ №"]


def test_trained_model_is_consistent_and_deterministic(tmp_path):
    model = train_yttm_bpe(CORPUS, 200)
    assert model == train_yttm_bpe(CORPUS, 200)
    assert model.vocab_size <= 200
    assert model.special == YttmSpecialTokens(pad_id=0, unk_id=1, bos_id=2, eos_id=3)
    assert model.char2id[SPACE_TOKEN] == 4  # youtokentome: '▁' right after the specials
    ids = sorted([*model.char2id.values(), *(z for *_, z in model.rules), 0, 1, 2, 3])
    assert ids == list(range(model.vocab_size))  # contiguous, like youtokentome
    assert not model.duplicate_pieces()
    # the most frequent characters get the smallest ids (youtokentome's order)
    assert model.char2id["о"] < model.char2id["№"]
    probe = CORPUS[:6] + ["новый   текст ☃ с неизвестным символом", "", "  "]
    tok = yttm_to_tokenizer(model)
    assert [e.ids for e in tok.encode_batch(probe)] == model.encode(probe)
    # with a large budget merging stops when no pair is left: every word is one token
    big = train_yttm_bpe(CORPUS, 1000)
    assert big.vocab_size < 1000
    assert yttm_to_tokenizer(big).encode(CORPUS[0]).tokens == ["▁" + w for w in CORPUS[0].split()]
    path = write_yttm_model(model, tmp_path / "bpe.model")
    assert read_yttm_model(path).rules == model.rules


def test_coverage_drops_rare_characters():
    full = train_yttm_bpe(CORPUS, 200)
    assert "№" in full.char2id
    reduced = train_yttm_bpe(CORPUS, 200, coverage=0.999)
    assert "№" not in reduced.char2id
    assert reduced.encode(["№"]) == [[4, 1]]


def test_training_errors():
    with pytest.raises(ValueError, match="too small"):
        train_yttm_bpe(CORPUS, 10)
    with pytest.raises(ValueError, match="empty"):
        train_yttm_bpe(["", "   "], 100)
    with pytest.raises(ValueError, match="coverage"):
        train_yttm_bpe(CORPUS, 200, coverage=0)
