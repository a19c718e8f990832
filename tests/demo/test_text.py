"""The demo catalogue's rows (vitrina.demo.text, vitrina.demo.vocabulary): labels, titles, texts."""

from __future__ import annotations

import re

import pandas as pd

from tests.demo.conftest import N
from vitrina.demo import (
    DEMO_AGE_GROUPS,
    DEMO_CATEGORIES,
    DEMO_CATEGORY_OF,
    DEMO_COLOURS,
    DEMO_GENDERS,
    DEMO_SUBCATEGORIES,
)
from vitrina.demo.text import make_rows
from vitrina.demo.vocabulary import COLOURS, FORM, SUBCATEGORY_SPECS


def test_label_value_sets(clean):
    _, df = clean
    assert set(df["gender"]) <= set(DEMO_GENDERS)
    assert set(df["age_group"]) <= set(DEMO_AGE_GROUPS)
    assert set(df["category"]) <= set(DEMO_CATEGORIES)
    assert set(df["subcategory"]) <= set(DEMO_SUBCATEGORIES)
    assert set(df["colour"]) <= set(DEMO_COLOURS)
    assert (df["category"] == df["subcategory"].map(DEMO_CATEGORY_OF)).all()
    assert (df["price"] > 0).all()
    # adult-only goods are adult, female, underwear
    adult_only = df[df["is_adult"]]
    assert (adult_only["age_group"] == "adult").all()
    assert (adult_only["category"] == "Бельё").all()
    # colour variants of one model share every label but the colour
    for _, group in df.groupby("model_code"):
        assert group["colour"].is_unique
        for col in ("gender", "age_group", "is_adult", "category", "subcategory", "price"):
            assert group[col].nunique() == 1, col


def test_vocabulary_sizes():
    assert 12 <= len(DEMO_SUBCATEGORIES) <= 16
    assert set(DEMO_CATEGORY_OF.values()) == set(DEMO_CATEGORIES)


def test_titles_agree_in_grammatical_gender(clean):
    _, df = clean
    for row in df.itertuples():
        sub = SUBCATEGORY_SPECS[row.subcategory]
        form = COLOURS[row.colour][0][FORM[sub.gram]]
        assert form in row.name.split(), (row.name, form)
        assert sub.noun.lower() in row.name.lower()


def test_texts_are_short_russian_and_varied(clean):
    _, df = clean
    assert df["text"].str.contains(r"[а-яё]", regex=True).all()
    n_sentences = df["text"].str.count(r"[.!?](?:\s|$)")
    assert n_sentences.between(1, 3).all()
    assert df["text"].nunique() > N // 2


def test_label_shares_on_a_full_size_table():
    rows, _ = make_rows(1000, 42)
    df = pd.DataFrame(rows)
    assert 0.04 <= df["is_adult"].mean() <= 0.13
    per_model = len(df) / df["model_code"].nunique()
    assert 1.5 <= per_model <= 2.0
    assert set(df["gender"]) == set(DEMO_GENDERS)
    assert set(df["age_group"]) == set(DEMO_AGE_GROUPS)
    assert set(df["subcategory"]) == set(DEMO_SUBCATEGORIES)
    # the gender/age word is in most titles, but not all
    gender_word = re.compile(r"женск|мужск|унисекс|детск|для девочки|для мальчика|эротич", re.I)
    share = df["name"].str.contains(gender_word).mean()
    assert 0.75 <= share <= 0.92
