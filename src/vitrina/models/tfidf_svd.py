"""The scikit-learn reference embedder (``tfidf_svd``): LSA for titles, pixel PCA for
images; built by name through :func:`vitrina.models.embedders.build_embedder`."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from vitrina.models.embedders import Embedder, l2_normalise, load_rgb


class TfidfSvdEmbedder(Embedder):
    """The scikit-learn reference row: LSA for text and pixel PCA for images.

    Text: ``TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True)``
    then ``TruncatedSVD`` (latent semantic analysis, Deerwester et al. 1990). Images:
    ``image_side × image_side`` RGB thumbnails scaled to [0, 1], then ``PCA``. Both are
    fitted on the catalogue itself (unsupervised, labels are never seen), so the baseline
    is transductive: fine as a reference row, not a deployable model.

    Args:
        n_components: output dimension D of each modality (capped by the data).
        image_side: thumbnail side in pixels.
        seed: random state of the SVD/PCA solvers.
        num_workers: image decoding threads.
    """

    name = "tfidf_svd"

    def __init__(
        self,
        n_components: int = 256,
        image_side: int = 16,
        seed: int = 0,
        num_workers: int = 2,
        progress: bool = True,
    ) -> None:
        self.n_components = int(n_components)
        self.image_side = int(image_side)
        self.seed = seed
        self.num_workers = max(1, int(num_workers))
        self.progress = progress
        self._text = None
        self._image = None

    def _thumbnails(self, image_paths: Sequence[str | Path]) -> np.ndarray:
        side = self.image_side

        def thumb(path: str | Path) -> np.ndarray:
            img = load_rgb(path).resize((side, side), Image.Resampling.BILINEAR)
            return np.asarray(img, dtype=np.float32).reshape(-1) / 255.0

        with ThreadPoolExecutor(self.num_workers) as pool:
            rows = list(
                tqdm(
                    pool.map(thumb, image_paths),
                    total=len(image_paths),
                    desc="tfidf_svd image",
                    unit="img",
                    disable=None if self.progress else True,
                )
            )
        return np.stack(rows) if rows else np.zeros((0, 3 * side * side), dtype=np.float32)

    def fit(self, texts: Sequence[str], image_paths: Sequence[str | Path]) -> TfidfSvdEmbedder:
        """Fit TF-IDF + SVD on ``texts`` and PCA on the thumbnails of ``image_paths``.

        Raises:
            ValueError: fewer than 3 items (no useful decomposition).
        """
        from sklearn.decomposition import PCA, TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.pipeline import make_pipeline

        if len(texts) < 3:
            raise ValueError(f"tfidf_svd needs at least 3 products to fit, got {len(texts)}")
        tfidf = TfidfVectorizer(
            analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True, lowercase=True
        )
        n_terms = len(tfidf.fit(texts).vocabulary_)
        k_text = max(1, min(self.n_components, n_terms - 1, len(texts) - 1))
        self._text = make_pipeline(tfidf, TruncatedSVD(k_text, random_state=self.seed)).fit(texts)
        thumbs = self._thumbnails(image_paths)
        k_image = max(1, min(self.n_components, thumbs.shape[1], len(thumbs) - 1))
        self._image = PCA(k_image, random_state=self.seed).fit(thumbs)
        self._thumbs_cache = (list(map(str, image_paths)), thumbs)
        return self

    def fingerprint(self) -> str:
        """Digest of the settings and the fitted parts (vocabulary, IDF, SVD and PCA)."""
        from vitrina.shards import digest

        self._require_fit()
        tfidf, svd = self._text[0], self._text[-1]
        return digest(
            "tfidf_svd",
            [self.n_components, self.image_side, self.seed],
            sorted(tfidf.vocabulary_.items()),
            tfidf.idf_,
            svd.components_,
            self._image.components_,
            self._image.mean_,
        )

    def _require_fit(self) -> None:
        if self._text is None:
            raise RuntimeError("TfidfSvdEmbedder.fit must be called before embedding")

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        self._require_fit()
        return l2_normalise(self._text.transform([str(t) for t in texts]))

    def embed_images(self, image_paths: Sequence[str | Path]) -> np.ndarray:
        self._require_fit()
        cached_paths, cached = self._thumbs_cache
        thumbs = (
            cached if list(map(str, image_paths)) == cached_paths else self._thumbnails(image_paths)
        )
        return l2_normalise(self._image.transform(thumbs))
