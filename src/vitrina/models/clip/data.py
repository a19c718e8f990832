"""Tensors for contrastive fine-tuning: tokenised titles, decoded images, seeded batches.

* :class:`PairData` — N pairs as token ids, ``uint8`` pixels (decoded once into a cache
  when they fit in ``image_cache_mb``, else per batch) and duplicate keys;
* :func:`epoch_batches` — one epoch's global batches, from :func:`vitrina.training.data.
  epoch_order` (``(seed, epoch)`` alone, so a resumed run repeats an uninterrupted one);
  a trailing batch of one is merged into the previous one (it has no negative);
* :class:`ContrastiveBatches` — an iterable of whole batches; under data parallelism
  every rank takes its equal share of each global batch (the loss gathers them back), so
  Lightning leaves the order alone (it only re-samples map-style datasets);
* :class:`ClipDataModule` — the train / validation loaders.

Batches hold ``input_ids`` / ``attention_mask`` ``LongTensor [B, L]`` (L: the longest title
of the batch), ``pixels`` ``uint8 [B, 3, R, R]`` (normalised on the device by the task) and
``image_keys`` / ``text_keys`` ``int64 [B]``.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from vitrina.training.data import epoch_order


@dataclass
class PairData:
    """Tokenised titles and images of N (image, title) pairs.

    Attributes:
        token_ids: per pair, the title's ids (special tokens included, unpadded).
        image_paths: per pair, the processed image file.
        image_keys, text_keys: ``int64 [N]``: equal keys = same image content / same title.
        pad_id: padding id of the tokenizer.
        image_uint8: ``path -> uint8 [3, R, R]`` (decodes one image).
        pixels: ``uint8 [N, 3, R, R]`` cache, or ``None`` to decode per batch.
        decode_threads: threads decoding the next batches ahead when there is no cache
            (:func:`prefetch`), and filling the cache.
    """

    token_ids: list[list[int]]
    image_paths: list[str]
    image_keys: np.ndarray
    text_keys: np.ndarray
    pad_id: int
    image_uint8: Callable[[str], np.ndarray]
    pixels: torch.Tensor | None = None
    decode_threads: int = 2

    def __len__(self) -> int:
        return len(self.token_ids)

    def cache_images(self) -> PairData:
        """Decode every image once into :attr:`pixels` (threads), in place; returns self."""
        if self.pixels is None and len(self):
            with ThreadPoolExecutor(max(1, self.decode_threads)) as pool:
                self.pixels = torch.from_numpy(
                    np.stack(list(pool.map(self.image_uint8, self.image_paths)))
                )
        return self

    def subset(self, idx: np.ndarray) -> PairData:
        """The pairs at ``idx`` (shares the decoder; slices the cache)."""
        idx = np.asarray(idx, dtype=np.int64)
        return dataclasses.replace(
            self,
            token_ids=[self.token_ids[i] for i in idx],
            image_paths=[self.image_paths[i] for i in idx],
            image_keys=self.image_keys[idx],
            text_keys=self.text_keys[idx],
            pixels=None if self.pixels is None else self.pixels[torch.from_numpy(idx)],
        )

    def batch(self, idx: np.ndarray | torch.Tensor) -> dict[str, torch.Tensor]:
        """The batch of the pairs at ``idx`` (see the module docstring)."""
        idx = np.asarray(idx, dtype=np.int64)
        rows = [self.token_ids[i] for i in idx]
        length = max(len(r) for r in rows)
        ids = torch.full((len(rows), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for j, r in enumerate(rows):
            ids[j, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask[j, : len(r)] = 1
        if self.pixels is not None:
            pixels = self.pixels[torch.from_numpy(idx)]
        else:
            pixels = torch.from_numpy(
                np.stack([self.image_uint8(self.image_paths[i]) for i in idx])
            )
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "pixels": pixels,
            "image_keys": torch.from_numpy(self.image_keys[idx]),
            "text_keys": torch.from_numpy(self.text_keys[idx]),
        }


def prefetch(
    data: PairData, batches: Sequence[Any], threads: int
) -> Iterator[dict[str, torch.Tensor]]:
    """:meth:`PairData.batch` of each index set in order; without an image cache the next
    ``threads`` batches are decoded by threads while the model works on this one."""
    if data.pixels is not None or threads < 1:
        for idx in batches:
            yield data.batch(idx)
        return
    with ThreadPoolExecutor(threads) as pool:
        pending = deque(pool.submit(data.batch, idx) for idx in batches[: threads + 1])
        for i in range(len(batches)):
            out = pending.popleft().result()
            ahead = i + len(pending) + 1
            if ahead < len(batches):
                pending.append(pool.submit(data.batch, batches[ahead]))
            yield out


def pair_data_from_frame(
    bundle: Any,
    pairs: Any,
    *,
    text_column: str = "title",
    match_duplicates: bool = True,
    cache_mb: float = 4096,
    decode_threads: int = 2,
) -> PairData:
    """:class:`PairData` from a pairs table (``clip_finetune.pairs`` rows).

    Args:
        bundle: the model's :class:`~vitrina.models.clip.bundle.ClipBundle`.
        pairs: DataFrame with ``text_column``, ``processed_path`` and (for duplicate
            matching) ``image_key`` and ``text_key``.
        match_duplicates: use ``image_key`` / ``text_key``; ``False`` makes every pair its
            own key.
        cache_mb: cache the decoded images when ``N x 3 x R x R`` bytes fit in this.

    Raises:
        KeyError: a required column is missing (naming the columns there are).
    """
    missing = [c for c in (text_column, "processed_path") if c not in pairs.columns]
    if missing:
        raise KeyError(f"the pairs table lacks columns {missing}; has {list(pairs.columns)}")
    n = len(pairs)

    def codes(column: str) -> np.ndarray:
        if match_duplicates and column in pairs.columns:
            return np.unique(pairs[column].astype(str).to_numpy(), return_inverse=True)[1]
        return np.arange(n)

    data = PairData(
        token_ids=bundle.token_ids(pairs[text_column].astype(str).tolist()),
        image_paths=pairs["processed_path"].astype(str).tolist(),
        image_keys=codes("image_key").astype(np.int64),
        text_keys=codes("text_key").astype(np.int64),
        pad_id=bundle.pad_id,
        image_uint8=bundle.image_uint8,
        decode_threads=decode_threads,
    )
    if n:
        side = bundle.image_uint8(data.image_paths[0]).shape[-1]
        if n * 3 * side * side <= cache_mb * 2**20:
            data.cache_images()
    return data


def epoch_batches(
    n: int, batch_size: int, epoch: int, seed: int, world_size: int = 1
) -> list[torch.Tensor]:
    """The global batches of one epoch: :func:`epoch_order` cut into ``batch_size`` pieces.

    A trailing batch too small to train on (fewer than ``max(2, world_size)`` pairs) is
    merged into the previous batch; with ``world_size > 1`` every batch is trimmed to a
    multiple of ``world_size`` so each rank gets an equal share (at most
    ``world_size - 1`` pairs sit out an epoch).

    Raises:
        ValueError: ``n < 2``, or ``batch_size`` not a multiple of ``world_size``.
    """
    if n < 2:
        raise ValueError(
            f"contrastive training needs at least 2 training pairs, got {n}: add products"
        )
    if batch_size % world_size:
        raise ValueError(
            f"batch_size {batch_size} must be a multiple of the number of processes {world_size}"
        )
    order = epoch_order(n, seed, epoch)
    batches = list(order.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) < max(2, world_size):
        tail = batches.pop()
        batches[-1] = torch.cat([batches[-1], tail])
    if world_size > 1:
        batches = [b[: len(b) - len(b) % world_size] for b in batches]
    return batches


class ContrastiveBatches(IterableDataset):
    """This rank's share of every global batch of the current epoch (see the module
    docstring): ``batch_size`` pairs per rank, as the engine counts it (a global batch of
    ``batch_size x world_size`` pairs, the loss's negatives). ``state()`` returns ``(epoch, rank, world_size)`` when iteration starts
    (a resumed run builds its loader before the trainer restores its epoch).

    With ``shuffle=False`` (validation) the batches are consecutive and whole on every rank.
    """

    def __init__(
        self,
        data: PairData,
        batch_size: int,
        seed: int,
        state: Callable[[], tuple[int, int, int]],
        shuffle: bool = True,
    ) -> None:
        self.data, self.batch_size, self.seed = data, int(batch_size), int(seed)
        self.state, self.shuffle = state, shuffle

    def _batches(self) -> list[torch.Tensor]:
        epoch, rank, world = self.state()
        if not self.shuffle:
            return list(torch.arange(len(self.data)).split(self.batch_size))
        return [
            b[rank * (len(b) // world) : (rank + 1) * (len(b) // world)]
            for b in epoch_batches(len(self.data), self.batch_size * world, epoch, self.seed, world)
        ]

    def __iter__(self):
        yield from prefetch(self.data, self._batches(), self.data.decode_threads)

    def __len__(self) -> int:
        return len(self._batches())


class ClipDataModule(pl.LightningDataModule):
    """Training batches per epoch from ``(seed, epoch)``; validation in data order."""

    def __init__(
        self,
        train: PairData,
        validation: PairData,
        *,
        batch_size: int,
        eval_batch_size: int,
        seed: int,
    ) -> None:
        super().__init__()
        self.train, self.validation = train, validation
        self.batch_size, self.eval_batch_size, self.seed = batch_size, eval_batch_size, seed

    def state(self) -> tuple[int, int, int]:
        """``(current epoch, rank, world size)`` of the trainer (0, 0, 1 before)."""
        trainer = self.trainer
        if trainer is None:
            return 0, 0, 1
        return trainer.current_epoch, trainer.global_rank, trainer.world_size

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            ContrastiveBatches(self.train, self.batch_size, self.seed, self.state),
            batch_size=None,
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(
            ContrastiveBatches(
                self.validation, self.eval_batch_size, self.seed, self.state, shuffle=False
            ),
            batch_size=None,
        )


__all__ = [
    "ClipDataModule",
    "ContrastiveBatches",
    "PairData",
    "epoch_batches",
    "pair_data_from_frame",
    "prefetch",
]
