"""Data for the engine: images decoded ahead of the model, and a per-epoch seeded order.

Images are decoded once, before training, into one ``uint8`` array (``[N, S, S, 3]``), so
the model never waits on JPEG decoding; a batch is a slice of that array. Conversion to
float, augmentation and normalisation happen on the training device inside the task
(``on_after_batch_transfer``), where they cost little.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset, Sampler

logger = logging.getLogger(__name__)


def decode_image(path: str | Path, size: int) -> np.ndarray:
    """One image as ``uint8 [size, size, 3]`` RGB.

    JPEGs larger than needed are decoded at a reduced scale first (``Image.draft``), then
    resized (bicubic) to ``size × size``; processed catalogue images are already square.

    Raises:
        FileNotFoundError: the file is missing.
        OSError / UnidentifiedImageError: the file is not a decodable image.
    """
    with Image.open(path) as image:
        image.draft("RGB", (size, size))
        rgb = image.convert("RGB")
        if rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.Resampling.BICUBIC)
        return np.asarray(rgb, dtype=np.uint8)


def decode_images(
    paths: Sequence[str | Path],
    size: int,
    *,
    n_workers: int = 2,
    transform: Callable[[int, np.ndarray], np.ndarray] | None = None,
) -> tuple[np.ndarray, list[tuple[int, str, str]]]:
    """Decode ``paths`` into one array; failures are reported, not raised.

    Args:
        paths: image files.
        size: output side in pixels.
        n_workers: decoding threads (PIL releases the GIL while decoding).
        transform: optional ``(index, image) -> image`` applied after decoding (e.g. a mask).

    Returns:
        ``(images, errors)``: ``uint8 [N, size, size, 3]`` (zeros where decoding failed) and
        ``[(index, "missing_image" | "decode_error", detail)]``.
    """
    out = np.zeros((len(paths), size, size, 3), dtype=np.uint8)
    errors: list[tuple[int, str, str]] = []

    def one(i: int) -> None:
        try:
            image = decode_image(paths[i], size)
            out[i] = transform(i, image) if transform else image
        except FileNotFoundError as exc:
            errors.append((i, "missing_image", str(exc)))
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            errors.append((i, "decode_error", f"{type(exc).__name__}: {exc}"))

    with ThreadPoolExecutor(max(1, n_workers)) as pool:
        list(pool.map(one, range(len(paths))))
    errors.sort()
    return out, errors


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The training order of epoch ``epoch``: a permutation of ``range(n)`` from
    ``(seed, epoch)`` alone, so a resumed run repeats an uninterrupted one."""
    generator = torch.Generator().manual_seed(int(seed) * 100_003 + int(epoch))
    return torch.randperm(n, generator=generator)


class EpochSampler(Sampler[int]):
    """The order of :func:`epoch_order` for the epoch that is current when iteration
    starts (``epoch()`` is asked then, not when the loader is built: a run resumed from a
    checkpoint builds its loader before the trainer has restored its epoch)."""

    def __init__(self, n: int, seed: int, epoch: Callable[[], int]) -> None:
        self.n, self.seed, self.epoch = n, seed, epoch

    def __iter__(self):
        return iter(epoch_order(self.n, self.seed, self.epoch()).tolist())

    def __len__(self) -> int:
        return self.n


class ArrayDataset(Dataset):
    """``(image uint8 [3, S, S], target)`` pairs over pre-decoded arrays.

    Args:
        images: ``uint8 [N, S, S, 3]``.
        targets: ``[N]`` class indices (int64) or ``[N, C]`` multi-hot (float32).
    """

    def __init__(self, images: np.ndarray, targets: np.ndarray) -> None:
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} images but {len(targets)} targets")
        self.images = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
        self.targets = torch.as_tensor(targets)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i], self.targets[i]


class ArrayDataModule(pl.LightningDataModule):
    """Train / validation / test loaders over :class:`ArrayDataset` splits.

    The training loader draws each epoch's order from :func:`epoch_order` for the
    trainer's current epoch (:class:`EpochSampler`).
    """

    def __init__(
        self,
        train: ArrayDataset,
        validation: ArrayDataset,
        test: ArrayDataset | None = None,
        *,
        batch_size: int,
        seed: int,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.train, self.validation, self.test = train, validation, test
        self.batch_size, self.seed, self.num_workers = int(batch_size), int(seed), int(num_workers)

    def current_epoch(self) -> int:
        """The trainer's epoch (0 before training)."""
        return self.trainer.current_epoch if self.trainer is not None else 0

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train,
            batch_size=self.batch_size,
            sampler=EpochSampler(len(self.train), self.seed, self.current_epoch),
            num_workers=self.num_workers,
            drop_last=len(self.train) > self.batch_size,
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(
            self.validation, batch_size=self.batch_size * 2, num_workers=self.num_workers
        )

    def test_dataloader(self) -> DataLoader:
        if self.test is None:
            raise ValueError("this data module has no test split")
        return DataLoader(self.test, batch_size=self.batch_size * 2, num_workers=self.num_workers)
