"""The demo catalogue's words: its columns and label values, Russian colour adjectives in
four grammatical forms, subcategories (noun, gender, shape, materials, prices) and the
sentence templates of the descriptions. Data only; :mod:`vitrina.demo.text` draws from it.
"""

from __future__ import annotations

from dataclasses import dataclass

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


# Grammatical gender of a noun: "m", "f", "n" (neuter) or "pl" (plural-only noun).
FORM = {"m": 0, "f": 1, "n": 2, "pl": 3}


def _hard(stem: str) -> tuple[str, str, str, str]:
    return (stem + "ый", stem + "ая", stem + "ое", stem + "ые")


# colour -> (adjective forms m/f/n/pl, RGB)
COLOURS: dict[str, tuple[tuple[str, str, str, str], tuple[int, int, int]]] = {
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
DEMO_COLOURS: tuple[str, ...] = tuple(COLOURS)
ADULT_ONLY_COLOURS = ("чёрный", "красный", "бордовый", "розовый", "белый", "фиолетовый")

GENDER_ADJ = {
    "female": ("женский", "женская", "женское", "женские"),
    "male": ("мужской", "мужская", "мужское", "мужские"),
    "unisex": ("унисекс",) * 4,
}
CHILD_ADJ = ("детский", "детская", "детское", "детские")
CHILD_SUFFIX = {"female": "для девочки", "male": "для мальчика"}
EROTIC_ADJ = ("Эротический", "Эротическая", "Эротическое", "Эротические")
LACE_ADJ = ("кружевной", "кружевная", "кружевное", "кружевные")

# pattern -> (title phrase, description noun)
PATTERNS = {
    "solid": ("", ""),
    "stripes": ("в полоску", "полоска"),
    "dots": ("в горошек", "горошек"),
    "checks": ("в клетку", "клетка"),
}
PATTERN_KEYS = tuple(PATTERNS)

# material: (nominative, genitive)
MATERIALS = {
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
class Subcategory:
    """One subcategory: its category, Russian noun and grammatical gender, drawn shape,
    description kind, sampling weight, price range (roubles), materials, the genders
    it is made for (adults / children) and the probability of a non-solid pattern."""

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
SUBCATEGORY_SPECS: dict[str, Subcategory] = {
    s.noun: s
    for s in (
        Subcategory("Одежда", "Платье", "n", "dress", "clothes", 1.3, (1500, 7000),
                     ("viscose", "cotton", "silk", "jersey", "linen"), ("female",), ("female",)),
        Subcategory("Одежда", "Брюки", "pl", "trousers", "clothes", 1.1, (1200, 5000),
                     ("cotton", "denim", "wool", "polyester", "linen"), ("female", "male", "unisex"),
                     ("female", "male")),
        Subcategory("Одежда", "Рубашка", "f", "shirt", "clothes", 1.0, (1000, 4000),
                     ("cotton", "linen", "viscose"), ("female", "male"), ("female", "male")),
        Subcategory("Одежда", "Футболка", "f", "tshirt", "clothes", 1.3, (400, 1800),
                     ("cotton", "jersey", "polyester"), ("female", "male", "unisex"),
                     ("female", "male", "unisex")),
        Subcategory("Одежда", "Юбка", "f", "skirt", "clothes", 0.9, (900, 4000),
                     ("cotton", "denim", "viscose", "wool"), ("female",), ("female",)),
        Subcategory("Одежда", "Куртка", "f", "jacket", "clothes", 1.0, (3000, 15000),
                     ("nylon", "polyester", "ecoleather", "leather"), ("female", "male", "unisex"),
                     ("female", "male", "unisex"), 0.3),
        Subcategory("Одежда", "Шорты", "pl", "shorts", "clothes", 0.7, (600, 2500),
                     ("cotton", "denim", "linen", "polyester"), ("female", "male", "unisex"),
                     ("female", "male", "unisex")),
        Subcategory("Обувь", "Кроссовки", "pl", "sneaker", "shoes", 1.1, (2500, 12000),
                     ("textile", "mesh", "ecoleather", "leather"), ("female", "male", "unisex"),
                     ("female", "male", "unisex"), 0.15),
        Subcategory("Обувь", "Туфли", "pl", "shoe", "shoes", 0.8, (2000, 9000),
                     ("leather", "ecoleather", "suede"), ("female", "male"), ("female", "male"), 0.1),
        Subcategory("Обувь", "Сапоги", "pl", "boot", "shoes", 0.6, (4000, 16000),
                     ("leather", "ecoleather", "suede"), ("female", "male"), ("female", "male"), 0.1),
        Subcategory("Аксессуары", "Сумка", "f", "bag", "bags", 0.8, (1500, 10000),
                     ("leather", "ecoleather", "textile", "suede"), ("female", "unisex"), ("female",),
                     0.3),
        Subcategory("Аксессуары", "Шапка", "f", "hat", "hats", 0.7, (300, 2000),
                     ("wool", "acrylic", "cotton", "cashmere"), ("female", "male", "unisex"),
                     ("female", "male", "unisex")),
        Subcategory("Бельё", "Комплект белья", "m", "lingerie", "underwear", 0.5, (800, 4500),
                     ("cotton", "lace", "satin", "microfiber", "silk"), ("female",),
                     ("female", "male"), 0.35),
        Subcategory("Бельё", "Боди", "n", "body", "underwear", 0.4, (500, 3500),
                     ("cotton", "jersey", "lace", "microfiber"), ("female",), ("unisex",), 0.35),
    )
}
# fmt: on
DEMO_SUBCATEGORIES: tuple[str, ...] = tuple(SUBCATEGORY_SPECS)
DEMO_CATEGORIES: tuple[str, ...] = ("Одежда", "Обувь", "Аксессуары", "Бельё")
#: subcategory -> category
DEMO_CATEGORY_OF: dict[str, str] = {k: v.category for k, v in SUBCATEGORY_SPECS.items()}


OCCASIONS = (
    "на каждый день",
    "для офиса",
    "для прогулок",
    "для отпуска",
    "для особых случаев",
    "для путешествий",
)
FEATURES = {
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
MATERIAL_TEMPLATES = (
    "Модель выполнена из {gen}.",
    "Материал: {nom}.",
    "Изготовлено из {gen}.",
    "Состав: {nom}.",
)
OCCASION_TEMPLATES = ("Подойдёт {occ}.", "Отличный выбор {occ}.", "Удобно носить {occ}.")
COLOUR_TEMPLATES = ("Цвет: {colour}", "Цвет — {colour}", "Оттенок: {colour}")
AUDIENCE = {
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
