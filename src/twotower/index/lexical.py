"""The lexical index beside the vector index: BM25 over each item's search text (`bm25s`), so a query's exact
words (a brand, a model number, a title) find their items even where the dense encoder blurs them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_path

TOKENS = r"(?u)\b\w+\b"           # words of any script, single letters and digits kept ("x 5", "tv 4k")


@dataclass
class LexicalIndex:
    """BM25 over the texts of `ids` (lower-cased words, no stop list: queries come in many languages)."""

    ids: np.ndarray               # [n] item ids, in the order the index numbers its documents
    _retriever: object
    _tokenizer: object

    @classmethod
    def build(cls, ids: list[str], texts: list[str]) -> "LexicalIndex":
        import bm25s

        tokenizer = bm25s.tokenization.Tokenizer(lower=True, splitter=TOKENS, stopwords=None)
        tokens = tokenizer.tokenize(list(texts), update_vocab=True, return_as="tuple", show_progress=False)
        retriever = bm25s.BM25()
        retriever.index(tokens, show_progress=False)
        return cls(np.asarray(ids, dtype=object), retriever, tokenizer)

    def __len__(self) -> int:
        return len(self.ids)

    def search(self, query: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(item ids, BM25 scores) of the query's top k (fewer when fewer items share a word with it)."""
        k = min(k, len(self.ids))
        tokens = self._tokenizer.tokenize([query], update_vocab=False, return_as="ids", show_progress=False)
        if k == 0 or not tokens or not tokens[0]:
            return np.zeros(0, object), np.zeros(0)
        docs, scores = self._retriever.retrieve(tokens, k=k, show_progress=False, n_threads=1)
        docs, scores = docs[0], scores[0].astype(np.float64)
        hit = scores > 0
        return self.ids[docs[hit]], scores[hit]

    def save(self, folder: Path) -> None:
        with atomic_path(Path(folder)) as tmp:
            tmp.mkdir(parents=True)
            self._retriever.save(str(tmp / "bm25"), show_progress=False)
            self._tokenizer.save_vocab(str(tmp / "bm25"))
            (tmp / "ids.json").write_text(json.dumps([str(i) for i in self.ids]))

    @classmethod
    def load(cls, folder: Path) -> "LexicalIndex":
        import bm25s

        folder = Path(folder)
        tokenizer = bm25s.tokenization.Tokenizer(lower=True, splitter=TOKENS, stopwords=None)
        tokenizer.load_vocab(str(folder / "bm25"))
        retriever = bm25s.BM25.load(str(folder / "bm25"), show_progress=False)
        ids = np.asarray(json.loads((folder / "ids.json").read_text()), dtype=object)
        return cls(ids, retriever, tokenizer)
