"""Paint one synthetic FoodSeg103-style photo: a plate of food on a table, and its mask.

Each food class has a model (base and secondary colour, a texture, a shape). Classes that share a
hue differ in texture or shape, so a model has to look at more than colour. Everything is drawn
with vectorised numpy from one ``numpy.random.Generator``; the same generator state gives the same
pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageFilter

from cmi_cli.classes import foodseg103_class_names, hue_colors

RGB = tuple[int, int, int]
Array = np.ndarray

TEXTURES = (
    "smooth", "gloss", "speckle", "florets", "grains", "fibers", "porous", "veins", "rings", "yolk",
)  # fmt: skip
PLATE_COLORS = ((242, 242, 238), (236, 230, 214), (196, 214, 230), (70, 74, 80), (226, 236, 228))
SHAPES = ("blob", "mound", "slab", "round", "pieces", "sticks", "cubes")


@dataclass(frozen=True)
class ClassModel:
    """How the generator draws one food class.

    Attributes:
        class_id: The FoodSeg103 id (1..103).
        name: The FoodSeg103 name.
        base: Main colour.
        second: Colour of the texture's detail (seeds, crust, veins, yolk, ...).
        texture: One of ``TEXTURES``.
        shape: One of ``SHAPES``.
    """

    class_id: int
    name: str
    base: RGB
    second: RGB
    texture: str
    shape: str


# Hand-made models, the first twelve being the default sample. Pairs share a hue and differ in
# texture or shape: tomato/strawberry, broccoli/lettuce, rice/tofu/egg, steak/bread, fries/carrot.
_HAND_MADE: tuple[tuple[int, RGB, RGB, str, str], ...] = (
    (73, (205, 38, 30), (255, 225, 215), "gloss", "round"),  # tomato
    (30, (196, 30, 45), (235, 215, 110), "speckle", "pieces"),  # strawberry
    (87, (52, 105, 40), (120, 165, 70), "florets", "pieces"),  # broccoli
    (80, (120, 185, 70), (205, 235, 160), "veins", "mound"),  # lettuce
    (66, (238, 236, 226), (178, 174, 160), "grains", "mound"),  # rice
    (68, (236, 228, 200), (214, 202, 166), "smooth", "cubes"),  # tofu
    (24, (246, 244, 236), (250, 185, 35), "yolk", "blob"),  # egg
    (46, (122, 62, 40), (70, 35, 22), "fibers", "slab"),  # steak
    (58, (214, 170, 112), (140, 86, 44), "porous", "slab"),  # bread
    (3, (236, 196, 96), (196, 140, 52), "smooth", "sticks"),  # french fries
    (84, (238, 118, 30), (252, 170, 80), "rings", "pieces"),  # carrot
    (32, (52, 56, 96), (150, 160, 200), "gloss", "pieces"),  # blueberry
    (25, (190, 40, 40), (255, 230, 210), "gloss", "round"),  # apple
    (31, (140, 12, 32), (255, 210, 210), "gloss", "pieces"),  # cherry
    (41, (100, 40, 90), (220, 190, 220), "gloss", "pieces"),  # grape
    (42, (130, 165, 60), (40, 30, 20), "speckle", "round"),  # kiwi
    (45, (228, 62, 72), (30, 25, 25), "speckle", "slab"),  # watermelon
    (48, (222, 178, 128), (170, 120, 75), "fibers", "slab"),  # chicken duck
    (49, (168, 80, 60), (230, 160, 140), "gloss", "sticks"),  # sausage
    (54, (234, 224, 208), (200, 185, 165), "fibers", "slab"),  # fish
    (56, (245, 150, 110), (250, 225, 210), "fibers", "pieces"),  # shrimp
    (64, (240, 208, 118), (200, 160, 70), "fibers", "mound"),  # pasta
    (70, (225, 200, 140), (190, 160, 100), "smooth", "pieces"),  # potato
    (72, (236, 230, 208), (200, 190, 160), "florets", "pieces"),  # cauliflower
    (82, (150, 200, 100), (40, 90, 30), "rings", "pieces"),  # cucumber
    (85, (110, 150, 60), (70, 110, 40), "fibers", "sticks"),  # asparagus
    (93, (230, 214, 220), (190, 150, 170), "rings", "blob"),  # onion
    (94, (60, 150, 50), (200, 240, 190), "gloss", "blob"),  # pepper
    (95, (90, 150, 60), (60, 110, 40), "smooth", "sticks"),  # green beans
    (98, (110, 70, 40), (200, 180, 150), "porous", "round"),  # shiitake
    (4, (82, 46, 26), (120, 80, 50), "smooth", "cubes"),  # chocolate
    (10, (230, 200, 160), (120, 70, 40), "porous", "slab"),  # cake
    (52, (150, 60, 30), (190, 100, 50), "smooth", "blob"),  # sauce
    (102, (130, 180, 70), (200, 60, 60), "veins", "mound"),  # salad
)

SAMPLE_CLASS_IDS: tuple[int, ...] = tuple(sorted(row[0] for row in _HAND_MADE[:12]))
"""The food class ids of the default sample (``num_food_classes=12``)."""


@lru_cache(maxsize=1)
def class_models() -> dict[int, ClassModel]:
    """Return a model for every FoodSeg103 food class (1..103), hand-made ones first.

    Classes without a hand-made model get a muted version of their hue colour and a texture
    and shape chosen by id, so any subset of the 103 classes can be drawn.
    """
    names = foodseg103_class_names()
    models = {
        cid: ClassModel(cid, names[cid], base, second, texture, shape)
        for cid, base, second, texture, shape in _HAND_MADE
    }
    palette = hue_colors(len(names))  # not the class palette: the photos must not change
    for cid in range(1, len(names)):
        if cid in models:
            continue
        r, g, b = palette[cid]
        base = (int(0.7 * r + 60), int(0.7 * g + 55), int(0.7 * b + 45))
        second = (int(0.6 * base[0]), int(0.6 * base[1]), int(0.6 * base[2]))
        texture, shape = TEXTURES[cid % len(TEXTURES)], SHAPES[(cid * 3) % len(SHAPES)]
        models[cid] = ClassModel(cid, names[cid], base, second, texture, shape)
    return models


def class_order() -> tuple[int, ...]:
    """Return the food class ids in the order a sample of ``n`` classes takes the first ``n``."""
    hand = tuple(row[0] for row in _HAND_MADE)
    return hand + tuple(cid for cid in range(1, 104) if cid not in hand)


def _noise(rng: np.random.Generator, size: int, feature: float) -> Array:
    """Smooth value noise in [0, 1] whose blobs are about ``feature`` pixels wide."""
    cells = max(2, int(np.ceil(size / max(feature, 1.0)))) + 1
    grid = Image.fromarray(rng.random((cells, cells), dtype=np.float32))
    return np.asarray(grid.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)


def _mix(a: Array, b: Array, t: Array) -> Array:
    return a + (b - a) * np.clip(t, 0.0, 1.0)[..., None]


@dataclass
class _Shape:
    """An item's region: ``rho`` < 1 inside, with coordinates in the item's own frame."""

    rho: Array
    nu: Array
    nv: Array


def _paint_piece(
    shape: _Shape, cx: float, cy: float, a: float, b: float, angle: float, power: float,
    wobble: Array, phases: Array,
) -> None:  # fmt: skip
    """Add one (super)elliptic piece with a wavy outline to ``shape`` where it is nearest."""
    size = shape.rho.shape[0]
    reach = max(a, b) * 1.4
    x0, x1 = max(0, int(cx - reach)), min(size, int(cx + reach) + 1)
    y0, y1 = max(0, int(cy - reach)), min(size, int(cy + reach) + 1)
    if x0 >= x1 or y0 >= y1:
        return
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dx, dy = xs - cx, ys - cy
    cos, sin = np.cos(angle), np.sin(angle)
    u, v = (dx * cos + dy * sin) / a, (-dx * sin + dy * cos) / b
    theta = np.arctan2(v, u)
    radius = 1.0 + sum(
        w * np.cos((k + 2) * theta + p) for k, (w, p) in enumerate(zip(wobble, phases, strict=True))
    )
    rho = (np.abs(u) ** power + np.abs(v) ** power) ** (1.0 / power) / radius
    region = shape.rho[y0:y1, x0:x1]
    nearer = rho < region
    region[nearer] = rho[nearer]
    shape.nu[y0:y1, x0:x1][nearer] = u[nearer]
    shape.nv[y0:y1, x0:x1][nearer] = v[nearer]


def _draw_shape(rng: np.random.Generator, kind: str, size: int, plate: Array) -> _Shape:
    """Draw the region of one item of ``kind`` somewhere on the plate ``(cx, cy, rx, ry)``."""
    shape = _Shape(*(np.full((size, size), np.inf, np.float32) for _ in range(3)))
    pcx, pcy, prx, pry = plate
    r_plate = float(min(prx, pry))
    ang, dist = rng.uniform(0, 2 * np.pi), r_plate * np.sqrt(rng.uniform(0, 0.3))
    cx, cy = pcx + dist * np.cos(ang), pcy + dist * np.sin(ang)
    # (pieces, size range as a fraction of the plate radius, aspect range, superellipse power)
    spec = {
        "blob": ((1, 1), (0.34, 0.5), (0.65, 1.0), 2.0),
        "mound": ((1, 1), (0.45, 0.65), (0.7, 1.0), 2.0),
        "slab": ((1, 1), (0.4, 0.6), (0.45, 0.7), 2.6),
        "round": ((1, 3), (0.16, 0.26), (0.85, 1.0), 2.0),
        "pieces": ((4, 11), (0.07, 0.13), (0.8, 1.0), 2.0),
        "sticks": ((3, 8), (0.3, 0.48), (0.09, 0.16), 4.0),
        "cubes": ((3, 7), (0.1, 0.15), (0.85, 1.0), 5.0),
    }[kind]
    (lo, hi), (s_lo, s_hi), (q_lo, q_hi), power = spec
    count = int(rng.integers(lo, hi + 1))
    spread = 0.0 if count == 1 else r_plate * 0.28
    main_angle = rng.uniform(0, np.pi)
    for _ in range(count):
        a = r_plate * rng.uniform(s_lo, s_hi)
        b = a * rng.uniform(q_lo, q_hi)
        ox, oy = rng.normal(0, 1, 2) * spread
        angle = main_angle + rng.normal(0, 0.5) if kind == "sticks" else rng.uniform(0, np.pi)
        wobble = rng.uniform(0, 0.12, 4) / np.arange(1, 5) * (0.4 if power > 2 else 1.0)
        _paint_piece(
            shape, cx + ox, cy + oy, a, b, angle, power, wobble, rng.uniform(0, 2 * np.pi, 4)
        )
    return shape


def _texture(rng: np.random.Generator, model: ClassModel, shape: _Shape) -> Array:
    """Return the item's colours (H, W, 3, in 0..1) before lighting."""
    size = shape.rho.shape[0]
    px = size / 256.0
    jitter = rng.normal(1.0, 0.03, 3).astype(np.float32)
    base = np.array(model.base, np.float32) / 255 * jitter
    second = np.array(model.second, np.float32) / 255 * jitter
    rho = np.where(np.isfinite(shape.rho), shape.rho, 2.0).astype(np.float32)
    nu, nv = np.nan_to_num(shape.nu, posinf=0.0), np.nan_to_num(shape.nv, posinf=0.0)
    mottle = _noise(rng, size, 22 * px) - 0.5
    img = np.broadcast_to(base, (size, size, 3)) * (1 + 0.12 * mottle)[..., None]
    kind = model.texture
    if kind == "gloss":
        hx, hy = rng.uniform(-0.45, -0.2, 2)
        spot = np.exp(-((nu - hx) ** 2 + (nv - hy) ** 2) / 0.03)
        img = _mix(img, second, 0.85 * spot)
    elif kind == "speckle":
        dots = _noise(rng, size, 2.5 * px) > 0.83
        img = _mix(img, second, dots.astype(np.float32))
    elif kind == "florets":
        t = 0.6 * _noise(rng, size, 5 * px) + 0.4 * _noise(rng, size, 12 * px)
        img = _mix(img, second, (t - 0.35) * 2.5)
        img = img * np.where(t < 0.3, 0.55, 1.0)[..., None]
    elif kind == "grains":
        t = _noise(rng, size, 2.2 * px)
        img = _mix(second, img, (t - 0.25) * 3)
    elif kind == "fibers":
        freq = rng.uniform(5, 9)
        t = np.sin(2 * np.pi * (nv * freq + 0.6 * _noise(rng, size, 30 * px)))
        img = _mix(img, second, ((t + 1) / 2) ** 4)
    elif kind == "porous":
        holes = _noise(rng, size, 3 * px) < 0.22
        img = img * np.where(holes, 0.72, 1.0)[..., None]
        img = _mix(img, second, (rho - 0.78) * 6)
    elif kind == "veins":
        t = np.abs(np.sin(np.pi * (nv * 2.5 + 0.8 * nu**2 + 0.5 * _noise(rng, size, 25 * px))))
        img = _mix(img, second, (0.12 - t) * 9)
        img = img * (1 + 0.15 * (_noise(rng, size, 8 * px) - 0.5))[..., None]
    elif kind == "rings":
        img = _mix(img, second, (rho - 0.8) * 8)
        img = img * (1 + 0.12 * np.cos(rho * 14))[..., None]
    elif kind == "yolk":
        ox, oy = rng.uniform(-0.25, 0.25, 2)
        core = np.sqrt((nu - ox) ** 2 + (nv - oy) ** 2) / rng.uniform(0.35, 0.45)
        img = _mix(img, second, (1 - core) * 12)
    # A dome: pieces darken towards their rim as if lit from above.
    dome = 0.72 + 0.28 * np.sqrt(np.clip(1 - rho**2, 0, 1))
    return np.asarray(img * dome[..., None], dtype=np.float32)


def _table(rng: np.random.Generator, size: int) -> Array:
    """A wood, cloth or stone table top."""
    px = size / 256.0
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    kind = int(rng.integers(0, 3))
    if kind == 0:
        light = rng.uniform([150, 100, 60], [200, 150, 100]) / 255
        ang = rng.uniform(0, np.pi)
        t = (xs * np.cos(ang) + ys * np.sin(ang)) / (size / rng.uniform(6, 14))
        rings = 0.5 + 0.5 * np.sin(2 * np.pi * (t + 0.7 * _noise(rng, size, 60 * px)))
        img = _mix(light, light * rng.uniform(0.55, 0.75), rings**3)
    elif kind == 1:
        cloth = rng.uniform(0.2, 0.95, 3)
        period = rng.uniform(18, 40) * px
        check = ((xs // period + ys // period) % 2).astype(np.float32)
        img = _mix(cloth, cloth * rng.uniform(0.6, 0.85), check)
        img = img * (1 + 0.08 * np.sin(xs * 2.2 / px) * np.sin(ys * 2.2 / px))[..., None]
    else:
        grey = rng.uniform(0.35, 0.8) * np.array([1.0, 1.0, 0.97])
        t = 0.6 * _noise(rng, size, 40 * px) + 0.4 * _noise(rng, size, 6 * px)
        img = grey * (0.8 + 0.4 * t)[..., None]
    return np.asarray(img, dtype=np.float32)


def _shadow(mask: Array, dx: int, dy: int, radius: float) -> Array:
    """A soft shadow of ``mask`` cast ``(dx, dy)`` pixels away, 1 where fully dark."""
    moved = np.zeros_like(mask)
    h, w = mask.shape
    moved[dy:, dx:] = mask[: h - dy, : w - dx]
    image = Image.fromarray(moved.astype(np.uint8) * 255)
    return np.asarray(image.filter(ImageFilter.GaussianBlur(radius)), dtype=np.float32) / 255


def _set_plate(rng: np.random.Generator, img: Array, xs: Array, ys: Array) -> tuple[Array, Array]:
    """Put a plate with a rim and a shadow on the table.

    Returns:
        The plate as ``(cx, cy, rx, ry)`` and each pixel's elliptic radius (< 1 on the plate).
    """
    size = img.shape[0]
    rx = size * rng.uniform(0.38, 0.47)
    plate = np.array([*(size / 2 + rng.normal(0, 0.04 * size, 2)), rx, rx * rng.uniform(0.78, 1)])
    prho = np.sqrt(((xs - plate[0]) / plate[2]) ** 2 + ((ys - plate[1]) / plate[3]) ** 2)
    shift = int(rng.uniform(0.01, 0.04) * size)
    img *= (1 - 0.45 * _shadow(prho < 1, shift, shift, 6 * size / 256))[..., None]
    color = np.array(PLATE_COLORS[int(rng.integers(0, len(PLATE_COLORS)))], np.float32) / 255
    rim = np.clip((prho - 0.78) * 20, 0, 1) * np.clip((0.9 - prho) * 20, 0, 1)
    img[prho < 1] = (color * (1 - 0.12 * rim)[..., None])[prho < 1]
    return plate, prho


def _photograph(rng: np.random.Generator, img: Array, xs: Array, ys: Array) -> Array:
    """Light, blur and add sensor noise as a camera would, differently for every photo."""
    size = img.shape[0]
    ang = rng.uniform(0, 2 * np.pi)
    grad = ((xs - size / 2) * np.cos(ang) + (ys - size / 2) * np.sin(ang)) / size
    vignette = ((xs - size / 2) ** 2 + (ys - size / 2) ** 2) / (size / 2) ** 2
    gain = 1 + rng.uniform(0.1, 0.5) * grad - rng.uniform(0, 0.25) * vignette
    cast = rng.normal(1.0, 0.03, 3).astype(np.float32)
    img = img * (rng.uniform(0.8, 1.1) * gain)[..., None] * cast
    photo = Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8))
    photo = photo.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.3) * size / 256))
    noisy = np.asarray(photo, np.float32) + rng.normal(0, rng.uniform(1.5, 7), (size, size, 3))
    return np.clip(noisy + 0.5, 0, 255).astype(np.uint8)


def render_image(
    rng: np.random.Generator, size: int, class_ids: tuple[int, ...]
) -> tuple[Array, Array]:
    """Render one photo and its mask.

    Args:
        rng: The generator that decides everything about this image.
        size: Width and height in pixels.
        class_ids: Food class ids to choose the image's 1 to 5 items from.

    Returns:
        The RGB image (uint8, H x W x 3) and the mask (uint8, H x W) of class ids, 0 elsewhere.
    """
    models = class_models()
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    img = _table(rng, size)
    plate, prho = _set_plate(rng, img, xs, ys)
    mask = np.zeros((size, size), np.uint8)
    count = min(int(rng.integers(1, 6)), len(class_ids))
    for cid in rng.choice(np.array(class_ids), size=count, replace=False).tolist():
        shape = _draw_shape(rng, models[cid].shape, size, plate)
        inside = (shape.rho < 1) & (prho < 0.97)
        # Each item shades what lies under it, which also blurs the colour at its edges.
        offset = max(1, round(3 * size / 256))
        img *= (1 - 0.35 * _shadow(inside, offset, offset + 1, 3 * size / 256))[..., None]
        img[inside] = _texture(rng, models[cid], shape)[inside]
        mask[inside] = cid
    return _photograph(rng, img, xs, ys), mask
