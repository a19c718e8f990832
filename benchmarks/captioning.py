"""Captioning inference speed and memory at the seed system's sizes (random weights).

The seed system (003) is ViT-B/16 at 224 px + distilgpt2 (6 layers, 768 wide, 50,257
tokens + [PAD]/[BOS]/[EOS]); it needed ~3.3 s and ~4.2 GB per image on an 8-core laptop
CPU (AMD Ryzen 7 5700U, ``torch.profiler``). This script builds a captioner with the same
architecture and random weights, saves it as a captioner directory (in a child process,
so building it does not count), then in this process:

1. loads it once the way inference does (``load_captioner``, ``precision=auto``: chosen
   from the CPU flags by :func:`vitrina.training.precision.inference_precision`, dynamic
   int8 encoder and decoder except on AMX CPUs; ``--precision fp32|bf16|int8`` forces one);
2. captions ``--n`` images one at a time (batch 1, greedy, exactly ``--new-tokens`` new
   tokens, ``torch.inference_mode``), preprocessing included, after one warm-up image:
   seconds per image is the median. Greedy decoding is Vitrina's loop
   (:mod:`vitrina.models.captioner.greedy`: preallocated key-value cache, the tokens of
   transformers' ``generate``); ``--generate`` times transformers' ``generate`` instead;
3. captions ``--batch`` images at once: images per second.

CPU seconds per image (``time.process_time``, all threads) are printed beside the wall
time: on a shared machine they show what the image costs when the wall time also holds
waits for a busy core. Peak resident memory is this process's ``ru_maxrss`` (loading
included) after the batch-1 images, and again after the batch run. One run; the last line
is ``seconds_per_image=<x> peak_rss_gb=<batch 1> peak_rss_gb_batch<N>=<after the batch>``.

``--cpu-flags avx2,fma`` makes ``auto`` decide as on that CPU; ``--emulate-avx2`` also runs
only AVX2 kernels (ATen, oneDNN, MKL and FBGEMM), as a plain AVX2 CPU would.

Usage: ``python benchmarks/captioning.py [--n 10] [--batch 16] [--precision auto]
[--emulate-avx2] [--generate]``
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import add_cpu_arguments, apply_cpu_arguments, describe_cpu

SEED_SECONDS, SEED_GB = 3.3, 4.2
VOCAB = 50257 + 3  # distilgpt2 + [PAD], [BOS], [EOS]


def peak_rss_gb() -> float:
    """Peak resident set size of this process in GB (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def dummy_tokenizer(vocab_size: int):
    """A byte-level BPE tokenizer with exactly ``vocab_size`` tokens (ids 0-2 special)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from vitrina.models.captioner import SPECIAL_TOKENS

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS.values())}
    for symbol in pre_tokenizers.ByteLevel.alphabet():
        vocab[symbol] = len(vocab)
    while len(vocab) < vocab_size:
        vocab[f"tok{len(vocab)}"] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)


def write_seed_sized_captioner(path: str) -> None:
    """Build the seed architecture with random weights and save it (run in a child)."""
    import torch
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTModel,
    )

    from vitrina.models.captioner import Captioner, make_image_processor

    torch.manual_seed(0)
    tokenizer = dummy_tokenizer(VOCAB)
    ids = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
    encoder = ViTModel(ViTConfig())  # ViT-B/16 at 224: 12 layers, 768 wide, 12 heads
    decoder = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=VOCAB,
            n_positions=1024,
            n_embd=768,
            n_layer=6,
            n_head=12,
            add_cross_attention=True,
            is_decoder=True,
            **ids,
        )
    )
    model = VisionEncoderDecoderModel(encoder=encoder, decoder=decoder)
    model.config.decoder_start_token_id = 1
    model.config.pad_token_id = 0
    model.config.eos_token_id = 2
    captioner = Captioner(
        model=model,
        tokenizer=tokenizer,
        image_processor=make_image_processor(224, [0.5] * 3, [0.5] * 3),
        meta={"config": {"name": "seed_sized_random"}, "max_target_length": 128},
    )
    captioner.save(path)


def sample_images(n: int, seed: int = 0):
    """``n`` random 240x360 RGB images (the H&M source size)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (360, 240, 3), dtype=np.uint8)) for _ in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10, help="images timed at batch 1")
    parser.add_argument("--batch", type=int, default=16, help="batch size of the throughput run")
    parser.add_argument("--new-tokens", type=int, default=30)
    parser.add_argument("--precision", default="auto", help="auto | fp32 | bf16 | int8")
    parser.add_argument(
        "--threads",
        default="auto",
        help="torch threads: a number, or auto (the cores other processes leave idle)",
    )
    parser.add_argument(
        "--generate",
        action="store_true",
        help="greedy captions by transformers' generate instead of Vitrina's loop",
    )
    parser.add_argument("--write", help=argparse.SUPPRESS)  # child: write the model here
    add_cpu_arguments(parser)
    args = parser.parse_args()
    apply_cpu_arguments(args)
    if args.write:
        write_seed_sized_captioner(args.write)
        return

    with tempfile.TemporaryDirectory(prefix="vitrina-captioning-bench-") as tmp:
        model_dir = str(Path(tmp) / "captioner")
        start = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--write", model_dir], check=True)
        print(f"wrote the seed-sized random captioner in {time.perf_counter() - start:.1f} s")

        import torch

        from vitrina.models.captioner import inference_precision, load_captioner
        from vitrina.models.quantization import int8_weights
        from vitrina.training.precision import cpu_has_bf16
        from vitrina.training.threads import auto_threads

        print(describe_cpu())
        print(
            f"precision {args.precision} -> path {inference_precision(args.precision, 'cpu')} "
            f"(torch kernels: {torch.backends.cpu.get_cpu_capability()}, "
            f"quantised engine: {torch.backends.quantized.engine})"
        )

        threads = auto_threads(int(args.threads) if str(args.threads).isdigit() else args.threads)
        if threads:
            torch.set_num_threads(threads)  # this process only measures
        start = time.perf_counter()
        captioner = load_captioner(model_dir, device="cpu", precision=args.precision)
        load_s = time.perf_counter() - start
        captioner.greedy_loop = not args.generate
        floats = sum(p.numel() for p in captioner.model.parameters())
        packed = int8_weights(captioner.model)
        tables = sum(b.numel() for n, b in captioner.model.named_buffers() if n.endswith("table"))
        print(
            f"loaded {floats / 1e6:.1f}M {str(captioner.dtype).replace('torch.', '')} weights"
            f"{f' + {packed / 1e6:.1f}M int8 (linear layers; the LM head is an int8 copy of the tied embeddings) + {tables / 1e6:.1f}M bf16 (token tables)' if packed else ''} "
            f"in {load_s:.1f} s (CPU bf16 instructions: {cpu_has_bf16()}, "
            f"torch threads: {torch.get_num_threads()}, cores: {os.cpu_count()}, "
            f"load average: {os.getloadavg()[0]:.1f})"
        )
        # Exactly --new-tokens tokens every time: random weights would stop at random.
        fixed = {"max_new_tokens": args.new_tokens, "min_new_tokens": args.new_tokens}
        images = sample_images(args.n + 1)
        captioner.caption_images(images[:1], "greedy", **fixed)  # warm-up
        times, cpu_times = [], []
        for img in images[1:]:
            start, cpu_start = time.perf_counter(), time.process_time()
            captioner.caption_images([img], "greedy", **fixed)
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
        per_image = statistics.median(times)
        peak_batch1 = peak_rss_gb()
        batch = sample_images(args.batch, seed=1)
        start = time.perf_counter()
        captions = captioner.caption_images(batch, "greedy", **fixed)
        batch_s = time.perf_counter() - start
        assert len(captions) == args.batch
        peak = peak_rss_gb()

    print()
    print(f"{'':34}{'seed (8-core laptop)':>22}{'Vitrina (this machine)':>24}")
    print(f"{'seconds per image, batch 1':34}{SEED_SECONDS:>22.2f}{per_image:>24.3f}")
    print(f"{'CPU seconds per image, batch 1':34}{'-':>22}{statistics.median(cpu_times):>24.3f}")
    print(f"{'peak resident memory, GB':34}{SEED_GB:>22.2f}{peak_batch1:>24.2f}")
    print(f"{f'  after the batch-{args.batch} run':34}{'-':>22}{peak:>24.2f}")
    print(f"{f'images per second, batch {args.batch}':34}{'-':>22}{args.batch / batch_s:>24.2f}")
    print(
        f"(batch 1: median of {args.n} images, min {min(times):.3f} s, max {max(times):.3f} s; "
        f"greedy, {args.new_tokens} new tokens, preprocessing included)"
    )
    decoder = "transformers generate" if args.generate else "Vitrina's greedy loop"
    print(f"path: {captioner.precision}, greedy decoding by {decoder}")
    print(
        f"seconds_per_image={per_image:.3f} peak_rss_gb={peak_batch1:.2f} "
        f"peak_rss_gb_batch{args.batch}={peak:.2f}"
    )


if __name__ == "__main__":
    main()
