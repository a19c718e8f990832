"""Captioning data for the engine: pixels decoded once, token targets, seeded batches.

Every image is decoded and preprocessed once, before training, into one ``float16
[N, 3, S, S]`` tensor (:class:`PixelSource`; half the memory of float32, and values in
[-1, 1] keep ~3 decimal digits, finer than the 8-bit source). A batch is a slice of it
plus the teacher-forcing tensors of its descriptions. The order of an epoch comes from
``(seed, epoch)`` alone (:func:`vitrina.training.data.epoch_order`), so a run resumed
from ``last.ckpt`` repeats an uninterrupted one; with length bucketing, descriptions of
similar token length share a batch (less padding).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from vitrina.training.data import epoch_order

from .inference import Captioner
from .processing import load_image


class PixelSource:
    """Preprocessed pixels of image files, decoded lazily on first use and then kept.

    Decoding (a thread pool, a progress bar) happens when :attr:`pixels` is first read,
    so a finished run that is only reloaded never decodes its images.

    Raises:
        FileNotFoundError, OSError: an image cannot be read (processed images should all
            be readable: image_processing has already dropped the broken ones).
    """

    def __init__(
        self,
        captioner: Captioner,
        paths: Sequence[str],
        *,
        num_workers: int = 2,
        desc: str = "images",
    ) -> None:
        self.captioner = captioner
        self.paths = list(paths)
        self.num_workers = max(1, int(num_workers))
        self.desc = desc

    def preprocess(self, paths: Sequence[str]) -> torch.Tensor:
        """``float32 [len(paths), 3, S, S]`` pixel values of image files (square-padded)."""
        return self.captioner.pixel_values([load_image(p, square=True) for p in paths])

    @functools.cached_property
    def pixels(self) -> torch.Tensor:
        """``float16 [N, 3, S, S]`` pixel values of every path."""
        batches = [self.paths[i : i + 64] for i in range(0, len(self.paths), 64)]
        with ThreadPoolExecutor(self.num_workers) as pool:
            chunks = [
                chunk.to(torch.float16)
                for chunk in tqdm(
                    pool.map(self.preprocess, batches),
                    total=len(batches),
                    desc=f"decode {self.desc}",
                    unit="batch",
                    disable=None,
                )
            ]
        return torch.cat(chunks)

    def __len__(self) -> int:
        return len(self.paths)

    def get(self, index: Sequence[int] | np.ndarray | torch.Tensor) -> torch.Tensor:
        """``float32 [len(index), 3, S, S]`` pixel values."""
        return self.pixels[torch.as_tensor(index, dtype=torch.long)].float()


class BucketBatchSampler(Sampler[list[int]]):
    """The batches of one epoch, from ``(seed, epoch)`` only.

    Items are put in :func:`~vitrina.training.data.epoch_order`; with ``bucketing``
    each chunk of 50 batches is sorted by ``lengths`` before it is cut into batches, and
    the batch order is shuffled again (seed ``seed + 1``). ``epoch()`` is asked when the
    first batch is drawn (see :meth:`__iter__`).
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        seed: int,
        epoch: Callable[[], int],
        bucketing: bool = True,
    ) -> None:
        self.lengths = np.asarray(lengths)
        self.batch_size, self.seed, self.epoch, self.bucketing = (
            int(batch_size),
            int(seed),
            epoch,
            bool(bucketing),
        )

    def batches(self, epoch: int) -> list[list[int]]:
        """The batches (item indices) of ``epoch``."""
        order, size = epoch_order(len(self.lengths), self.seed, epoch).numpy(), self.batch_size
        if not self.bucketing:
            return [order[i : i + size].tolist() for i in range(0, len(order), size)]
        batches = []
        for start in range(0, len(order), size * 50):
            part = order[start : start + size * 50]
            part = part[np.argsort(self.lengths[part], kind="stable")]
            batches += [part[i : i + size].tolist() for i in range(0, len(part), size)]
        return [batches[i] for i in epoch_order(len(batches), self.seed + 1, epoch).tolist()]

    def __iter__(self) -> Iterator[list[int]]:
        # A generator: the epoch is read when the first batch is drawn, not when the
        # iterator is made. Lightning makes a resumed run's first iterator while it
        # restores the checkpoint (``FitLoop.setup_data``), before ``current_epoch`` is
        # brought up to date, and keeps it for that epoch.
        yield from self.batches(self.epoch())

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)


class _Indices(Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


class CaptionBatches:
    """Collate item indices into a batch: ``pixels float32 [B, 3, S, S]``, ``index
    int64 [B]`` and the teacher-forcing tensors of :meth:`Captioner.collate_targets`
    (``decoder_input_ids``, ``decoder_attention_mask``, ``labels``)."""

    def __init__(
        self, captioner: Captioner, pixels: PixelSource, targets: Sequence[Sequence[int]]
    ) -> None:
        self.captioner, self.pixels, self.targets = captioner, pixels, targets

    def __call__(self, index: Sequence[int]) -> dict[str, torch.Tensor]:
        index = list(index)
        return {
            "pixels": self.pixels.get(index),
            "index": torch.as_tensor(index, dtype=torch.long),
            **self.captioner.collate_targets([self.targets[i] for i in index]),
        }


class CaptionDataModule(pl.LightningDataModule):
    """Training and validation loaders over pixels and token targets.

    Training batches come from :class:`BucketBatchSampler` for the trainer's current
    epoch; validation batches are in length order (less padding), twice as large.

    Args:
        captioner: turns targets into teacher-forcing tensors.
        train, validation: ``(pixels, targets)`` of each split (targets from
            :meth:`Captioner.encode_targets`).
        batch_size: training images per step.
        seed: the order's seed.
        bucketing: length bucketing of training batches.
    """

    def __init__(
        self,
        captioner: Captioner,
        train: tuple[PixelSource, Sequence[Sequence[int]]],
        validation: tuple[PixelSource, Sequence[Sequence[int]]],
        *,
        batch_size: int,
        seed: int,
        bucketing: bool = True,
    ) -> None:
        super().__init__()
        self.captioner, self.train, self.validation = captioner, train, validation
        self.batch_size, self.seed, self.bucketing = int(batch_size), int(seed), bucketing

    def current_epoch(self) -> int:
        """The trainer's epoch (0 before training)."""
        return self.trainer.current_epoch if self.trainer is not None else 0

    def train_dataloader(self) -> DataLoader:
        pixels, targets = self.train
        sampler = BucketBatchSampler(
            [len(t) for t in targets],
            self.batch_size,
            self.seed,
            self.current_epoch,
            self.bucketing,
        )
        return DataLoader(
            _Indices(len(targets)),
            batch_sampler=sampler,
            collate_fn=CaptionBatches(self.captioner, pixels, targets),
        )

    def val_dataloader(self) -> DataLoader:
        pixels, targets = self.validation
        order = np.argsort([len(t) for t in targets], kind="stable").tolist()
        size = self.batch_size * 2
        return DataLoader(
            _Indices(len(targets)),
            batch_sampler=[order[i : i + size] for i in range(0, len(order), size)],
            collate_fn=CaptionBatches(self.captioner, pixels, targets),
        )
