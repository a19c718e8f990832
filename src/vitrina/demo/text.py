"""The demo catalogue's rows: product models, their colour variants, Russian titles and
descriptions, and for each row the style its photo is drawn with (:func:`make_rows`)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from vitrina.demo.vocabulary import (
    ADULT_ONLY_COLOURS,
    AUDIENCE,
    CHILD_ADJ,
    CHILD_SUFFIX,
    COLOUR_TEMPLATES,
    COLOURS,
    DEMO_COLOURS,
    DEMO_COLUMNS,
    EROTIC_ADJ,
    FEATURES,
    FORM,
    GENDER_ADJ,
    LACE_ADJ,
    MATERIAL_TEMPLATES,
    MATERIALS,
    OCCASION_TEMPLATES,
    OCCASIONS,
    PATTERN_KEYS,
    PATTERNS,
    SUBCATEGORY_SPECS,
    Subcategory,
)

_ADULT_SHARE = 0.08  # share of models that are adult-only (18+) goods
_CHILD_SHARE = 0.25  # share of (non-adult-only) models made for children
_OMIT_GENDER_SHARE = 0.15  # titles with no gender/age word
_N_COLOURS_P = (0.45, 0.35, 0.20)  # P(1, 2, 3 colour variants per model): mean 1.75


def make_rows(n_products: int, seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Build the clean table rows and, per row, the visual style used to draw its image.

    Args:
        n_products: number of rows.
        seed: every draw comes from ``default_rng([seed, 1])`` and, per model,
            ``default_rng([seed, 3, model index])``.

    Returns:
        ``(rows, styles)``: ``n_products`` dicts with the ``DEMO_COLUMNS`` keys, and as
        many style dicts (``shape``, ``rgb``, ``pattern``, ``child``, ``adult_only``,
        ``lace``, ``high_heel``, ``file``) for :func:`vitrina.demo.drawing.render`.
    """
    rng = np.random.default_rng([seed, 1])
    subcats = [s for s in SUBCATEGORY_SPECS.values()]
    weights = np.array([s.weight for s in subcats])
    weights /= weights.sum()
    variants: list[tuple[dict[str, Any], dict[str, Any]]] = []
    model_idx = 0
    while len(variants) < n_products:
        model_idx += 1
        mrng = np.random.default_rng([seed, 3, model_idx])
        model = _make_model(mrng, rng, subcats, weights)
        model["model_code"] = f"M{model_idx:05d}"
        n_colours = 1 + int(mrng.choice(3, p=_N_COLOURS_P))
        palette = ADULT_ONLY_COLOURS if model["is_adult"] else DEMO_COLOURS
        colours = mrng.choice(len(palette), size=n_colours, replace=False)
        for c in colours.tolist():
            variants.append(_make_variant(model, palette[c], mrng))
    variants = variants[:n_products]
    order = rng.permutation(len(variants))
    rows, styles = [], []
    for new_i, old_i in enumerate(order.tolist()):
        row, style = variants[old_i]
        sku = f"D{new_i + 1:06d}"
        row = {"sku": sku, **row, "picture": f"{sku}.jpg"}
        rows.append({c: row[c] for c in DEMO_COLUMNS})
        styles.append({**style, "file": f"{sku}.jpg"})
    return rows, styles


def _make_model(
    mrng: np.random.Generator,
    rng: np.random.Generator,
    subcats: list[Subcategory],
    weights: np.ndarray,
) -> dict[str, Any]:
    is_adult = bool(rng.random() < _ADULT_SHARE)
    if is_adult:
        sub = (
            SUBCATEGORY_SPECS["Комплект белья"] if rng.random() < 0.7 else SUBCATEGORY_SPECS["Боди"]
        )
        age, gender = "adult", "female"
    else:
        sub = subcats[int(rng.choice(len(subcats), p=weights))]
        age = "child" if rng.random() < _CHILD_SHARE else "adult"
        genders = sub.child_genders if age == "child" else sub.adult_genders
        gender = genders[int(mrng.integers(len(genders)))]
    lo, hi = sub.price
    price = math.exp(mrng.uniform(math.log(lo), math.log(hi))) * (0.6 if age == "child" else 1.0)
    price = round(price / 10) * 10 - (1 if mrng.random() < 0.6 else 0)
    if sub.patterned > mrng.random() and not is_adult:
        pattern = PATTERN_KEYS[1 + int(mrng.integers(3))]
    else:
        pattern = "solid"
    return {
        "sub": sub,
        "is_adult": is_adult,
        "age_group": age,
        "gender": gender,
        "price": float(max(price, 99)),
        "pattern": pattern,
        "material": sub.materials[int(mrng.integers(len(sub.materials)))],
        "omit_gender": bool(mrng.random() < _OMIT_GENDER_SHARE),
        "child_suffix": bool(mrng.random() < 0.75),
        "adult_style": int(mrng.integers(3)),
        "lace": bool(
            sub.kind == "underwear" and age == "adult" and not is_adult and mrng.random() < 0.3
        ),
    }


def _title(model: dict[str, Any], colour: str) -> str:
    sub: Subcategory = model["sub"]
    f = FORM[sub.gram]
    colour_adj = COLOURS[colour][0][f]
    pattern = PATTERNS[model["pattern"]][0]
    noun = sub.noun
    if model["is_adult"]:
        style = model["adult_style"]
        if style == 0:
            words = [EROTIC_ADJ[f], noun.lower(), colour_adj]
        elif style == 1:
            words = [noun, colour_adj, LACE_ADJ[f], "18+"]
        else:
            words = [noun, GENDER_ADJ["female"][f], colour_adj, "с портупеей"]
        return " ".join(words)
    words = [noun]
    suffix = ""
    if not model["omit_gender"]:
        if model["age_group"] == "adult":
            words.append(GENDER_ADJ[model["gender"]][f])
        elif model["gender"] in CHILD_SUFFIX and model["child_suffix"]:
            suffix = CHILD_SUFFIX[model["gender"]]
        else:
            words.append(CHILD_ADJ[f])
    words.append(colour_adj)
    if model["lace"]:
        words.append(LACE_ADJ[f])
    for extra in (pattern, suffix):
        if extra:
            words.append(extra)
    return " ".join(words)


def _description(model: dict[str, Any], colour: str, rng: np.random.Generator) -> str:
    sub: Subcategory = model["sub"]
    nom, gen = MATERIALS[model["material"]]
    pool = [
        MATERIAL_TEMPLATES[int(rng.integers(len(MATERIAL_TEMPLATES)))].format(nom=nom, gen=gen),
        FEATURES[sub.kind][int(rng.integers(len(FEATURES[sub.kind])))],
    ]
    if not model["is_adult"]:
        occ = OCCASIONS[int(rng.integers(len(OCCASIONS)))]
        pool.append(OCCASION_TEMPLATES[int(rng.integers(len(OCCASION_TEMPLATES)))].format(occ=occ))
    if rng.random() < 0.4:
        text = COLOUR_TEMPLATES[int(rng.integers(len(COLOUR_TEMPLATES)))].format(colour=colour)
        if model["pattern"] != "solid" and rng.random() < 0.5:
            text += f", принт — {PATTERNS[model['pattern']][1]}"
        pool.append(text + ".")
    pool = [pool[i] for i in rng.permutation(len(pool))]
    k = 1 + int(rng.integers(3))
    chosen = pool[:k]
    if model["is_adult"]:
        audience, p = "adult_only", 0.6
    elif model["age_group"] == "child":
        audience, p = "child", 0.4
    else:
        audience, p = model["gender"], 0.2
    if rng.random() < p:
        options = AUDIENCE[audience]
        sentence = options[int(rng.integers(len(options)))]
        chosen = chosen[:2] + [sentence]
    return " ".join(chosen)


def _make_variant(
    model: dict[str, Any], colour: str, rng: np.random.Generator
) -> tuple[dict, dict]:
    sub: Subcategory = model["sub"]
    row = {
        "name": _title(model, colour),
        "text": _description(model, colour, rng),
        "gender": model["gender"],
        "age_group": model["age_group"],
        "is_adult": model["is_adult"],
        "category": sub.category,
        "subcategory": sub.noun,
        "model_code": model["model_code"],
        "colour": colour,
        "price": model["price"],
    }
    style = {
        "shape": sub.shape,
        "rgb": COLOURS[colour][1],
        "pattern": model["pattern"],
        "child": model["age_group"] == "child",
        "adult_only": model["is_adult"],
        "lace": model["lace"],
        "high_heel": model["gender"] == "female" and model["age_group"] == "adult",
    }
    return row, style
