"""The class colours: 104 colours as far apart as the eye can tell, checked in as a table.

Made once by :func:`generate_palette` (a test regenerates it and compares): black for the
background, then greedy farthest-point sampling over a 36-level sRGB grid, each new colour the
one farthest (CIEDE2000) from all chosen so far, with CIE L* kept in 20..95 so no colour is
near-black (the background) or near-white (the page). The smallest CIEDE2000 difference of any
two of the 104 is :data:`MIN_CIEDE2000` (a difference of about 10 is plainly visible; the old
golden-ratio hues had pairs at 1.2). Overlays, masks, legends, plots and the web page (which
gets them from ``/v1/model``) all use this one table through :func:`cmi_cli.classes.class_colors`.
"""

from __future__ import annotations

from typing import Any

PALETTE: tuple[str, ...] = (
    "#000000",
    "#f8f800",
    "#ffa8ff",
    "#00dbff",
    "#d35f00",
    "#00832c",
    "#5f0fff",
    "#990f3a",
    "#00ffb6",
    "#ffd3bd",
    "#7c7c8a",
    "#5f4900",
    "#00575f",
    "#ff5f75",
    "#a89233",
    "#0092ff",
    "#422c57",
    "#afbdaf",
    "#e216bd",
    "#073a0f",
    "#009992",
    "#6dc507",
    "#ccdbff",
    "#005099",
    "#9275f8",
    "#832c00",
    "#ffa007",
    "#75755f",
    "#99665f",
    "#504949",
    "#c599a8",
    "#dbf8b6",
    "#db001d",
    "#8a507c",
    "#bd9275",
    "#00b675",
    "#b6f8f0",
    "#e9cc83",
    "#ffe2f8",
    "#2483a0",
    "#5f6d00",
    "#001d99",
    "#a8a0d3",
    "#502424",
    "#830092",
    "#7c9957",
    "#926d3a",
    "#3a6d57",
    "#db1d6d",
    "#ff835f",
    "#7ca8b6",
    "#6d66a0",
    "#2c3a33",
    "#f8f0db",
    "#33ccbd",
    "#ff6db6",
    "#af75af",
    "#0f66ff",
    "#660042",
    "#afa8a8",
    "#1dff49",
    "#422c16",
    "#243349",
    "#bdbd0f",
    "#83c5ff",
    "#a0997c",
    "#e966ff",
    "#57666d",
    "#49502c",
    "#9949cc",
    "#92d3a8",
    "#ffa0a0",
    "#759283",
    "#75503a",
    "#bd6d83",
    "#b6dbe9",
    "#bd7c00",
    "#754950",
    "#245f07",
    "#c5ff5f",
    "#8aa0ff",
    "#afc575",
    "#7c6d66",
    "#5742a0",
    "#ff3a0f",
    "#50506d",
    "#ffd307",
    "#a05000",
    "#33a007",
    "#a8006d",
    "#6d83b6",
    "#ffb6d3",
    "#75000f",
    "#ffaf7c",
    "#cc5f50",
    "#00a8e2",
    "#ccb699",
    "#927583",
    "#00493a",
    "#ff8324",
    "#3a926d",
    "#7c8a00",
    "#00fff0",
    "#a0423a",
)
MIN_CIEDE2000 = 11.4
GRID_LEVELS = 36
LIGHTNESS = (20.0, 95.0)


def hex_to_rgb(color: str) -> tuple[int, int, int]:
    """``"#rrggbb"`` -> ``(r, g, b)``."""
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


def srgb_to_lab(rgb: Any) -> Any:
    """Convert 8-bit sRGB (``[..., 3]``) to CIE L*a*b* (D65) as a float array."""
    import numpy as np

    c = np.asarray(rgb, dtype=np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    to_xyz = np.array(
        [
            [0.4124564, 0.3575761, 0.1804375],
            [0.2126729, 0.7151522, 0.0721750],
            [0.0193339, 0.1191920, 0.9503041],
        ]
    )
    xyz = linear @ to_xyz.T / np.array([0.95047, 1.0, 1.08883])
    eps = (6 / 29) ** 3
    f = np.where(xyz > eps, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack(
        [116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1
    )


def ciede2000(lab1: Any, lab2: Any) -> Any:
    """The CIEDE2000 colour difference of L*a*b* colours (broadcasting over leading axes).

    Follows Sharma, Wu and Dalal (2005), "The CIEDE2000 color-difference formula:
    implementation notes, supplementary test data, and mathematical observations".
    """
    import numpy as np

    l1, a1, b1 = np.moveaxis(np.asarray(lab1, dtype=np.float64), -1, 0)
    l2, a2, b2 = np.moveaxis(np.asarray(lab2, dtype=np.float64), -1, 0)
    c_bar = (np.hypot(a1, b1) + np.hypot(a2, b2)) / 2
    g = 0.5 * (1 - np.sqrt(c_bar**7 / (c_bar**7 + 25.0**7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p = np.degrees(np.arctan2(b1, a1p)) % 360
    h2p = np.degrees(np.arctan2(b2, a2p)) % 360
    chroma_zero = c1p * c2p == 0
    dh = h2p - h1p
    dh = np.where(dh > 180, dh - 360, np.where(dh < -180, dh + 360, dh))
    dh = np.where(chroma_zero, 0, dh)
    d_l, d_c = l2 - l1, c2p - c1p
    d_h = 2 * np.sqrt(c1p * c2p) * np.sin(np.radians(dh) / 2)
    l_bar, cp_bar, h_sum = (l1 + l2) / 2, (c1p + c2p) / 2, h1p + h2p
    h_bar = np.where(
        chroma_zero,
        h_sum,
        np.where(
            np.abs(h1p - h2p) <= 180, h_sum / 2, np.where(h_sum < 360, h_sum + 360, h_sum - 360) / 2
        ),
    )
    t = (
        1
        - 0.17 * np.cos(np.radians(h_bar - 30))
        + 0.24 * np.cos(np.radians(2 * h_bar))
        + 0.32 * np.cos(np.radians(3 * h_bar + 6))
        - 0.20 * np.cos(np.radians(4 * h_bar - 63))
    )
    d_theta = 30 * np.exp(-(((h_bar - 275) / 25) ** 2))
    r_c = 2 * np.sqrt(cp_bar**7 / (cp_bar**7 + 25.0**7))
    s_l = 1 + 0.015 * (l_bar - 50) ** 2 / np.sqrt(20 + (l_bar - 50) ** 2)
    s_c = 1 + 0.045 * cp_bar
    s_h = 1 + 0.015 * cp_bar * t
    r_t = -np.sin(np.radians(2 * d_theta)) * r_c
    return np.sqrt(
        (d_l / s_l) ** 2 + (d_c / s_c) ** 2 + (d_h / s_h) ** 2 + r_t * (d_c / s_c) * (d_h / s_h)
    )


def generate_palette(count: int = 104) -> list[str]:
    """Make the palette: black, then greedy farthest-point colours (see the module's text)."""
    import numpy as np

    levels = np.linspace(0, 255, GRID_LEVELS).round().astype(int)
    grid = np.array(np.meshgrid(levels, levels, levels, indexing="ij")).reshape(3, -1).T
    lab = srgb_to_lab(grid)
    keep = (lab[:, 0] >= LIGHTNESS[0]) & (lab[:, 0] <= LIGHTNESS[1])
    grid, lab = grid[keep], lab[keep]
    chosen = [np.zeros(3, dtype=int)]
    nearest = ciede2000(lab, srgb_to_lab(chosen[0]))
    for _ in range(count - 1):
        i = int(np.argmax(nearest))
        chosen.append(grid[i])
        nearest = np.minimum(nearest, ciede2000(lab, lab[i]))
    return ["#{:02x}{:02x}{:02x}".format(*(int(v) for v in c)) for c in chosen]
