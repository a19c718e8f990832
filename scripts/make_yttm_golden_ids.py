"""Regenerate the youtokentome golden fixtures used by ``tests/models/ruclip/``.

This script needs the real ``youtokentome`` package, which is NOT a Vitrina dependency
(it does not build under pip's build isolation).  It is run by hand, never in CI::

    python3 -m venv /tmp/yttm
    /tmp/yttm/bin/pip install "cython<3" wheel
    /tmp/yttm/bin/pip install --no-build-isolation youtokentome
    /tmp/yttm/bin/python scripts/make_yttm_golden_ids.py --out-dir tests/fixtures/ruclip

What it does (deterministically, from ``--seed``):

1. generates a few thousand Russian + English product-like strings (the training corpus);
2. trains a youtokentome BPE on them (``--vocab-size``, ``--coverage`` < 1 so that a few
   rare characters are dropped from the alphabet and encode to the unknown id);
3. encodes a few hundred test strings (different from the corpus: mixed case, punctuation,
   digits, repeated / leading / trailing whitespace, tabs and newlines, the ``▁`` meta
   symbol, emoji, CJK, other unknown characters, the empty string, ...) with youtokentome's
   own ``encode(..., output_type=ID)`` (no bos/eos, dropout 0);
4. writes ``bpe.model`` and ``golden_ids.json`` (``{"vocab_size", "vocab", "cases": [{"text",
   "ids", "subwords", "decoded"}, ...]}``, one case per line).

youtokentome's trainer is not bit-for-bit deterministic between runs (ties between equally
frequent pairs), so regenerating changes ``bpe.model``; the ids always match the model
written next to them.

With ``--model PATH`` it skips training and only records youtokentome's ids for the test
strings with an existing model (used to check by hand that a ``bpe.model`` written by
:func:`vitrina.models.ruclip.yttm.write_yttm_model` /
:func:`vitrina.models.ruclip.yttm_tokenizers.train_yttm_bpe` loads in the real youtokentome;
compare the written ids with Vitrina's tokenizer).
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from pathlib import Path

# fmt: off
RU_ITEMS = [
    "футболка", "платье", "кроссовки", "смартфон", "ноутбук", "чайник", "кофеварка",
    "сумка", "рюкзак", "куртка", "джинсы", "шампунь", "крем для лица", "коляска",
    "игрушка", "наушники", "часы", "кружка", "постельное бельё", "сковорода", "пылесос",
    "телевизор", "холодильник", "конструктор", "куртка-пуховик", "шапка", "перчатки",
    "блендер", "утюг", "зонт", "ботинки", "сапоги", "юбка", "рубашка", "свитер",
    "планшет", "чехол для телефона", "зарядное устройство", "подушка", "одеяло",
]
RU_ADJ = [
    "женская", "мужской", "детский", "красный", "синий", "чёрный", "белый", "зелёный",
    "хлопковая", "кожаная", "беспроводные", "водонепроницаемый", "новый", "летний",
    "зимняя", "спортивные", "электрический", "керамическая", "стальной", "мягкая",
    "большой", "маленький", "розовый", "серый", "бежевая", "оригинальный",
]
EN_ITEMS = [
    "t-shirt", "dress", "sneakers", "smartphone", "laptop", "kettle", "coffee maker",
    "bag", "backpack", "jacket", "jeans", "shampoo", "face cream", "stroller", "toy",
    "headphones", "watch", "mug", "bed linen", "frying pan", "vacuum cleaner", "tv",
    "fridge", "building set", "hat", "gloves", "blender", "iron", "umbrella", "boots",
]
EN_ADJ = [
    "women's", "men's", "kids", "red", "blue", "black", "white", "green", "cotton",
    "leather", "wireless", "waterproof", "new", "summer", "winter", "sport", "electric",
    "ceramic", "steel", "soft", "large", "small", "pink", "grey", "beige", "original",
]
BRANDS = [
    "Samsung", "Apple", "Xiaomi", "Nike", "Adidas", "Bosch", "Philips", "LEGO", "Zara",
    "Tefal", "Redmond", "Gloria Jeans", "Ostin", "Sony", "Lenovo", "Huawei", "Puma",
    "Томми", "Красный Октябрь", "Любимый дом",
]
ATTRS_RU = [
    "размер {n}", "объём {f} л", "{n} ГБ", "{f}\"", "100% хлопок", "арт. {n}-{c}",
    "вес {f} кг", "{n} шт.", "цвет: {adj}", "мощность {n} Вт", "длина {n} см",
    "хит продаж!", "скидка {n}%", "в наличии", "доставка 1-2 дня",
]
ATTRS_EN = [
    "size {n}", "{f} l", "{n} GB", "{f} inch", "100% cotton", "art. {n}-{c}",
    "weight {f} kg", "pack of {n}", "color: {adj}", "{n} W", "length {n} cm",
    "best seller!", "{n}% off", "in stock", "free shipping",
]
# fmt: on
# Rare characters: appear only a handful of times so that coverage < 1 drops some of them.
RARE = ["№", "°", "×", "€", "½", "™", "®", "ї", "ß", "é"]


def _fill(rng: random.Random, template: str, adjs: list[str]) -> str:
    return template.format(
        n=rng.choice([rng.randint(1, 9), rng.randint(10, 99), rng.randint(100, 99999)]),
        f=f"{rng.randint(0, 20)}.{rng.randint(0, 9)}",
        c="".join(rng.choice("ABCDEFXYZ") for _ in range(2)),
        adj=rng.choice(adjs),
    )


def product_title(rng: random.Random) -> str:
    """One random product-like title (Russian, English or mixed)."""
    lang = rng.random()
    if lang < 0.55:
        items, adjs, attrs = RU_ITEMS, RU_ADJ, ATTRS_RU
    elif lang < 0.9:
        items, adjs, attrs = EN_ITEMS, EN_ADJ, ATTRS_EN
    else:
        items, adjs, attrs = RU_ITEMS + EN_ITEMS, RU_ADJ + EN_ADJ, ATTRS_RU + ATTRS_EN
    parts = []
    if rng.random() < 0.6:
        parts.append(rng.choice(adjs))
    parts.append(rng.choice(items))
    if rng.random() < 0.5:
        parts.append(rng.choice(BRANDS))
    for _ in range(rng.randint(0, 3)):
        parts.append(_fill(rng, rng.choice(attrs), adjs))
    text = " ".join(parts)
    if rng.random() < 0.3:
        text = text.capitalize()
    if rng.random() < 0.05:
        text = text.upper()
    if rng.random() < 0.01:
        text += " " + rng.choice(RARE)
    return text


def training_corpus(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    return [product_title(rng) for _ in range(n)]


def test_strings(seed: int, n_random: int) -> list[str]:
    """Edge cases + random titles (from a different seed than the corpus)."""
    rng = random.Random(seed + 1)
    edge = [
        "",
        " ",
        "   ",
        "\t\n",
        "a",
        "я",
        "Ё",
        "ё",
        "футболка",
        "Футболка",
        "ФУТБОЛКА",
        "  футболка",
        "футболка  ",
        "  футболка   женская  ",
        "футболка    женская",
        "футболка\tженская\nхлопок\r\nновая",
        "футболка\x0bженская\x0cхлопок",
        "футболка\xa0женская",
        "футболка\u2009женская\u3000хлопок",
        "футболка\x85женская",
        "футболка\x1cженская\x1fхлопок",
        "▁футболка",
        "футболка▁женская",
        "▁▁▁",
        "a▁b ▁ c▁",
        "кроссовки Nike Air Max 90, размер 42.5 (EU)",
        "Smartphone Samsung Galaxy S23 Ultra 12/256GB — black!!!",
        "iPhone 15 Pro Max 256 ГБ «Титановый»",
        "Скидка -50%!!! Только сегодня...",
        "арт. 123456-AB/7; цена: 1 999,99 ₽",
        "100% хлопок; 5% эластан",
        "e-mail: shop@example.com, tel.: +7 (999) 123-45-67",
        "https://shop.example.ru/catalog/item?id=42&utm=x",
        "😀😀 футболка 😀",
        "футболка😀женская",
        "футб😀олка",
        "👟👟👟",
        "运动鞋 кроссовки 运动",
        "漢字",
        "Ⅻ ⅷ ∑ ∫ ≈ ≠ ∞",
        "ﬁ ﬂ ﬀ",
        "e\u0301 й и\u0306",
        "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕥𝕖𝕩𝕥",
        "zero\u200bwidth\u200djoiner",
        "<UNK> <PAD> <BOS> <EOS>",
        "<unk>",
        "№ 5 ° × € ½ ™ ® ї ß é",
        "№5",
        "25°C",
        "2×3",
        "\x00null\x00",
        "табуляция\t\t\tмного",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "ааааааааааааааааааааааааааааааа",
        "1234567890 0987654321 3.14159 2,71828",
        "!!!???...,,,;;;:::",
        "((([[[{{{}}}]]])))",
        "\"quoted\" 'single' `back`",
        "mIxEd CaSe КаПсЛоК",
        "WOMEN'S RED COTTON T-SHIRT SIZE 42",
        "women's red cotton t-shirt size 42",
        "чёрный кожаный рюкзак Xiaomi 20 л водонепроницаемый",
        " ".join(["очень длинное название товара"] * 20),
        "word " * 50,
    ]
    randoms = []
    for _ in range(n_random):
        t = product_title(rng)
        r = rng.random()
        if r < 0.1:
            t = "  " + t
        elif r < 0.2:
            t = t + "   "
        elif r < 0.3:
            t = t.replace(" ", "  ")
        elif r < 0.35:
            t = t + " " + rng.choice(["😀", "漢", "✓", "♥", "→"])
        elif r < 0.45:
            t = t.swapcase()
        randoms.append(t)
    return edge + randoms


def _escape_invisible(ch: str) -> str:
    if ch.isprintable() and (ch == " " or not ch.isspace()):
        return ch
    units = ch.encode("utf-16-be")
    return "".join(f"\\u{units[i]:02x}{units[i + 1]:02x}" for i in range(0, len(units), 2))


def _json_line(obj: object) -> str:
    """JSON with readable Cyrillic but every invisible / space-like character escaped."""
    return "".join(_escape_invisible(ch) for ch in json.dumps(obj, ensure_ascii=False))


def main() -> None:
    import youtokentome as yttm  # not a Vitrina dependency: see the module docstring

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=Path("tests/fixtures/ruclip"))
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help="existing bpe.model: skip training, only record ids",
    )
    parser.add_argument(
        "--ids-out",
        type=Path,
        default=None,
        help="where to write the ids JSON (default OUT_DIR/golden_ids.json)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-corpus", type=int, default=4000)
    parser.add_argument("--n-random-tests", type=int, default=300)
    parser.add_argument("--vocab-size", type=int, default=1000)
    parser.add_argument("--coverage", type=float, default=0.9999)
    args = parser.parse_args()

    if args.model is None:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        model_path = args.out_dir / "bpe.model"
        with tempfile.TemporaryDirectory() as tmp:
            corpus = Path(tmp) / "corpus.txt"
            corpus.write_text(
                "\n".join(training_corpus(args.seed, args.n_corpus)) + "\n", encoding="utf-8"
            )
            yttm.BPE.train(
                data=str(corpus),
                model=str(model_path),
                vocab_size=args.vocab_size,
                coverage=args.coverage,
                n_threads=1,
                pad_id=0,
                unk_id=1,
                bos_id=2,
                eos_id=3,
            )
    else:
        model_path = args.model

    bpe = yttm.BPE(str(model_path), n_threads=1)
    texts = test_strings(args.seed, args.n_random_tests)
    ids = bpe.encode(texts, output_type=yttm.OutputType.ID, dropout_prob=0.0)
    ids_out = args.ids_out or (args.out_dir / "golden_ids.json")
    ids_out.parent.mkdir(parents=True, exist_ok=True)
    subwords = bpe.encode(texts, output_type=yttm.OutputType.SUBWORD, dropout_prob=0.0)
    decoded = bpe.decode(ids)
    header = {
        "youtokentome_version": getattr(yttm, "__version__", "1.0.6"),
        "model": model_path.name,
        "vocab_size": bpe.vocab_size(),
        "vocab": bpe.vocab(),
    }
    # One case per line: readable diffs, small file.
    lines = [_json_line(header)[:-1] + ', "cases": [']
    for i, (t, ids_, sw, dec) in enumerate(zip(texts, ids, subwords, decoded, strict=True)):
        case = {"text": t, "ids": ids_, "subwords": sw, "decoded": dec}
        lines.append(_json_line(case) + ("," if i < len(texts) - 1 else ""))
    lines.append("]}")
    ids_out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {model_path} and {ids_out}: {len(texts)} texts, vocab {bpe.vocab_size()}")


if __name__ == "__main__":
    main()
