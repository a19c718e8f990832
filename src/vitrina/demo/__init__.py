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

Modules: :mod:`~vitrina.demo.vocabulary` (columns, label values, Russian word forms and
templates), :mod:`~vitrina.demo.text` (rows: titles, descriptions, photo styles),
:mod:`~vitrina.demo.drawing` (photos), :mod:`~vitrina.demo.defects` (planted defects),
:mod:`~vitrina.demo.catalogue` (writing and reading the catalogue on disk) and
:mod:`~vitrina.demo.masks` (the photos' true garment masks).
"""

from vitrina.demo.catalogue import (
    DEMO_VERSION,
    IMAGES_DIR,
    MANIFEST_NAME,
    TABLE_NAME,
    demo_catalogue_is_complete,
    generate_demo_catalogue,
    generation_params,
    read_demo_manifest,
    read_demo_table,
)
from vitrina.demo.defects import DEFECT_KINDS, PATH_TRAVERSAL_PICTURE, defect_plan
from vitrina.demo.masks import demo_masks_dir, true_mask, write_demo_masks
from vitrina.demo.vocabulary import (
    DEMO_AGE_GROUPS,
    DEMO_CATEGORIES,
    DEMO_CATEGORY_OF,
    DEMO_COLOURS,
    DEMO_COLUMNS,
    DEMO_GENDERS,
    DEMO_STR_COLUMNS,
    DEMO_SUBCATEGORIES,
)

__all__ = [
    "DEFECT_KINDS",
    "DEMO_AGE_GROUPS",
    "DEMO_CATEGORIES",
    "DEMO_CATEGORY_OF",
    "DEMO_COLOURS",
    "DEMO_COLUMNS",
    "DEMO_GENDERS",
    "DEMO_STR_COLUMNS",
    "DEMO_SUBCATEGORIES",
    "DEMO_VERSION",
    "IMAGES_DIR",
    "MANIFEST_NAME",
    "PATH_TRAVERSAL_PICTURE",
    "TABLE_NAME",
    "defect_plan",
    "demo_catalogue_is_complete",
    "demo_masks_dir",
    "generate_demo_catalogue",
    "generation_params",
    "read_demo_manifest",
    "read_demo_table",
    "true_mask",
    "write_demo_masks",
]
