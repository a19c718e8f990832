"""The demo catalogue's photos: a garment silhouette per subcategory shape, drawn from
polygons with its colour, pattern, shadow and noise (:func:`render`). The seeded
:func:`layout` is public so that :mod:`vitrina.demo.masks` can replay it."""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

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


def layout(style: dict[str, Any], rng: np.random.Generator, width: int, height: int) -> dict:
    """Colours, placement and silhouette of one photo (the first random draws of ``render``).

    Returns ``rgb``, ``bg``, ``scale``, ``cx``, ``cy``, ``cos_t``, ``sin_t``, ``tf`` (unit box →
    pixels), ``shape`` (``_shape``), ``mask`` (L, 255 inside the fill polygons) and ``line_w``;
    :mod:`vitrina.demo.masks` replays it to write the true garment masks.
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


def render(style: dict[str, Any], rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Draw one product photo: (height, width) RGB, light background, coloured silhouette."""
    lay = layout(style, rng, width, height)
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


def encode_jpeg(img: Image.Image) -> bytes:
    """``img`` as JPEG bytes (quality 90)."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()
