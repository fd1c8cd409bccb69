"""Shared fixtures: where the corpus and the bundled samples are."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

# decoded kallsyms/BTF are cached per test run, never in the user's home
if "KDNB_CACHE_DIR" not in os.environ:
    os.environ["KDNB_CACHE_DIR"] = tempfile.mkdtemp(prefix="kdnb-test-cache-")
    atexit.register(shutil.rmtree, os.environ["KDNB_CACHE_DIR"], ignore_errors=True)

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus"
DATA = REPO / "data"


def corpus_dir(name: str) -> Path:
    """A corpus folder, or skip the test when the corpus is absent."""
    path = CORPUS / name
    if not path.is_dir():
        pytest.skip(f"corpus folder {path} not present")
    return path


def ground_truth(folder: Path) -> dict:
    """The ground-truth.json of a corpus or sample folder."""
    return json.loads((folder / "ground-truth.json").read_text())


def oracle(folder: Path) -> dict:
    """drgn's answers for a corpus folder."""
    return json.loads((folder / "oracle-drgn.json").read_text())


@pytest.fixture(scope="session")
def corpus_elf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The k6.1-sysrq filtered ELF, decompressed once per test session."""
    src = corpus_dir("k6.1-sysrq") / "vmcore.elf-d31.zst"
    out = tmp_path_factory.mktemp("corpus") / "vmcore.elf-d31"
    if shutil.which("zstd"):
        subprocess.run(["zstd", "-q", "-d", str(src), "-o", str(out)], check=True)
    else:
        import zstandard

        with open(src, "rb") as fi, open(out, "wb") as fo:
            zstandard.ZstdDecompressor().copy_stream(fi, fo)
    return out
