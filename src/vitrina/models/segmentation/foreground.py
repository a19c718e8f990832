"""``foreground``: the product of a packshot against its plain background, by GrabCut.

GrabCut (Rother, Kolmogorov & Blake, "GrabCut: interactive foreground extraction using
iterated graph cuts", SIGGRAPH 2004), as implemented by OpenCV (``cv2.grabCut``), needs a
first guess of what is background. Packshots put the product on a plain studio
background that reaches the picture's edges, so the guess comes from the border: a strip
of ``border`` (fraction of the shorter side) is sure background, and inside it pixels
within ``colour_tolerance`` (RGB distance, 0-255 units) of the border's colours
(``border_colours`` k-means centres, for two-tone or graded studio
backgrounds) are probable background, the rest probable foreground. GrabCut then
iterates colour models and graph cuts. Components smaller than ``min_component`` of the
picture are dropped.

This is no person segmenter and no learned model; it is the offline default, and it
fails where the product touches the border or matches the background's colour.

The score is the Bhattacharyya distance between the colour histograms (8 bins per RGB
channel) of mask and background, in [0, 1]: 1 when their colours do not overlap, 0 for an
empty mask.
"""

from __future__ import annotations

import cv2
import numpy as np

from .base import Segmentation, check_rgb


class ForegroundSegmenter:
    """GrabCut initialised from the picture's border (see the module docstring).

    Args:
        border: Sure-background strip, as a fraction of the shorter side (> 0, < 0.5).
        colour_tolerance: RGB distance to a border colour under which an inner pixel
            starts as probable background.
        border_colours: Number of k-means colour centres fitted to the border strip.
        iterations: GrabCut iterations.
        min_component: Connected components smaller than this fraction of the picture
            are removed.

    Raises:
        ValueError: an argument out of range.
    """

    name = "foreground"

    def __init__(
        self,
        border: float = 0.03,
        colour_tolerance: float = 12.0,
        border_colours: int = 3,
        iterations: int = 5,
        min_component: float = 0.002,
    ) -> None:
        if not 0 < border < 0.5:
            raise ValueError(f"foreground.border must be in (0, 0.5), got {border}")
        if iterations < 1 or border_colours < 1:
            raise ValueError("foreground.iterations and border_colours must be >= 1")
        self.border = float(border)
        self.colour_tolerance = float(colour_tolerance)
        self.border_colours = int(border_colours)
        self.iterations = int(iterations)
        self.min_component = float(min_component)
        self.version = (
            f"grabcut-1;border={self.border};tol={self.colour_tolerance};"
            f"k={self.border_colours};it={self.iterations};min={self.min_component}"
        )

    def _initial(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        b = max(1, round(self.border * min(h, w)))
        init = np.full((h, w), cv2.GC_PR_FGD, np.uint8)
        edge = np.zeros((h, w), bool)
        edge[:b], edge[-b:], edge[:, :b], edge[:, -b:] = True, True, True, True
        samples = image[edge].astype(np.float32)
        k = min(self.border_colours, len(samples))
        criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 1.0)
        cv2.setRNGSeed(0)  # k-means++ start: deterministic masks
        _, _, centres = cv2.kmeans(samples, k, None, criteria, 2, cv2.KMEANS_PP_CENTERS)
        pixels = image.reshape(-1, 1, 3).astype(np.float32)
        dist = np.sqrt(((pixels - centres[None]) ** 2).sum(-1)).min(1).reshape(h, w)
        init[dist < self.colour_tolerance] = cv2.GC_PR_BGD
        init[edge] = cv2.GC_BGD
        return init

    def segment(self, image: np.ndarray) -> Segmentation:
        """Segment one RGB uint8 [H, W, 3] picture; returns a bool mask of the same size.

        Give the picture itself, not a padded copy: padding at the border would become
        the background's colour model (the segmentation pipeline cuts image processing's
        padding off first).

        Raises:
            ValueError: not an RGB uint8 image.
        """
        image = check_rgb(image)
        h, w = image.shape[:2]
        mask = self._initial(image)
        if (mask == cv2.GC_PR_FGD).any():
            bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
            bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
            try:
                cv2.grabCut(bgr, mask, None, bgd, fgd, self.iterations, cv2.GC_INIT_WITH_MASK)
            except cv2.error:  # too few pixels of one class for a colour model
                pass
        keep = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
        keep = _drop_small(keep, self.min_component * h * w)
        return Segmentation(keep, _separation(image, keep))


def _drop_small(mask: np.ndarray, min_pixels: float) -> np.ndarray:
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    big = np.zeros(n, bool)
    big[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_pixels
    return big[labels]


def _separation(image: np.ndarray, mask: np.ndarray) -> float:
    """Bhattacharyya distance of the colour histograms inside and outside ``mask``."""
    if not mask.any() or mask.all():
        return 0.0
    hists = []
    for region in (mask, ~mask):
        hist = cv2.calcHist([image], [0, 1, 2], region.astype(np.uint8), [8, 8, 8], [0, 256] * 3)
        hists.append(cv2.normalize(hist, hist).flatten())
    return float(np.clip(cv2.compareHist(hists[0], hists[1], cv2.HISTCMP_BHATTACHARYYA), 0, 1))
