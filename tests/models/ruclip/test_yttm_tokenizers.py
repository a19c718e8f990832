"""youtokentome BPE on ``tokenizers``: conversion, trainer (``yttm_tokenizers``)."""

from __future__ import annotations

import pytest

from tests.models.ruclip.common import toy_with_duplicate_pieces
from vitrina.models.ruclip.yttm import (
    SPACE_TOKEN,
    YttmSpecialTokens,
    read_yttm_model,
    write_yttm_model,
)
from vitrina.models.ruclip.yttm_tokenizers import (
    YttmConversionError,
    train_yttm_bpe,
    yttm_to_tokenizer,
)


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


def test_duplicate_pieces_fall_back_to_the_python_encoder():
    toy = toy_with_duplicate_pieces()
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
