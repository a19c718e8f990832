"""Scale benchmark: the sharded embeddings step at 10k / 40k / 160k products, local against
Ray (1 and 2 actors), resume after a kill, JPEG decode + resize per core, models on CPU.

Every measured run is a fresh ``python benchmarks/scale.py --child ...`` subprocess, which
reports its own peak RSS (``getrusage``), so runs never contaminate each other. The
embedder is a cheap random projection (512-d text from hashed character n-grams, 512-d
image from 32 x 32 thumbnails, decoded once per file), run through the real node (``embedding_shards``) and the
real catalogue dataset (``ShardedEmbeddingsDataset``). Products share a pool of H&M image
files (``--hm-dir``, read in place, processed by the image_processing node to 224 px, the
decode figure, then to 32 px for the scale runs).

    .venv/bin/python benchmarks/scale.py --quick          # 2k / 8k / 32k, ~2 min
    nice -n 10 .venv/bin/python benchmarks/scale.py       # 10k / 40k / 160k

Last line: ``rss_growth=<peak RSS at the largest N / at the smallest N>`` (local backend;
target <= 1.3).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_HM_DIR, REPO, RUCLIP_B32_384, cpu_flags, load_inputs, print_table

sys.path.insert(0, str(REPO / "src"))

DIM = 512
WORDS = "платье джинсы куртка рубашка dress jeans jacket shirt blue red slim fit cotton".split()


class RandomProjectionEmbedder:
    """512-d text (``HashingVectorizer`` char 2-3-grams, 2^14 features, times a fixed
    Gaussian matrix) and 512-d image (a 32 x 32 RGB thumbnail times another) vectors,
    L2-normalised: the cost of I/O, decoding and bookkeeping without a network."""

    name = "random_projection"

    def __init__(self, seed: int = 0) -> None:
        from sklearn.feature_extraction.text import HashingVectorizer

        rng = np.random.default_rng(seed)
        self.seed = seed
        self.hasher = HashingVectorizer(
            analyzer="char_wb", ngram_range=(2, 3), n_features=2**14, alternate_sign=False
        )
        self.text_proj = rng.standard_normal((2**14, DIM), dtype=np.float32)
        self.image_proj = rng.standard_normal((32 * 32 * 3, DIM), dtype=np.float32)
        self._cache: dict[str, np.ndarray] = {}

    def fit(self, texts, paths):
        return self

    def fingerprint(self) -> str:
        from vitrina.shards import digest

        return digest("random_projection", self.seed, DIM)

    def embed_texts(self, texts):
        from vitrina.models.embedders import l2_normalise

        return l2_normalise(self.hasher.transform(texts) @ self.text_proj)

    def embed_images(self, paths):
        from vitrina.models.embedders import l2_normalise

        return l2_normalise(np.stack([self._thumb(p) for p in paths]) @ self.image_proj)

    def _thumb(self, path: str) -> np.ndarray:
        """A 32 x 32 RGB thumbnail, ``float32 [3072]``, cached per file (at most 4096: the
        products share a bounded pool of files; JPEG decoding is measured on its own)."""
        from PIL import Image

        if path not in self._cache:
            if len(self._cache) >= 4096:
                self._cache.clear()
            with Image.open(path) as img:
                img = img.convert("RGB")
                if img.size != (32, 32):
                    img = img.resize((32, 32), Image.Resampling.BILINEAR)
            self._cache[path] = np.asarray(img, dtype=np.float32).reshape(-1) / 255.0
        return self._cache[path]


def cpu_s() -> float:
    """CPU seconds (user + system) of this process so far: on a shared machine a steadier
    measure than wall time, which other processes stretch."""
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def products(n: int, pool: list[str]):
    """``n`` synthetic products (unique ids, short titles) over the image ``pool``."""
    import pandas as pd

    rng = np.random.default_rng(n)
    words = np.array(WORDS)[rng.integers(0, len(WORDS), size=(n, 3))]
    return pd.DataFrame(
        {
            "product_id": [f"p{i:08d}" for i in range(n)],
            "text": [" ".join(w) + f" {i}" for i, w in enumerate(words)],
            "processed_path": [pool[i % len(pool)] for i in range(n)],
        }
    )


# ---------------------------------------------------------------------- children
def child_embed(cfg: dict[str, Any]) -> dict[str, Any]:
    """One embeddings run (node + dataset) in this fresh process."""
    from vitrina.datasets import ShardedEmbeddingsDataset
    from vitrina.pipelines.embeddings.nodes import embedding_shards

    start_ray = 0.0
    if cfg["backend"] == "ray":
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        import ray

        t = time.perf_counter()
        ray.init(num_cpus=cfg["workers"], include_dashboard=False, log_to_driver=False)
        start_ray = time.perf_counter() - t
    items = products(cfg["n"], cfg["pool"])
    params = {
        "shard_size": cfg["shard_size"],
        "backend": cfg["backend"],
        "export_npz": False,
        "ray": {"num_actors": cfg["workers"], "block_rows": 2048, "batch_size": 512},
    }
    t, wall, cpu = time.perf_counter(), time.time(), cpu_s()
    plan = embedding_shards(RandomProjectionEmbedder(), items, params)
    ShardedEmbeddingsDataset(cfg["out"]).save(plan)
    seconds = time.perf_counter() - t
    manifest = json.loads((Path(cfg["out"]) / "manifest.json").read_text())
    return {
        "seconds": seconds,
        "cpu_s": cpu_s() - cpu,
        "ray_start_s": start_ray,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "shards": manifest["num_shards"],
        "computed": sum(p.stat().st_mtime > wall for p in Path(cfg["out"]).glob("shard-*")),
    }


def child_decode(cfg: dict[str, Any]) -> dict[str, Any]:
    """JPEG decode + convert + resize to 224 px + encode (the image_processing node), one
    thread, on fresh output folders."""
    import pandas as pd

    from vitrina.pipelines.image_processing.nodes import process_images

    paths = cfg["paths"]
    table = pd.DataFrame({"product_id": [f"i{i}" for i in range(len(paths))], "image_path": paths})
    params = {
        "size": 224,
        "mode": "pad",
        "background": [255, 255, 255],
        "output_dir": cfg["out"],
        "format": "JPEG",
        "quality": 95,
        "n_workers": 1,
    }
    best = {}
    for i in range(cfg.get("repeats", 3)):  # fresh folders; the best of the repeats
        t, cpu = time.perf_counter(), cpu_s()
        manifest, _, _ = process_images(table, "/", {**params, "output_dir": f"{cfg['out']}/{i}"})
        seconds, cpu = time.perf_counter() - t, cpu_s() - cpu
        if not best or seconds < best["seconds"]:
            best = {"seconds": seconds, "n": len(manifest), "cpu_s": cpu}
    return {
        **best,
        "products_per_s": best["n"] / best["seconds"],
        "per_cpu_s": best["n"] / best["cpu_s"],
    }


def child_model(cfg: dict[str, Any]) -> dict[str, Any]:
    """products/s of a random-weight ruCLIP (text + image) on the CPU, one torch thread."""
    import torch

    from vitrina.models.clip import ClipBundle
    from vitrina.models.ruclip import write_tiny_ruclip_checkpoint

    torch.set_num_threads(cfg["threads"])
    titles, paths = cfg["titles"], cfg["paths"]
    ckpt = write_tiny_ruclip_checkpoint(Path(cfg["out"]) / "ckpt", titles, **cfg["arch"])
    bundle = ClipBundle.load(ckpt, kind="ruclip")
    out = {}
    for precision in cfg["precisions"]:
        emb = bundle.embedder(
            {"batch_size": 16, "device": "cpu", "precision": precision, "progress": False}
        )
        emb.embed_texts(titles[:4])
        emb.embed_images(paths[:4])  # warm-up
        t, cpu = time.perf_counter(), cpu_s()
        emb.embed_texts(titles)
        emb.embed_images(paths)
        out[precision] = [len(titles) / (time.perf_counter() - t), len(titles) / (cpu_s() - cpu)]
    return out


CHILDREN = {"embed": child_embed, "decode": child_decode, "model": child_model}


def spawn(kind: str, cfg: dict[str, Any], timeout: float = 3600) -> dict[str, Any]:
    """Run one child in a fresh interpreter; return the JSON of its last line."""
    proc = subprocess.run(
        [sys.executable, __file__, "--child", kind, json.dumps(cfg)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child {kind} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _env() -> dict[str, str]:
    src = str(REPO / "src")
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        "TQDM_DISABLE": "1",
    }


def resume(cfg: dict[str, Any]) -> dict[str, Any]:
    """Kill a local run (SIGKILL) once half its shards are written; time the rerun."""
    manifest = Path(cfg["out"]) / "manifest.json"
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", "embed", json.dumps(cfg)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_env(),
    )
    total = -(-cfg["n"] // cfg["shard_size"])
    while proc.poll() is None:
        try:
            done = len(json.loads(manifest.read_text())["shards"])
        except (OSError, ValueError, KeyError):
            done = 0
        if done >= total // 2:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    t = time.perf_counter()
    rerun = spawn("embed", cfg)
    return {"killed_after": done, "of": total, "rerun_s": time.perf_counter() - t, **rerun}


# ---------------------------------------------------------------------- main
def _thumbnails(paths: list[str], out: Path) -> list[str]:
    """The pool the products share: ``paths`` processed to 32 px by the image_processing node."""
    import pandas as pd

    from vitrina.pipelines.image_processing.nodes import process_images

    table = pd.DataFrame({"product_id": [f"t{i}" for i in range(len(paths))], "image_path": paths})
    params = {
        "size": 32,
        "mode": "pad",
        "background": [255] * 3,
        "output_dir": str(out),
        "format": "JPEG",
        "quality": 90,
        "n_workers": 2,
    }
    return process_images(table, "/", params)[0]["processed_path"].tolist()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="10000,40000,160000", help="products per run")
    p.add_argument("--quick", action="store_true", help="sizes 2k,8k,32k, fewer model items")
    p.add_argument("--shard-size", type=int, default=5000)
    p.add_argument("--hm-dir", type=Path, default=DEFAULT_HM_DIR)
    p.add_argument("--pool", type=int, default=512, help="distinct image files")
    p.add_argument("--ray-workers", default="1,2", help="actor pool sizes ('' for none)")
    p.add_argument("--skip-models", action="store_true", help="no model throughput runs")
    p.add_argument("--child", nargs=2, metavar=("KIND", "JSON"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(CHILDREN[args.child[0]](json.loads(args.child[1]))))
        return 0
    sizes = [2000, 8000, 32000] if args.quick else [int(s) for s in args.sizes.split(",")]
    workers = [int(w) for w in args.ray_workers.split(",") if w]
    flags = cpu_flags()
    print(f"cpu flags: {' '.join(flags) or 'unknown'}")
    print(f"cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="vitrina-scale-") as tmp:
        tmp = Path(tmp)
        titles, sources, origin = load_inputs(args.pool, args.hm_dir, tmp)
        print(f"images: {len(sources)} distinct files from {origin}, shared by the products")
        decode = spawn("decode", {"paths": sources, "out": str(tmp / "img224")})
        pool224 = sorted(str(p) for p in (tmp / "img224" / "0").rglob("*.jpg"))
        pool = _thumbnails(pool224, tmp / "img32")
        print(
            f"JPEG decode + resize to 224 px + encode, 1 thread, best of 3: "
            f"{decode['products_per_s']:.0f} products/s wall, {decode['per_cpu_s']:.0f} per "
            f"CPU-second ({decode['n']} images)"
        )
        rows, local_rss = [], {}
        for n in sizes:
            for backend, w in [("local", 1), *(("ray", w) for w in workers)]:
                cfg = {
                    "n": n,
                    "pool": pool,
                    "backend": backend,
                    "workers": w,
                    "shard_size": args.shard_size,
                    "out": str(tmp / f"emb-{n}-{backend}-{w}"),
                }
                res = spawn("embed", cfg)
                if backend == "local":
                    local_rss[n] = res["peak_rss_mib"]
                name = "local" if backend == "local" else f"ray x{w}"
                rows.append(
                    [
                        f"{n:,}",
                        name,
                        str(res["shards"]),
                        f"{res['seconds']:.1f}",
                        f"{n / res['seconds']:.0f}",
                        f"{res['cpu_s']:.1f}",
                        f"{res['peak_rss_mib']:.0f}",
                        f"{res['ray_start_s']:.1f}" if backend == "ray" else "-",
                    ]
                )
                print("  ", *rows[-1], flush=True)
        print()
        print_table(
            rows,
            [
                "products",
                "backend",
                "shards",
                "seconds",
                "products/s",
                "driver CPU s",
                "peak RSS MiB",
                "ray init s",
            ],
        )
        mid = sizes[len(sizes) // 2]
        cfg = {
            "n": mid,
            "pool": pool,
            "backend": "local",
            "workers": 1,
            "shard_size": args.shard_size,
        }
        full = spawn("embed", {**cfg, "out": str(tmp / "resume-ref")})
        res = resume({**cfg, "out": str(tmp / "resume")})
        print(
            f"\nresume ({mid:,} products, {res['of']} shards): killed after {res['killed_after']} "
            f"shards; the rerun computed {res['computed']} and took {res['rerun_s']:.1f} s (process start included; "
            f"embedding {res['seconds']:.1f} s) against {full['seconds']:.1f} s for a whole run"
        )
        if not args.skip_models:
            bf16 = bool({"avx512_bf16", "amx_bf16"} & set(flags))
            precisions = ["fp32", "bf16"] if bf16 else ["fp32"]
            tiny = {
                "seed": 0,
                "vocab_size": 2000,
                "embed_dim": 64,
                "image_resolution": 64,
                "vision_patch_size": 16,
                "vision_width": 64,
                "vision_layers": 2,
                "transformer_width": 64,
                "transformer_heads": 2,
                "transformer_layers": 2,
            }
            print(
                f"\nmodels on the CPU, 1 torch thread (bf16 {'measured' if bf16 else 'skipped: no avx512_bf16/amx'}):"
            )
            for name, arch, n in [
                ("tiny_ruclip", tiny, 256),
                ("ruCLIP ViT-B/32 384 px (random)", RUCLIP_B32_384, 16 if args.quick else 32),
            ]:
                k = min(n, len(pool))
                out = spawn(
                    "model",
                    {
                        "titles": titles[:k],
                        "paths": pool[:k],
                        "arch": arch,
                        "threads": 1,
                        "precisions": precisions,
                        "out": str(tmp / f"model-{len(name)}"),
                    },
                )
                print(
                    f"  {name}: "
                    + ", ".join(
                        f"{p} {w:.1f} products/s ({c:.1f} per CPU-second)"
                        for p, (w, c) in out.items()
                    )
                )
    print(f"rss_growth={local_rss[sizes[-1]] / local_rss[sizes[0]]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
