"""The built-in ``demo`` catalogue: a small synthetic e-commerce product table with images.

``make run`` must work with no external files, so Vitrina ships this generator of an honest
smoke-test catalogue (it is **not** a benchmark). Everything is derived from one integer
seed: the same seed gives a byte-identical ``products.csv`` and pixel-identical images.

Layout written by :func:`generate_demo_catalogue`::

    out_dir/
      products.csv      UTF-8, one row per product (see ``DEMO_COLUMNS``)
      images/<sku>.jpg  one JPEG per product (width x height = ``image_size``)
      manifest.json     generation parameters + the planted defects (written last)

Column names are the demo source's *own* names; the project maps them onto the canonical
schema in ``conf/base/parameters_ingestion.yml``:

=============  ======  ======================================================================
column         dtype   values
=============  ======  ======================================================================
sku            str     ``"D000001"`` ... (unique except for the planted duplicate)
name           str     Russian title, e.g. «Платье женское красное в полоску»
text           str     Russian description, 1-3 sentences
picture        str     image file name relative to ``out_dir/images``, e.g. ``"D000123.jpg"``
gender         str     ``female`` / ``male`` / ``unisex``
age_group      str     ``adult`` / ``child``
is_adult       bool    adult-only (18+) goods, about 8 % of rows
category       str     ``DEMO_CATEGORIES``
subcategory    str     ``DEMO_SUBCATEGORIES`` (each belongs to exactly one category)
model_code     str     ``"M00001"`` ...; colour variants of one model share it (~1.75 per model)
colour         str     ``DEMO_COLOURS`` (masculine nominative form, e.g. ``"красный"``)
price          float   roubles
=============  ======  ======================================================================

Planted defects (``n_defects`` rows, positions fixed by the seed, listed in
``manifest.json["defects"]``) follow ``DEFECT_KINDS`` in order (cycling when
``n_defects > len(DEFECT_KINDS)``): empty ``name``; a ``sku`` copied from an earlier row;
a ``picture`` whose file does not exist; a truncated (corrupt) JPEG; ``picture`` =
``"../../etc/passwd"``; a second empty ``name``; an empty ``text``; a second missing file.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter

from vitrina.utils import new_temporary

logger = logging.getLogger(__name__)

#: Bump when the generated content changes, so stale catalogues are regenerated.
DEMO_VERSION = 1

DEMO_COLUMNS: tuple[str, ...] = (
    "sku",
    "name",
    "text",
    "picture",
    "gender",
    "age_group",
    "is_adult",
    "category",
    "subcategory",
    "model_code",
    "colour",
    "price",
)
#: Columns read as strings (everything except ``is_adult`` and ``price``).
DEMO_STR_COLUMNS: tuple[str, ...] = tuple(c for c in DEMO_COLUMNS if c not in {"is_adult", "price"})

DEMO_GENDERS: tuple[str, ...] = ("female", "male", "unisex")
DEMO_AGE_GROUPS: tuple[str, ...] = ("adult", "child")

DEFECT_KINDS: tuple[str, ...] = (
    "missing_name",
    "duplicate_sku",
    "missing_image",
    "corrupt_image",
    "path_traversal",
    "missing_name",
    "missing_text",
    "missing_image",
)
PATH_TRAVERSAL_PICTURE = "../../etc/passwd"

MANIFEST_NAME = "manifest.json"
TABLE_NAME = "products.csv"
IMAGES_DIR = "images"

# --------------------------------------------------------------------------- vocabulary
# Grammatical gender of a noun: "m", "f", "n" (neuter) or "pl" (plural-only noun).
_FORM = {"m": 0, "f": 1, "n": 2, "pl": 3}


def _hard(stem: str) -> tuple[str, str, str, str]:
    return (stem + "ый", stem + "ая", stem + "ое", stem + "ые")


# colour -> (adjective forms m/f/n/pl, RGB)
_COLOURS: dict[str, tuple[tuple[str, str, str, str], tuple[int, int, int]]] = {
    "красный": (_hard("красн"), (200, 32, 40)),
    "синий": (("синий", "синяя", "синее", "синие"), (32, 62, 170)),
    "чёрный": (_hard("чёрн"), (28, 28, 32)),
    "белый": (_hard("бел"), (252, 252, 250)),
    "зелёный": (_hard("зелён"), (40, 140, 64)),
    "жёлтый": (_hard("жёлт"), (242, 202, 40)),
    "серый": (_hard("сер"), (130, 130, 134)),
    "розовый": (_hard("розов"), (240, 150, 182)),
    "бежевый": (_hard("бежев"), (214, 190, 150)),
    "голубой": (("голубой", "голубая", "голубое", "голубые"), (118, 182, 232)),
    "коричневый": (_hard("коричнев"), (112, 70, 40)),
    "фиолетовый": (_hard("фиолетов"), (120, 60, 165)),
    "бордовый": (_hard("бордов"), (122, 20, 44)),
}
DEMO_COLOURS: tuple[str, ...] = tuple(_COLOURS)
_ADULT_ONLY_COLOURS = ("чёрный", "красный", "бордовый", "розовый", "белый", "фиолетовый")

_GENDER_ADJ = {
    "female": ("женский", "женская", "женское", "женские"),
    "male": ("мужской", "мужская", "мужское", "мужские"),
    "unisex": ("унисекс",) * 4,
}
_CHILD_ADJ = ("детский", "детская", "детское", "детские")
_CHILD_SUFFIX = {"female": "для девочки", "male": "для мальчика"}
_EROTIC_ADJ = ("Эротический", "Эротическая", "Эротическое", "Эротические")
_LACE_ADJ = ("кружевной", "кружевная", "кружевное", "кружевные")

# pattern -> (title phrase, description noun)
_PATTERNS = {
    "solid": ("", ""),
    "stripes": ("в полоску", "полоска"),
    "dots": ("в горошек", "горошек"),
    "checks": ("в клетку", "клетка"),
}
_PATTERN_KEYS = tuple(_PATTERNS)

# material: (nominative, genitive)
_M = {
    "cotton": ("хлопок", "хлопка"),
    "linen": ("лён", "льна"),
    "viscose": ("вискоза", "вискозы"),
    "polyester": ("полиэстер", "полиэстера"),
    "jersey": ("трикотаж", "трикотажа"),
    "wool": ("шерсть", "шерсти"),
    "denim": ("деним", "денима"),
    "silk": ("шёлк", "шёлка"),
    "nylon": ("нейлон", "нейлона"),
    "leather": ("натуральная кожа", "натуральной кожи"),
    "ecoleather": ("экокожа", "экокожи"),
    "suede": ("замша", "замши"),
    "textile": ("текстиль", "текстиля"),
    "mesh": ("сетка", "сетки"),
    "acrylic": ("акрил", "акрила"),
    "cashmere": ("кашемир", "кашемира"),
    "lace": ("кружево", "кружева"),
    "satin": ("атлас", "атласа"),
    "microfiber": ("микрофибра", "микрофибры"),
}


@dataclass(frozen=True)
class _Subcategory:
    category: str
    noun: str  # capitalised nominative
    gram: str  # "m" / "f" / "n" / "pl"
    shape: str
    kind: str  # clothes / shoes / bags / hats / underwear
    weight: float
    price: tuple[float, float]
    materials: tuple[str, ...]
    adult_genders: tuple[str, ...]
    child_genders: tuple[str, ...]
    patterned: float = 0.5  # probability of a non-solid pattern


# fmt: off
_SUBCATS: dict[str, _Subcategory] = {
    s.noun: s
    for s in (
        _Subcategory("Одежда", "Платье", "n", "dress", "clothes", 1.3, (1500, 7000),
                     ("viscose", "cotton", "silk", "jersey", "linen"), ("female",), ("female",)),
        _Subcategory("Одежда", "Брюки", "pl", "trousers", "clothes", 1.1, (1200, 5000),
                     ("cotton", "denim", "wool", "polyester", "linen"), ("female", "male", "unisex"),
                     ("female", "male")),
        _Subcategory("Одежда", "Рубашка", "f", "shirt", "clothes", 1.0, (1000, 4000),
                     ("cotton", "linen", "viscose"), ("female", "male"), ("female", "male")),
        _Subcategory("Одежда", "Футболка", "f", "tshirt", "clothes", 1.3, (400, 1800),
                     ("cotton", "jersey", "polyester"), ("female", "male", "unisex"),
                     ("female", "male", "unisex")),
        _Subcategory("Одежда", "Юбка", "f", "skirt", "clothes", 0.9, (900, 4000),
                     ("cotton", "denim", "viscose", "wool"), ("female",), ("female",)),
        _Subcategory("Одежда", "Куртка", "f", "jacket", "clothes", 1.0, (3000, 15000),
                     ("nylon", "polyester", "ecoleather", "leather"), ("female", "male", "unisex"),
                     ("female", "male", "unisex"), 0.3),
        _Subcategory("Одежда", "Шорты", "pl", "shorts", "clothes", 0.7, (600, 2500),
                     ("cotton", "denim", "linen", "polyester"), ("female", "male", "unisex"),
                     ("female", "male", "unisex")),
        _Subcategory("Обувь", "Кроссовки", "pl", "sneaker", "shoes", 1.1, (2500, 12000),
                     ("textile", "mesh", "ecoleather", "leather"), ("female", "male", "unisex"),
                     ("female", "male", "unisex"), 0.15),
        _Subcategory("Обувь", "Туфли", "pl", "shoe", "shoes", 0.8, (2000, 9000),
                     ("leather", "ecoleather", "suede"), ("female", "male"), ("female", "male"), 0.1),
        _Subcategory("Обувь", "Сапоги", "pl", "boot", "shoes", 0.6, (4000, 16000),
                     ("leather", "ecoleather", "suede"), ("female", "male"), ("female", "male"), 0.1),
        _Subcategory("Аксессуары", "Сумка", "f", "bag", "bags", 0.8, (1500, 10000),
                     ("leather", "ecoleather", "textile", "suede"), ("female", "unisex"), ("female",),
                     0.3),
        _Subcategory("Аксессуары", "Шапка", "f", "hat", "hats", 0.7, (300, 2000),
                     ("wool", "acrylic", "cotton", "cashmere"), ("female", "male", "unisex"),
                     ("female", "male", "unisex")),
        _Subcategory("Бельё", "Комплект белья", "m", "lingerie", "underwear", 0.5, (800, 4500),
                     ("cotton", "lace", "satin", "microfiber", "silk"), ("female",),
                     ("female", "male"), 0.35),
        _Subcategory("Бельё", "Боди", "n", "body", "underwear", 0.4, (500, 3500),
                     ("cotton", "jersey", "lace", "microfiber"), ("female",), ("unisex",), 0.35),
    )
}
# fmt: on
DEMO_SUBCATEGORIES: tuple[str, ...] = tuple(_SUBCATS)
DEMO_CATEGORIES: tuple[str, ...] = ("Одежда", "Обувь", "Аксессуары", "Бельё")
#: subcategory -> category
DEMO_CATEGORY_OF: dict[str, str] = {k: v.category for k, v in _SUBCATS.items()}

_ADULT_SHARE = 0.08  # share of models that are adult-only (18+) goods
_CHILD_SHARE = 0.25  # share of (non-adult-only) models made for children
_OMIT_GENDER_SHARE = 0.15  # titles with no gender/age word
_N_COLOURS_P = (0.45, 0.35, 0.20)  # P(1, 2, 3 colour variants per model): mean 1.75

_OCCASIONS = (
    "на каждый день",
    "для офиса",
    "для прогулок",
    "для отпуска",
    "для особых случаев",
    "для путешествий",
)
_FEATURES = {
    "clothes": (
        "Свободный крой не сковывает движений.",
        "Приталенный силуэт подчёркивает фигуру.",
        "Прямой крой и аккуратная отделка швов.",
        "Облегающий силуэт, приятная к телу ткань.",
        "Модель свободного кроя в стиле оверсайз.",
        "Классический крой, легко сочетается с другими вещами.",
    ),
    "shoes": (
        "Мягкая стелька и устойчивая подошва.",
        "Удобная колодка подходит для широкой стопы.",
        "Лёгкая и гибкая подошва.",
        "Нескользящая подошва с рельефным протектором.",
    ),
    "bags": (
        "Вместительное основное отделение и внутренний карман.",
        "Регулируемый плечевой ремень.",
        "Застёжка на молнию, подкладка из текстиля.",
    ),
    "hats": (
        "Плотная вязка с отворотом.",
        "Хорошо сохраняет тепло.",
        "Мягкая подкладка, не колется.",
    ),
    "underwear": (
        "Мягкие швы не натирают кожу.",
        "Регулируемые бретели.",
        "Деликатная отделка и удобная посадка.",
    ),
}
_MATERIAL_TEMPLATES = (
    "Модель выполнена из {gen}.",
    "Материал: {nom}.",
    "Изготовлено из {gen}.",
    "Состав: {nom}.",
)
_OCCASION_TEMPLATES = ("Подойдёт {occ}.", "Отличный выбор {occ}.", "Удобно носить {occ}.")
_COLOUR_TEMPLATES = ("Цвет: {colour}", "Цвет — {colour}", "Оттенок: {colour}")
_AUDIENCE = {
    "adult_only": (
        "Товар для взрослых (18+).",
        "Продажа только лицам старше 18 лет.",
        "Соблазнительный образ с кружевной отделкой.",
    ),
    "child": (
        "Мягкие материалы безопасны для детской кожи.",
        "Детская модель на каждый день.",
        "Размеры на рост от 98 до 152 см.",
    ),
    "female": ("Женская модель.", "Создано для женщин."),
    "male": ("Мужская модель.", "Создано для мужчин."),
    "unisex": ("Модель унисекс.",),
}


# --------------------------------------------------------------------------- public API
def defect_plan(n_defects: int) -> list[str]:
    """The defect kinds planted for a given ``n_defects``: ``DEFECT_KINDS`` in order, cycling.

    Args:
        n_defects: Number of defective rows (>= 0).

    Returns:
        A list of ``n_defects`` kind names from ``DEFECT_KINDS``.
    """
    return [DEFECT_KINDS[i % len(DEFECT_KINDS)] for i in range(n_defects)]


def read_demo_table(path: str | os.PathLike[str], nrows: int | None = None) -> pd.DataFrame:
    """Read a demo ``products.csv`` (or the catalogue directory holding it) with proper dtypes.

    Args:
        path: The catalogue directory or the ``products.csv`` file itself.
        nrows: Read only the first ``nrows`` rows (``None``: all).

    Returns:
        DataFrame with ``DEMO_COLUMNS``: string columns as ``str`` (missing values NaN),
        ``is_adult`` bool, ``price`` float64 (roubles).

    Raises:
        FileNotFoundError: When the table does not exist.
    """
    path = Path(path)
    if path.is_dir():
        path = path / TABLE_NAME
    return pd.read_csv(
        path,
        dtype={**{c: str for c in DEMO_STR_COLUMNS}, "is_adult": bool, "price": "float64"},
        nrows=nrows,
        encoding="utf-8",
        keep_default_na=False,  # a title "NA" or "None" is text; only empty cells are missing
        na_values=[""],
    )


def read_demo_manifest(out_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Return the parsed ``manifest.json`` of a catalogue directory, or ``None`` if absent/broken."""
    try:
        return json.loads((Path(out_dir) / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def demo_catalogue_is_complete(
    out_dir: str | os.PathLike[str],
    n_products: int = 1000,
    seed: int = 42,
    image_size: tuple[int, int] = (240, 320),
    n_defects: int = 8,
) -> bool:
    """Whether ``out_dir`` holds a complete catalogue generated with exactly these parameters."""
    out_dir = Path(out_dir)
    manifest = read_demo_manifest(out_dir)
    if manifest is None:
        return False
    wanted = _params(n_products, seed, image_size, n_defects)
    return (
        all(manifest.get(k) == v for k, v in wanted.items())
        and (out_dir / TABLE_NAME).is_file()
        and (out_dir / IMAGES_DIR).is_dir()
    )


def generate_demo_catalogue(
    out_dir: Path,
    n_products: int = 1000,
    seed: int = 42,
    image_size: tuple[int, int] = (240, 320),
    n_defects: int = 8,
) -> pd.DataFrame:
    """Generate (or reuse) the synthetic demo catalogue in ``out_dir`` and return its table.

    Generation is deterministic: the same arguments give a byte-identical ``products.csv``
    and pixel-identical JPEGs. It is atomic: everything is built in a temporary directory
    beside ``out_dir`` (same filesystem) and renamed into place, so ``out_dir`` is either
    absent, the previous catalogue, or complete. If ``out_dir`` already holds a complete
    catalogue with the same parameters (checked through ``manifest.json``), nothing is
    written and the existing table is read and returned. A catalogue with other parameters
    is replaced.

    Args:
        out_dir: Target directory (created, with its parents). Gets ``products.csv``,
            ``images/<picture>`` and ``manifest.json``.
        n_products: Number of rows (>= 1; >= 2 * n_defects + 2 when defects are planted).
        seed: Seed of every random choice (texts, labels, images, defect positions).
        image_size: ``(width, height)`` of every image in pixels (PIL convention), each >= 32.
            The default ``(240, 320)`` gives portrait images.
        n_defects: Number of planted defective rows (see ``DEFECT_KINDS``); 0 for a clean
            catalogue.

    Returns:
        The table as :func:`read_demo_table` reads it: ``n_products`` rows, ``DEMO_COLUMNS``.

    Raises:
        ValueError: On invalid arguments.
        FileExistsError: If ``out_dir`` exists, is not a demo catalogue and is not empty
            (it is never deleted then).
    """
    out_dir = Path(out_dir)
    width, height = _validate(n_products, seed, image_size, n_defects)
    params = _params(n_products, seed, (width, height), n_defects)
    if demo_catalogue_is_complete(out_dir, n_products, seed, (width, height), n_defects):
        logger.info("Demo catalogue in %s is up to date; generation skipped.", out_dir)
        return read_demo_table(out_dir)
    _check_replaceable(out_dir)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    tmp = new_temporary(out_dir, is_dir=True)  # 0o777 less the umask, not mkdtemp's 0o700
    try:
        _build(tmp, params, width, height)
        _move_into_place(tmp, out_dir, params)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info(
        "Generated demo catalogue (%d products, seed %d) in %s in %.1f s.",
        n_products,
        seed,
        out_dir,
        time.perf_counter() - started,
    )
    return read_demo_table(out_dir)


# --------------------------------------------------------------------------- orchestration
def _params(
    n_products: int, seed: int, image_size: tuple[int, int], n_defects: int
) -> dict[str, Any]:
    return {
        "version": DEMO_VERSION,
        "n_products": int(n_products),
        "seed": int(seed),
        "image_size": [int(image_size[0]), int(image_size[1])],
        "n_defects": int(n_defects),
    }


def _validate(n_products: int, seed: int, image_size: Any, n_defects: int) -> tuple[int, int]:
    if (
        isinstance(n_products, bool)
        or not isinstance(n_products, int | np.integer)
        or n_products < 1
    ):
        raise ValueError(f"n_products must be a positive int, got {n_products!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if isinstance(n_defects, bool) or not isinstance(n_defects, int | np.integer) or n_defects < 0:
        raise ValueError(f"n_defects must be a non-negative int, got {n_defects!r}")
    if n_defects and n_products < 2 * n_defects + 2:
        raise ValueError(
            f"n_products must be >= 2 * n_defects + 2 = {2 * n_defects + 2} to plant "
            f"{n_defects} defects, got {n_products}"
        )
    try:
        width, height = (int(v) for v in image_size)
    except (TypeError, ValueError):
        raise ValueError(f"image_size must be (width, height), got {image_size!r}") from None
    if width < 32 or height < 32:
        raise ValueError(f"image_size must be at least (32, 32), got {image_size!r}")
    return width, height


def _check_replaceable(out_dir: Path) -> None:
    if not out_dir.exists() or read_demo_manifest(out_dir) is not None:
        return
    if not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} exists and is not a directory")
    if any(p.name != ".gitkeep" for p in out_dir.iterdir()):
        raise FileExistsError(
            f"{out_dir} exists, is not empty and holds no demo catalogue ({MANIFEST_NAME}); "
            "refusing to replace it"
        )


def _move_into_place(tmp: Path, out_dir: Path, params: dict[str, Any]) -> None:
    """Rename the finished ``tmp`` onto ``out_dir``, replacing an old/empty ``out_dir``."""
    old: Path | None = None
    if out_dir.exists():
        if (out_dir / ".gitkeep").exists():
            shutil.copy2(out_dir / ".gitkeep", tmp / ".gitkeep")
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.replace(out_dir, old / "catalogue")
    try:
        os.replace(tmp, out_dir)
    except OSError:
        # Someone else (a parallel run) finished first: keep theirs if it is what we want.
        if not demo_catalogue_is_complete(
            out_dir,
            params["n_products"],
            params["seed"],
            tuple(params["image_size"]),
            params["n_defects"],
        ):
            raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _build(root: Path, params: dict[str, Any], width: int, height: int) -> None:
    n_products, seed, n_defects = params["n_products"], params["seed"], params["n_defects"]
    rows, styles = _make_rows(n_products, seed)
    defects = _plant_defects(rows, n_defects, seed)
    by_row = {d["row"]: d["kind"] for d in defects}

    images = root / IMAGES_DIR
    images.mkdir()
    for i, style in enumerate(styles):
        kind = by_row.get(i)
        if kind in ("missing_image", "path_traversal"):
            continue
        rng = np.random.default_rng([seed, 7, i])
        data = _encode_jpeg(_render(style, rng, width, height))
        if kind == "corrupt_image":
            data = data[: max(len(data) // 3, 64)]
        (images / style["file"]).write_bytes(data)

    table = pd.DataFrame(rows, columns=list(DEMO_COLUMNS))
    table.to_csv(
        root / TABLE_NAME, index=False, encoding="utf-8", lineterminator="\n", float_format="%.2f"
    )
    manifest = {
        **params,
        "generator": "vitrina.demo.generate_demo_catalogue",
        "n_rows": len(table),
        "columns": list(DEMO_COLUMNS),
        "image_size_order": "width,height",
        "defects": defects,
    }
    # Written last: its presence marks the catalogue complete.
    (root / MANIFEST_NAME).write_text(
        json.dumps(manifest, ensure_ascii=False, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )


def _plant_defects(rows: list[dict[str, Any]], n_defects: int, seed: int) -> list[dict[str, Any]]:
    """Mutate ``rows`` in place; return the defect records (row, sku, kind, ...) in row order."""
    if n_defects == 0:
        return []
    rng = np.random.default_rng([seed, 13])
    kinds = defect_plan(n_defects)
    # Rows 0/1 are kept clean so a duplicated sku always has an earlier original to copy.
    positions = rng.choice(np.arange(2, len(rows)), size=n_defects, replace=False)
    taken = {int(p) for p in positions}
    records = []
    for kind, pos in zip(kinds, positions.tolist(), strict=True):
        row = rows[pos]
        record: dict[str, Any] = {"kind": kind, "row": pos, "sku": row["sku"]}
        if kind == "missing_name":
            row["name"] = None
        elif kind == "missing_text":
            row["text"] = None
        elif kind == "duplicate_sku":
            candidates = [j for j in range(pos) if j not in taken]
            src = candidates[int(rng.integers(len(candidates)))]
            taken.add(src)
            record["original_sku"] = row["sku"]
            record["duplicate_of_row"] = src
            row["sku"] = rows[src]["sku"]
            record["sku"] = row["sku"]
        elif kind == "path_traversal":
            row["picture"] = PATH_TRAVERSAL_PICTURE
        record["picture"] = row["picture"]
        records.append(record)
    return sorted(records, key=lambda r: r["row"])


# --------------------------------------------------------------------------- table
def _make_rows(n_products: int, seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Build the clean table rows and, per row, the visual style used to draw its image."""
    rng = np.random.default_rng([seed, 1])
    subcats = [s for s in _SUBCATS.values()]
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
        palette = _ADULT_ONLY_COLOURS if model["is_adult"] else DEMO_COLOURS
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
    subcats: list[_Subcategory],
    weights: np.ndarray,
) -> dict[str, Any]:
    is_adult = bool(rng.random() < _ADULT_SHARE)
    if is_adult:
        sub = _SUBCATS["Комплект белья"] if rng.random() < 0.7 else _SUBCATS["Боди"]
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
        pattern = _PATTERN_KEYS[1 + int(mrng.integers(3))]
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
    sub: _Subcategory = model["sub"]
    f = _FORM[sub.gram]
    colour_adj = _COLOURS[colour][0][f]
    pattern = _PATTERNS[model["pattern"]][0]
    noun = sub.noun
    if model["is_adult"]:
        style = model["adult_style"]
        if style == 0:
            words = [_EROTIC_ADJ[f], noun.lower(), colour_adj]
        elif style == 1:
            words = [noun, colour_adj, _LACE_ADJ[f], "18+"]
        else:
            words = [noun, _GENDER_ADJ["female"][f], colour_adj, "с портупеей"]
        return " ".join(words)
    words = [noun]
    suffix = ""
    if not model["omit_gender"]:
        if model["age_group"] == "adult":
            words.append(_GENDER_ADJ[model["gender"]][f])
        elif model["gender"] in _CHILD_SUFFIX and model["child_suffix"]:
            suffix = _CHILD_SUFFIX[model["gender"]]
        else:
            words.append(_CHILD_ADJ[f])
    words.append(colour_adj)
    if model["lace"]:
        words.append(_LACE_ADJ[f])
    for extra in (pattern, suffix):
        if extra:
            words.append(extra)
    return " ".join(words)


def _description(model: dict[str, Any], colour: str, rng: np.random.Generator) -> str:
    sub: _Subcategory = model["sub"]
    nom, gen = _M[model["material"]]
    pool = [
        _MATERIAL_TEMPLATES[int(rng.integers(len(_MATERIAL_TEMPLATES)))].format(nom=nom, gen=gen),
        _FEATURES[sub.kind][int(rng.integers(len(_FEATURES[sub.kind])))],
    ]
    if not model["is_adult"]:
        occ = _OCCASIONS[int(rng.integers(len(_OCCASIONS)))]
        pool.append(
            _OCCASION_TEMPLATES[int(rng.integers(len(_OCCASION_TEMPLATES)))].format(occ=occ)
        )
    if rng.random() < 0.4:
        text = _COLOUR_TEMPLATES[int(rng.integers(len(_COLOUR_TEMPLATES)))].format(colour=colour)
        if model["pattern"] != "solid" and rng.random() < 0.5:
            text += f", принт — {_PATTERNS[model['pattern']][1]}"
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
        options = _AUDIENCE[audience]
        sentence = options[int(rng.integers(len(options)))]
        chosen = chosen[:2] + [sentence]
    return " ".join(chosen)


def _make_variant(
    model: dict[str, Any], colour: str, rng: np.random.Generator
) -> tuple[dict, dict]:
    sub: _Subcategory = model["sub"]
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
        "rgb": _COLOURS[colour][1],
        "pattern": model["pattern"],
        "child": model["age_group"] == "child",
        "adult_only": model["is_adult"],
        "lace": model["lace"],
        "high_heel": model["gender"] == "female" and model["age_group"] == "adult",
    }
    return row, style


# --------------------------------------------------------------------------- drawing
# Shapes are designed in a unit box (x right, y down, both in [0, 1]) that is mapped onto the
# image, so a circle of radius r needs y-radius r * a where a = width / height.
Pts = list[tuple[float, float]]


def _ell(
    cx: float, cy: float, rx: float, ry: float, a0: float = 0, a1: float = 360, n: int = 20
) -> Pts:
    ts = np.radians(np.linspace(a0, a1, n))
    return [(cx + rx * math.cos(t), cy + ry * math.sin(t)) for t in ts]


def _rect(x0: float, y0: float, x1: float, y1: float) -> Pts:
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def _mirror(pts: Pts) -> Pts:
    return [(1 - x, y) for x, y in pts]


# fmt: off
def _shape(style: dict[str, Any], a: float) -> dict[str, list]:
    """Silhouette of one product: mask polygons ("fill"/"erase"), detail lines, accents.

    ``accents`` are (polygon, rgb or "light"/"dark"/"same") drawn over the filled garment.
    """
    s = style["shape"]
    fill: list[tuple[str, Pts]] = []
    lines: list[Pts] = []
    accents: list[tuple[Pts, Any]] = []
    if s == "dress":
        fill.append(("fill", [(0.40, 0.07), (0.44, 0.07), (0.50, 0.17), (0.56, 0.07), (0.60, 0.07),
                              (0.64, 0.22), (0.60, 0.38), (0.82, 0.91), (0.66, 0.94), (0.50, 0.95),
                              (0.34, 0.94), (0.18, 0.91), (0.40, 0.38), (0.36, 0.22)]))
        lines += [[(0.40, 0.38), (0.60, 0.38)], [(0.45, 0.42), (0.36, 0.90)], [(0.55, 0.42), (0.64, 0.90)]]
    elif s == "trousers":
        fill.append(("fill", [(0.30, 0.06), (0.70, 0.06), (0.73, 0.30), (0.76, 0.94), (0.56, 0.94),
                              (0.505, 0.36), (0.495, 0.36), (0.44, 0.94), (0.24, 0.94), (0.27, 0.30)]))
        lines += [[(0.30, 0.11), (0.70, 0.11)], [(0.50, 0.11), (0.50, 0.30)],
                  [(0.31, 0.12), (0.38, 0.20)], [(0.69, 0.12), (0.62, 0.20)]]
    elif s == "shorts":
        fill.append(("fill", [(0.28, 0.24), (0.72, 0.24), (0.76, 0.44), (0.79, 0.66), (0.55, 0.68),
                              (0.505, 0.48), (0.495, 0.48), (0.45, 0.68), (0.21, 0.66), (0.24, 0.44)]))
        lines += [[(0.28, 0.29), (0.72, 0.29)], [(0.50, 0.29), (0.50, 0.44)],
                  [(0.22, 0.62), (0.45, 0.64)], [(0.55, 0.64), (0.78, 0.62)]]
    elif s == "shirt":
        fill.append(("fill", [(0.43, 0.10), (0.57, 0.10), (0.71, 0.15), (0.88, 0.58), (0.79, 0.62),
                              (0.68, 0.36), (0.69, 0.80), (0.60, 0.83), (0.50, 0.81), (0.40, 0.83),
                              (0.31, 0.80), (0.32, 0.36), (0.21, 0.62), (0.12, 0.58), (0.29, 0.15)]))
        accents += [([(0.43, 0.10), (0.50, 0.18), (0.44, 0.20), (0.41, 0.11)], "light"),
                    ([(0.57, 0.10), (0.50, 0.18), (0.56, 0.20), (0.59, 0.11)], "light")]
        lines += [[(0.50, 0.18), (0.50, 0.81)], [(0.135, 0.535), (0.225, 0.575)], [(0.775, 0.575), (0.865, 0.535)]]
        accents += [(_ell(0.52, y, 0.008, 0.008 * a, n=8), "dark") for y in (0.26, 0.37, 0.48, 0.59, 0.70)]
    elif s == "tshirt":
        fill.append(("fill", [(0.41, 0.14), *_ell(0.50, 0.14, 0.09, 0.07, 180, 0, 9)[1:-1], (0.59, 0.14),
                              (0.74, 0.18), (0.92, 0.34), (0.82, 0.46), (0.70, 0.38), (0.70, 0.86),
                              (0.30, 0.86), (0.30, 0.38), (0.18, 0.46), (0.08, 0.34), (0.26, 0.18)]))
        lines += [_ell(0.50, 0.14, 0.11, 0.09, 180, 0, 11)[1:-1], [(0.30, 0.38), (0.27, 0.20)],
                  [(0.70, 0.38), (0.73, 0.20)]]
    elif s == "skirt":
        fill.append(("fill", [(0.33, 0.22), (0.67, 0.22), (0.69, 0.28), (0.82, 0.78), (0.66, 0.80),
                              (0.50, 0.81), (0.34, 0.80), (0.18, 0.78), (0.31, 0.28)]))
        lines += [[(0.31, 0.28), (0.69, 0.28)], [(0.42, 0.28), (0.37, 0.79)], [(0.50, 0.28), (0.50, 0.80)],
                  [(0.58, 0.28), (0.63, 0.79)]]
    elif s == "jacket":
        fill.append(("fill", _ell(0.50, 0.14, 0.13, 0.10, 180, 360, 14)))
        fill.append(("fill", [(0.38, 0.12), (0.62, 0.12), (0.75, 0.17), (0.93, 0.70), (0.80, 0.74),
                              (0.71, 0.42), (0.73, 0.90), (0.27, 0.90), (0.29, 0.42), (0.20, 0.74),
                              (0.07, 0.70), (0.25, 0.17)]))
        accents.append((_ell(0.50, 0.14, 0.08, 0.06, 180, 360, 12), "dark"))
        lines += [[(0.50, 0.14), (0.50, 0.90)], [(0.27, 0.85), (0.73, 0.85)], [(0.32, 0.60), (0.40, 0.72)],
                  [(0.68, 0.60), (0.60, 0.72)], [(0.09, 0.66), (0.205, 0.70)], [(0.795, 0.70), (0.91, 0.66)]]
    elif s == "sneaker":
        fill.append(("fill", [(0.88, 0.66), (0.88, 0.46), (0.84, 0.40), (0.72, 0.40), (0.64, 0.35),
                              (0.58, 0.38), (0.40, 0.50), (0.20, 0.53), (0.10, 0.57), (0.07, 0.63),
                              (0.08, 0.66)]))
        accents.append(([(0.05, 0.64), (0.91, 0.64), (0.91, 0.72), (0.10, 0.72), (0.05, 0.69)], (236, 236, 232)))
        lines += [[(0.25, 0.62), (0.55, 0.56), (0.80, 0.47)]]
        lines += [[(0.44 + 0.045 * k, 0.49 - 0.03 * k), (0.49 + 0.045 * k, 0.52 - 0.03 * k)] for k in range(4)]
    elif s == "shoe" and style["high_heel"]:
        fill.append(("fill", [(0.05, 0.74), (0.10, 0.68), (0.28, 0.62), (0.40, 0.62), (0.50, 0.58),
                              (0.66, 0.46), (0.80, 0.34), (0.85, 0.36), (0.85, 0.46), (0.82, 0.50),
                              (0.83, 0.80), (0.79, 0.80), (0.76, 0.54), (0.62, 0.60), (0.40, 0.74),
                              (0.20, 0.78), (0.08, 0.78)]))
        lines += [[(0.28, 0.62), (0.40, 0.62), (0.50, 0.58), (0.66, 0.46), (0.80, 0.34)]]
    elif s in ("shoe", "boot"):
        if s == "shoe":
            fill.append(("fill", [(0.06, 0.75), (0.05, 0.70), (0.07, 0.66), (0.12, 0.63), (0.22, 0.60),
                                  (0.36, 0.56), (0.48, 0.50), (0.56, 0.46), (0.62, 0.47), (0.74, 0.50),
                                  (0.86, 0.44), (0.89, 0.46), (0.91, 0.56), (0.91, 0.75)]))
            lines += [[(0.40 + 0.04 * k, 0.56 - 0.025 * k), (0.44 + 0.04 * k, 0.59 - 0.025 * k)] for k in range(3)]
            lines += [[(0.22, 0.60), (0.24, 0.66), (0.22, 0.73)], [(0.62, 0.47), (0.66, 0.60), (0.91, 0.60)]]
            accents.append(([(0.05, 0.74), (0.92, 0.74), (0.92, 0.81), (0.74, 0.81), (0.72, 0.78),
                             (0.07, 0.78)], "dark"))
        else:
            fill.append(("fill", [(0.38, 0.08), (0.66, 0.08), (0.66, 0.62), (0.70, 0.80), (0.14, 0.80),
                                  (0.12, 0.76), (0.18, 0.71), (0.36, 0.66), (0.40, 0.55), (0.40, 0.30)]))
            lines += [[(0.38, 0.13), (0.66, 0.13)], [(0.61, 0.15), (0.61, 0.62)]]
            accents.append(([(0.11, 0.79), (0.71, 0.79), (0.71, 0.86), (0.56, 0.86), (0.54, 0.83),
                             (0.14, 0.83)], "dark"))
    elif s == "bag":
        fill.append(("fill", _ell(0.50, 0.42, 0.20, 0.24, 180, 360, 18)))
        fill.append(("erase", _ell(0.50, 0.42, 0.155, 0.195, 180, 360, 18)))
        fill.append(("fill", [(0.20, 0.40), (0.80, 0.40), (0.86, 0.80), (0.80, 0.84), (0.20, 0.84), (0.14, 0.80)]))
        lines += [[(0.20, 0.40), (0.50, 0.58), (0.80, 0.40)]]
        accents.append((_rect(0.47, 0.56, 0.53, 0.62), (205, 172, 60)))
    elif s == "hat":
        fill.append(("fill", _ell(0.50, 0.56, 0.30, 0.32, 180, 360, 20)))
        fill.append(("fill", _ell(0.50, 0.24, 0.075, 0.075 * a, n=14)))
        fill.append(("fill", _rect(0.18, 0.52, 0.82, 0.68)))
        lines += [[(0.18, 0.52), (0.82, 0.52)]] + [[(x, 0.54), (x, 0.66)] for x in np.arange(0.22, 0.80, 0.05)]
    elif s == "lingerie" and style["child"]:  # vest top + briefs
        fill.append(("fill", [(0.35, 0.06), (0.40, 0.06), *_ell(0.50, 0.08, 0.10, 0.08, 180, 0, 9)[1:-1],
                              (0.60, 0.06), (0.65, 0.06), (0.67, 0.22), (0.69, 0.46), (0.31, 0.46),
                              (0.33, 0.22)]))
        fill.append(("fill", [(0.30, 0.54), (0.70, 0.54), (0.70, 0.64), (0.56, 0.74), (0.44, 0.74),
                              (0.30, 0.64)]))
        lines += [[(0.31, 0.43), (0.69, 0.43)], [(0.30, 0.58), (0.70, 0.58)]]
    elif s == "lingerie":
        for cx in (0.38, 0.62):
            fill.append(("fill", _ell(cx, 0.35, 0.12, 0.12, 180, 360, 14)))
        fill.append(("fill", _rect(0.25, 0.33, 0.75, 0.39)))
        fill.append(("fill", [(0.37, 0.24), (0.39, 0.24), (0.37, 0.06), (0.35, 0.06)]))
        fill.append(("fill", _mirror([(0.37, 0.24), (0.39, 0.24), (0.37, 0.06), (0.35, 0.06)])))
        fill.append(("fill", [(0.28, 0.52), (0.72, 0.52), (0.70, 0.58), (0.56, 0.74), (0.44, 0.74), (0.30, 0.58)]))
        lines += [[(0.50, 0.24), (0.50, 0.39)], [(0.29, 0.55), (0.71, 0.55)]]
        if style["adult_only"]:
            lines += [[(0.32, 0.58), (0.30, 0.97)], [(0.68, 0.58), (0.70, 0.97)]]
    elif s == "body":
        if style["child"]:
            fill.append(("fill", [(0.42, 0.12), (0.46, 0.16), (0.54, 0.16), (0.58, 0.12), (0.70, 0.16),
                                  (0.82, 0.28), (0.74, 0.36), (0.66, 0.30), (0.66, 0.62), (0.72, 0.74),
                                  (0.56, 0.86), (0.44, 0.86), (0.28, 0.74), (0.34, 0.62), (0.34, 0.30),
                                  (0.26, 0.36), (0.18, 0.28), (0.30, 0.16)]))
            accents += [(_ell(x, 0.83, 0.012, 0.012 * a, n=8), "light") for x in (0.47, 0.53)]
        else:
            depth = 0.30 if style["adult_only"] else 0.16
            fill.append(("fill", [(0.38, 0.08), (0.42, 0.08), (0.50, depth), (0.58, 0.08), (0.62, 0.08),
                                  (0.65, 0.28), (0.62, 0.46), (0.66, 0.62), (0.55, 0.80), (0.45, 0.80),
                                  (0.34, 0.62), (0.38, 0.46), (0.35, 0.28)]))
            lines += [[(0.38, 0.46), (0.62, 0.46)]]
            if style["adult_only"]:
                lines += [[(0.36, 0.66), (0.33, 0.97)], [(0.64, 0.66), (0.67, 0.97)]]
    else:  # pragma: no cover - every subcategory has a shape
        raise ValueError(f"unknown shape {s!r}")
    return {"fill": fill, "lines": lines, "accents": accents}
# fmt: on


def _pattern_fill(
    style: dict[str, Any], rgb: np.ndarray, u: np.ndarray, v: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """(H, W, 3) float32 fabric: ``rgb`` with the style's pattern in garment coordinates u, v (px)."""
    h, w = u.shape
    out = np.broadcast_to(rgb.astype(np.float32), (h, w, 3)).copy()
    pattern = style["pattern"]
    if pattern == "solid":
        return out
    lum = float(rgb @ np.array([0.299, 0.587, 0.114]))
    if lum > 170:
        second = np.array(
            [(30, 40, 95), (185, 30, 45), (35, 35, 35)][int(rng.integers(3))], np.float32
        )
    else:
        second = (rgb * 0.3 + 255 * 0.7).astype(np.float32)
    period = float(rng.uniform(14, 22))
    if pattern == "stripes":
        coord = v if rng.random() < 0.7 else (u + v) / math.sqrt(2)
        on = np.mod(coord, period) < period * 0.4
    elif pattern == "dots":
        du = np.mod(u + (np.floor(v / period) % 2) * period / 2, period) - period / 2
        dv = np.mod(v, period) - period / 2
        on = du * du + dv * dv < (period * 0.22) ** 2
    else:  # checks: two-tone gingham
        bu = np.mod(u, period) < period / 2
        bv = np.mod(v, period) < period / 2
        out[bu ^ bv] = out[bu ^ bv] * 0.55 + second * 0.45
        on = bu & bv
    out[on] = second
    return out


def _layout(style: dict[str, Any], rng: np.random.Generator, width: int, height: int) -> dict:
    """Colours, placement and silhouette of one photo (the first random draws of ``_render``).

    Returns ``rgb``, ``bg``, ``scale``, ``cx``, ``cy``, ``cos_t``, ``sin_t``, ``tf`` (unit box →
    pixels), ``shape`` (``_shape``), ``mask`` (L, 255 inside the fill polygons) and ``line_w``;
    :mod:`vitrina.demo_masks` replays it to write the true garment masks.
    """
    base = np.array(style["rgb"], np.float32)
    rgb = np.clip(base + rng.integers(-10, 11, 3), 0, 255).astype(np.float32)
    bg = np.clip(
        np.array([238, 238, 236]) + rng.integers(-10, 9, 3) + rng.integers(-4, 5), 200, 255
    )
    scale = float(rng.uniform(0.60, 0.72) if style["child"] else rng.uniform(0.84, 0.98))
    cx = width / 2 + rng.normal(0, 0.035) * width
    cy = height / 2 + rng.normal(0, 0.03) * height
    theta = math.radians(float(rng.uniform(-9, 9)))
    cos_t, sin_t = math.cos(theta), math.sin(theta)

    def tf(pts: Pts) -> list[tuple[float, float]]:
        out = []
        for x, y in pts:
            dx, dy = (x - 0.5) * width * scale, (y - 0.5) * height * scale
            out.append((cx + dx * cos_t - dy * sin_t, cy + dx * sin_t + dy * cos_t))
        return out

    shape = _shape(style, width / height)
    mask = Image.new("L", (width, height), 0)
    mdraw = ImageDraw.Draw(mask)
    for op, pts in shape["fill"]:
        mdraw.polygon(tf(pts), fill=255 if op == "fill" else 0)
    line_w = max(1, round(2 * scale * min(width, height) / 240))
    return {"rgb": rgb, "bg": bg, "scale": scale, "cx": cx, "cy": cy, "cos_t": cos_t,
            "sin_t": sin_t, "tf": tf, "shape": shape, "mask": mask, "line_w": line_w}  # fmt: skip


def _render(
    style: dict[str, Any], rng: np.random.Generator, width: int, height: int
) -> Image.Image:
    """Draw one product photo: (height, width) RGB, light background, coloured silhouette."""
    lay = _layout(style, rng, width, height)
    rgb, bg, scale, cx, cy = lay["rgb"], lay["bg"], lay["scale"], lay["cx"], lay["cy"]
    cos_t, sin_t, tf, shape, mask = lay["cos_t"], lay["sin_t"], lay["tf"], lay["shape"], lay["mask"]

    # garment coordinates (pixels at scale 1, rotated with the garment) for the pattern
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    dx, dy = xx - cx, yy - cy
    u = (dx * cos_t + dy * sin_t) / scale
    v = (-dx * sin_t + dy * cos_t) / scale
    fabric = _pattern_fill(style, rgb, u, v, rng)
    if style["adult_only"] or style["lace"]:  # lace mesh: thin diagonal lattice
        p = 7.0
        mesh = (np.mod(u + v, p) < 1.3) | (np.mod(u - v, p) < 1.3)
        fabric[mesh] = fabric[mesh] * 0.45 + (20.0 if rgb.mean() > 60 else 200.0) * 0.55

    canvas = np.empty((height, width, 3), np.float32)
    canvas[:] = bg
    shadow = (
        np.asarray(
            mask.transform(mask.size, Image.Transform.AFFINE, (1, 0, -5, 0, 1, -7)).filter(
                ImageFilter.GaussianBlur(5)
            ),
            np.float32,
        )
        / 255.0
    )
    canvas *= 1.0 - 0.22 * shadow[..., None]
    m = np.asarray(mask.filter(ImageFilter.GaussianBlur(0.6)), np.float32)[..., None] / 255.0
    canvas = canvas * (1 - m) + fabric * m
    edge = (np.asarray(mask.filter(ImageFilter.MaxFilter(3)), np.uint8) > 0) & (
        np.asarray(mask) == 0
    )
    dark = tuple(int(c) for c in rgb * 0.5)
    light = tuple(int(c) for c in np.minimum(rgb * 0.7 + 255 * 0.3, 255))
    canvas[edge] = canvas[edge] * 0.3 + np.array(dark, np.float32) * 0.7

    img = Image.fromarray(canvas.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    for pts, colour in shape["accents"]:
        c = (
            {"dark": dark, "light": light}.get(colour, colour)
            if isinstance(colour, str)
            else colour
        )
        draw.polygon(tf(pts), fill=c, outline=dark)
    line_w = lay["line_w"]
    for pts in shape["lines"]:
        draw.line(tf(pts), fill=dark, width=line_w)
    if style["adult_only"] and style["shape"] == "lingerie":  # scalloped lace trim
        for x in np.linspace(0.27, 0.73, 10):
            draw.ellipse(_bbox(tf([(x, 0.395)])[0], 2.5 * scale * width / 240), outline=dark)
        for x in np.linspace(0.30, 0.70, 9):
            draw.ellipse(_bbox(tf([(x, 0.525)])[0], 2.5 * scale * width / 240), outline=dark)

    arr = np.asarray(img, np.float32) + rng.normal(0.0, 3.0, (height, width, 1)).astype(np.float32)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def _bbox(c: tuple[float, float], r: float) -> tuple[float, float, float, float]:
    return (c[0] - r, c[1] - r, c[0] + r, c[1] + r)


def _encode_jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()
