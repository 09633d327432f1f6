"""The embedded index: FAISS in-process, saved beside the model.

Layout by catalog size: exact inner-product/L2 search up to `exact_max_items`, HNSW above (or IVF when asked).
Every item gets a stable integer label under an `IndexIDMap2`; flat and IVF remove deleted labels at once,
HNSW (which cannot remove) hides them with a search-time selector and compacts when a quarter is dead.

HNSW over inner products uses the MIPS-to-L2 reduction (Bachrach et al., 2014): items get one extra
coordinate sqrt(B - |x|^2), queries a zero, so the nearest neighbour in L2 is the largest inner product. Graph
search is far more accurate in that metric space than on raw inner products when norms vary (popular
items have larger norms); when norms hardly vary, the raw inner-product graph is better. Given sample queries,
`build` tries both on a subsample and keeps the one with the higher recall.
"""

from __future__ import annotations

import json
import math
from itertools import compress
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import faiss
import numpy as np
import pandas as pd

from ..atomic import atomic_path
from ..errors import InputError
from .base import IndexSpec, IndexStats, SearchResult, check_queries, check_vectors, exact_top_k, recall_at_k
from .id_map import IdMap

FORMAT = 2                 # 2: item ids in numpy arrays (`id_map`); 1 (labels.parquet) is still read
COMPACT_DEAD_FRACTION = 0.25
_MADV_WILLNEED, _MADV_POPULATE_READ = 3, 22       # madvise(2) advice values on Linux
EXACT_ALLOW_MAX = 20_000   # an allow-list this short is searched exactly: graph and list search miss rare items


@dataclass(frozen=True)
class FaissLayout:
    """Which FAISS structure and its parameters; recorded in index.json."""

    kind: str = "flat"              # flat | hnsw | ivf | ivf-sq8
    hnsw_m: int = 32
    ef_construction: int = 80
    nlist: int = 0
    search_effort: int = 0          # HNSW efSearch or IVF nprobe; 0 for flat
    norm_bound: float = 0.0         # HNSW over inner products: B >= every |x|^2 (set from the data)
    transform: str = ""             # HNSW over inner products: "mips" (L2 over augmented vectors) or "none"
    refine: int = 0                 # ivf-sq8: re-rank refine x k candidates with the exact vectors


def read_index(path: Path) -> faiss.Index:
    """A saved FAISS index with its vectors and graph mapped from the file, not copied: a million-item HNSW
    index (540 MB) opens in 0.23 s of CPU against 0.42 s for a read into the heap (0.47 s against 1.43 s of
    wall time when the file is not cached), so a version loading beside a served one takes less of the machine
    from its requests, and the service's processes share the pages. The file is cached first (`cache`) and
    its pages mapped in now (`populate`), not by the first searches; the first change copies the index into
    memory (`FaissIndex._own`), as FAISS cannot resize a mapped vector."""
    cache(path)
    index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC)
    populate(path)
    return index


def cache(path: Path, chunk: int = 8 << 20) -> None:
    """Read the file once, in large sequential chunks, into the system's file cache: mapping a file that is
    not cached reads it a page fault at a time (an evicted 540 MB index opened in 9.7 s on this machine,
    against 0.46 s read first; 0.08 s of CPU when it is cached). A paced load pauses between the chunks."""
    buffer = memoryview(bytearray(chunk))
    with open(path, "rb", buffering=0) as fh:
        while fh.readinto(buffer):
            pass


def populate(path: Path) -> None:
    """Map every page of this process's mappings of `path` now (Linux's MADV_POPULATE_READ; where that is
    missing, only read it ahead): a page first touched by a search costs that search a fault, and a new
    version's first searches would touch thousands (the slowest of the first 50: 2.3-2.7 ms against 1.1-1.4)."""
    maps = Path("/proc/self/maps")
    if not maps.exists():
        return
    import ctypes

    target = str(Path(path).resolve())
    madvise = ctypes.CDLL(None, use_errno=True).madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    for line in maps.read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5] == target:
            start, end = (int(a, 16) for a in fields[0].split("-"))
            if madvise(start, end - start, _MADV_POPULATE_READ) != 0:
                madvise(start, end - start, _MADV_WILLNEED)


def _in_memory(index: faiss.Index | None) -> faiss.Index | None:
    """A copy of `index` held in this process's memory (of a mapped one: one FAISS can change)."""
    return faiss.deserialize_index(faiss.serialize_index(index)) if index is not None else None


def choose_layout(n_items: int, exact_max_items: int = 50_000, kind: str = "auto", hnsw_m: int = 32,
                  ef_construction: int = 80, search_effort: int = 0) -> FaissLayout:
    """The rule: exact search while the catalog has at most `exact_max_items` items, else IVF with 8-bit
    lists and exact re-ranking (`ivf-sq8`; the fastest at recall@100 >= 0.95 on 1M items in
    `twotower benchmark index`). IVF gets about 4·sqrt(n) lists. A zero `search_effort` picks a starting
    point that tuning refines."""
    if kind == "auto":
        kind = "flat" if n_items <= exact_max_items else "ivf-sq8"
    if kind == "flat":
        return FaissLayout("flat", hnsw_m=0, ef_construction=0)
    if kind == "hnsw":
        return FaissLayout("hnsw", hnsw_m, ef_construction, 0, search_effort or 128)
    if kind in ("ivf", "ivf-sq8"):
        nlist = int(max(1, min(65536, 4 * math.sqrt(max(n_items, 1)))))
        return FaissLayout(kind, hnsw_m=0, ef_construction=0, nlist=nlist,
                           search_effort=search_effort or max(1, nlist // 32), refine=2 if kind == "ivf-sq8" else 0)
    raise InputError("index.faiss_kind", f"unknown kind {kind!r}", "use auto, flat, hnsw, ivf or ivf-sq8")


class FaissIndex:
    """`VectorIndex` over FAISS. Not thread-safe for writes; searches may run concurrently with each other."""

    backend = "faiss"

    def __init__(self, spec: IndexSpec, layout: FaissLayout):
        self.spec, self.layout = spec, layout
        self._index, self._base = self._empty()
        self._exact, self._exact_store = self._empty_exact()
        self._ids = IdMap()                 # item ids <-> labels
        self._dead: set[int] = set()        # HNSW only: labels still in the graph but deleted
        self._next_label = 0
        self._mapped = False                # read from a file it still maps (`read_index`): copy before a change
        self.recall: dict = {}

    @property
    def _mips(self) -> bool:
        """Inner products searched as L2 over augmented vectors (see the module docstring)."""
        return self.layout.kind == "hnsw" and self.spec.metric == "ip" and self.layout.transform != "none"

    # --- construction -------------------------------------------------------------------------------
    def _metric(self) -> int:
        return faiss.METRIC_INNER_PRODUCT if self.spec.metric == "ip" else faiss.METRIC_L2

    def _empty(self, train: np.ndarray | None = None) -> tuple[faiss.Index, faiss.Index]:
        """A new labelled index and the structure under it (both kept: a map does not own its Python child)."""
        d, lay = self.spec.dim, self.layout
        if lay.kind == "flat":
            base = faiss.IndexFlat(d, self._metric())
        elif lay.kind == "hnsw":
            base = faiss.IndexHNSWFlat(d + 1, lay.hnsw_m, faiss.METRIC_L2) if self._mips else \
                faiss.IndexHNSWFlat(d, lay.hnsw_m, self._metric())
            base.hnsw.efConstruction = lay.ef_construction
            base.hnsw.efSearch = lay.search_effort
        else:
            quantizer = faiss.IndexFlat(d, self._metric())
            base = faiss.IndexIVFFlat(quantizer, d, lay.nlist, self._metric()) if lay.kind == "ivf" else \
                faiss.IndexIVFScalarQuantizer(quantizer, d, lay.nlist, faiss.ScalarQuantizer.QT_8bit, self._metric())
            base.nprobe = lay.search_effort
            base.cp.min_points_per_centroid = 5     # small catalogs: about sqrt(n)/4 items per list is enough
            base.set_direct_map_type(faiss.DirectMap.Hashtable)
            if train is not None:
                base.train(train)
            return base, base    # IVF keeps ids itself, and removes by id through its hash table
        return faiss.IndexIDMap2(base), base

    def _empty_exact(self) -> tuple[faiss.Index | None, faiss.Index | None]:
        """Full-precision copies for re-ranking, when the main structure stores compressed vectors."""
        if not self.layout.refine:
            return None, None
        store = faiss.IndexFlat(self.spec.dim, self._metric())
        return faiss.IndexIDMap2(store), store

    def build(self, ids: Sequence[str], vectors: np.ndarray, progress=None,
              sample_queries: np.ndarray | None = None) -> None:
        """Replace the content. `sample_queries` (real queries) let an HNSW over inner products pick its
        transform by measurement (see the module docstring)."""
        ids = [str(i) for i in ids]
        vectors = check_vectors(ids, vectors, self.spec.dim, "index build")
        if self.layout.kind == "hnsw" and self.spec.metric == "ip" and not self.layout.transform:
            self.layout = replace(self.layout, transform=self._pick_transform(vectors, sample_queries))
        train = None
        if self.layout.kind.startswith("ivf"):
            if len(vectors) < self.layout.nlist:
                raise InputError("index build", f"{len(vectors)} items is fewer than {self.layout.nlist} IVF lists",
                                 "use index.faiss_kind = 'flat' or 'hnsw' for a catalog this small")
            rng = np.random.default_rng(0)
            sample = min(len(vectors), 64 * self.layout.nlist)
            train = vectors[rng.choice(len(vectors), sample, replace=False)]
        if self._mips:   # headroom, so that upserts rarely force a rebuild
            bound = 1.05 * float((vectors.astype(np.float64) ** 2).sum(1).max(initial=0.0)) or 1.0
            self.layout = replace(self.layout, norm_bound=bound)
        self._index, self._base = self._empty(train)
        self._exact, self._exact_store = self._empty_exact()
        self._ids, self._dead, self._next_label, self._mapped = IdMap(), set(), 0, False
        self._add(ids, vectors, progress)

    def _pick_transform(self, vectors: np.ndarray, queries: np.ndarray | None, sample: int = 50_000,
                        k: int = 100) -> str:
        """'mips' or 'none': whichever finds more of the exact top-k on a subsample at the same effort."""
        if queries is None or len(queries) == 0 or len(vectors) <= 2 * k:
            return "mips"
        from .tuning import exact_truth

        rng = np.random.default_rng(0)
        part = vectors[np.sort(rng.choice(len(vectors), min(sample, len(vectors)), replace=False))]
        queries = queries[:200]
        ids = np.arange(len(part)).astype(str).astype(object)
        truth = exact_truth(ids, part, queries, k, "ip")
        recall = {}
        for transform in ("mips", "none"):
            trial = FaissIndex(self.spec, replace(self.layout, transform=transform, search_effort=2 * k))
            trial.build(ids, part)
            recall[transform] = recall_at_k(trial.search(queries, k).ids, truth)
        return max(recall, key=recall.get)

    def _stored(self, vectors: np.ndarray) -> np.ndarray:
        """Vectors as the FAISS structure holds them (augmented for MIPS)."""
        if not self._mips:
            return vectors
        gap = self.layout.norm_bound - (vectors.astype(np.float64) ** 2).sum(1)
        return np.hstack([vectors, np.sqrt(np.maximum(gap, 0.0))[:, None].astype(np.float32)])

    def _add(self, ids: list[str], vectors: np.ndarray, progress=None, chunk: int = 20_000) -> None:
        if self._mips and len(vectors) and (vectors.astype(np.float64) ** 2).sum(1).max() > self.layout.norm_bound:
            # a longer vector than the bound allows: rebuild everything with a new bound
            keep = self._ids.ids()
            self.build(keep + ids, np.concatenate([self.vectors(keep), vectors]) if keep else vectors, progress)
            return
        self._own()
        labels = np.arange(self._next_label, self._next_label + len(ids), dtype=np.int64)
        self._next_label += len(ids)
        for lo in range(0, len(ids), chunk):      # stored form a chunk at a time: no second copy of the catalog
            part = self._stored(vectors[lo:lo + chunk])
            self._index.add_with_ids(part, labels[lo:lo + chunk])
            if self._exact is not None:
                self._exact.add_with_ids(part, labels[lo:lo + chunk])
            if progress is not None:
                progress(min(chunk, len(ids) - lo))
        self._ids.add(ids, labels)

    def _attach(self, index: faiss.Index, exact: faiss.Index | None) -> None:
        """Hold a labelled index (and its full-precision copy) with the structures under them."""
        self._index, self._exact = index, exact
        self._base = index if self.layout.kind.startswith("ivf") else faiss.downcast_index(index.index)
        self._exact_store = faiss.downcast_index(exact.index) if exact is not None else None

    def _own(self) -> None:
        """Copy a mapped index into this process's memory before its first change (FAISS aborts the process on
        a write to a mapped vector). For a million items that is ~1 s and, for a moment, twice the index."""
        if self._mapped:
            self._attach(_in_memory(self._index), _in_memory(self._exact))
            self.search_effort = self.layout.search_effort
            self._mapped = False

    # --- lifecycle ----------------------------------------------------------------------------------
    def upsert(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        ids = [str(i) for i in ids]
        vectors = check_vectors(ids, vectors, self.spec.dim, "index upsert")
        self.delete(ids)
        self._add(ids, vectors)

    def delete(self, ids: Sequence[str]) -> int:
        labels = self._ids.remove(ids)
        if not labels:
            return 0
        if self.layout.kind == "hnsw":
            self._dead.update(labels)
            if len(self._dead) > COMPACT_DEAD_FRACTION * self._index.ntotal:
                self.compact()
        else:
            self._own()
            labels = np.asarray(labels, dtype=np.int64)
            for index in (self._index, self._exact):
                if index is not None:
                    index.remove_ids(faiss.IDSelectorArray(len(labels), faiss.swig_ptr(labels)))
        return len(labels)

    def compact(self) -> None:
        """Rebuild without the deleted items (HNSW); ids and vectors are unchanged."""
        ids = self._ids.ids()
        self.build(ids, self.vectors(ids))

    # --- reading ------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._ids)

    def contains(self, ids: Sequence[str]) -> np.ndarray:
        return self._ids.labels(ids) >= 0

    def ids(self) -> np.ndarray:
        return np.asarray(self._ids.ids(), dtype=object)

    def first_id(self) -> str | None:
        return self._ids.first()

    def vectors(self, ids: Sequence[str]) -> np.ndarray:
        labels = self._ids.labels(ids)
        if (labels < 0).any():
            raise KeyError(f"item {ids[int(np.argmax(labels < 0))]!r} is not in the index")
        return self._reconstruct(labels) if len(ids) else np.zeros((0, self.spec.dim), np.float32)

    def _reconstruct(self, labels: np.ndarray) -> np.ndarray:
        """[n, d] full-precision vectors of these labels."""
        source = self._exact if self._exact is not None else self._index
        return source.reconstruct_batch(np.ascontiguousarray(labels, dtype=np.int64))[:, :self.spec.dim]

    @property
    def search_effort(self) -> int:
        return self.layout.search_effort

    @search_effort.setter
    def search_effort(self, value: int) -> None:
        self.layout = replace(self.layout, search_effort=int(value))
        if self.layout.kind == "hnsw":
            self._base.hnsw.efSearch = int(value)
        elif self.layout.kind.startswith("ivf"):
            self._base.nprobe = int(value)

    def search(self, queries: np.ndarray, k: int, exclude: Sequence[Collection[str]] | None = None,
               allow: Collection[str] | None = None) -> SearchResult:
        queries = check_queries(queries, self.spec.dim)
        n = len(queries)
        extra = max((len(e) for e in exclude), default=0) if exclude is not None else 0
        fetch = max(1, min(k + extra, len(self)))
        allowed = None
        if allow is not None:
            allowed = self._ids.labels(list(allow))
            allowed = allowed[allowed >= 0]
        if allowed is not None and (self.layout.kind == "flat" or len(allowed) <= EXACT_ALLOW_MAX):
            scores, labels = self._search_exact(queries, allowed, fetch)
        else:
            selector, keep_alive = self._selector(allowed)
            if self._mips:
                augmented = np.hstack([queries, np.zeros((n, 1), np.float32)])
                scores, labels = self._index.search(augmented, fetch, params=self._params(selector, fetch))
                # |q - x'|^2 = |q|^2 + B - 2 q.x  ->  q.x
                scores = ((queries ** 2).sum(1, keepdims=True) + self.layout.norm_bound - scores) / 2
            elif self.layout.refine:
                _, labels = self._index.search(queries, fetch * self.layout.refine, params=self._params(selector, fetch))
                scores, labels = self._rerank(queries, labels, fetch)
            else:
                scores, labels = self._index.search(queries, fetch, params=self._params(selector, fetch))
                if self.spec.metric == "l2":
                    scores = -scores
        out_ids = np.full((n, k), None, dtype=object)
        out_scores = np.full((n, k), -np.inf, dtype=np.float32)
        id_of = self._ids.id_array()                      # the one a write meanwhile does not change
        for row in range(n):
            found = labels[row]
            keep = (found >= 0) & (found < len(id_of))
            found, score = found[keep], scores[row][keep]
            raw = id_of[found]
            live = raw != b""                             # b'': a label whose item was deleted
            names, score = IdMap.decode(raw[live]), score[live]
            if exclude is not None and len(exclude[row]):
                keep = ~np.fromiter(map(exclude[row].__contains__, names), bool, len(names))
                names, score = list(compress(names, keep.tolist())), score[keep]
            names, score = names[:k], score[:k]
            out_ids[row, :len(names)], out_scores[row, :len(names)] = names, score
        return SearchResult(out_ids, out_scores)

    def _search_exact(self, queries: np.ndarray, labels: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
        """Brute force over a few labelled items: (scores, labels) shaped like a FAISS answer."""
        if len(labels) == 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        rows, scores = exact_top_k(self._reconstruct(labels), queries, fetch, self.spec.metric)
        return scores, labels[rows]

    def _rerank(self, queries: np.ndarray, labels: np.ndarray, fetch: int,
                block_floats: int = 1 << 22) -> tuple[np.ndarray, np.ndarray]:
        """Exact scores for the candidates a compressed search found; the best `fetch` per query. Queries go a
        block at a time, so the candidates' vectors held at once stay near `block_floats` floats (16 MB)
        however many candidates a query has (a user with thousands of seen items asks for thousands)."""
        rows = max(1, block_floats // max(1, labels.shape[1] * self.spec.dim))
        if len(queries) <= rows:
            return self._rerank_block(queries, labels, fetch)
        parts = [self._rerank_block(queries[lo:lo + rows], labels[lo:lo + rows], fetch)
                 for lo in range(0, len(queries), rows)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _rerank_block(self, queries: np.ndarray, labels: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
        found = labels >= 0
        vectors = np.zeros(labels.shape + (self.spec.dim,), np.float32)
        vectors[found] = self._reconstruct(labels[found])
        scores = np.einsum("nkd,nd->nk", vectors, queries)
        if self.spec.metric == "l2":
            scores = 2 * scores - (vectors ** 2).sum(-1) - (queries ** 2).sum(1, keepdims=True)
        scores[~found] = -np.inf
        order = np.argsort(-scores, axis=1, kind="stable")[:, :fetch]
        best = np.take_along_axis(scores, order, 1)
        return best, np.where(np.isfinite(best), np.take_along_axis(labels, order, 1), -1)

    def _selector(self, allowed: np.ndarray | None) -> tuple[object, list]:
        """The label filter for one search, and the parts it points to (they must outlive the search)."""
        sel, parts = None, []
        if self._dead:
            dead = faiss.IDSelectorBatch(np.fromiter(self._dead, np.int64))
            sel = faiss.IDSelectorNot(dead)
            parts.append(dead)
        if allowed is not None:
            allow_sel = faiss.IDSelectorBatch(allowed)
            parts += [allow_sel, sel]
            sel = allow_sel if sel is None else faiss.IDSelectorAnd(allow_sel, sel)
        return sel, parts

    def _params(self, selector, fetch: int):
        kind = self.layout.kind
        needs_effort = kind == "hnsw" and fetch > self.layout.search_effort
        if selector is None and not needs_effort:
            return None
        if kind == "hnsw":
            return faiss.SearchParametersHNSW(sel=selector, efSearch=max(fetch, self.layout.search_effort))
        if kind.startswith("ivf"):
            return faiss.SearchParametersIVF(sel=selector, nprobe=self.layout.search_effort)
        return faiss.SearchParameters(sel=selector)

    def describe(self) -> str:
        lay = self.layout
        if lay.kind == "flat":
            return "faiss:flat"
        if lay.kind == "hnsw":
            return f"faiss:hnsw,m={lay.hnsw_m},ef_construction={lay.ef_construction},ef_search={lay.search_effort}"
        refine = f",refine={lay.refine}" if lay.refine else ""
        return f"faiss:{lay.kind},nlist={lay.nlist},nprobe={lay.search_effort}{refine}"

    def close(self) -> None:
        """Nothing to release: the index lives in this process."""

    def size_bytes(self) -> int:
        """Bytes the index takes serialized (about its memory): the structure plus full-precision copies."""
        return sum(faiss.serialize_index(i).nbytes for i in (self._index, self._exact) if i is not None)

    # --- persistence --------------------------------------------------------------------------------
    def stats(self) -> IndexStats:
        params = {k: v for k, v in asdict(self.layout).items() if k != "kind" and v}
        return IndexStats(self.backend, self.layout.kind, len(self), self.spec.dim, self.spec.similarity,
                          params, self.recall)

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        with atomic_path(folder) as tmp:
            tmp.mkdir()
            faiss.write_index(self._index, str(tmp / "faiss.index"))
            if self._exact is not None:
                faiss.write_index(self._exact, str(tmp / "exact.index"))
            self._ids.save(tmp)
            meta = {"format": FORMAT, "backend": self.backend, "index": self.describe(), "spec": asdict(self.spec),
                    "layout": asdict(self.layout), "next_label": self._next_label,
                    "dead": sorted(self._dead), "recall": self.recall}
            (tmp / "index.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, folder: Path, meta: dict) -> "FaissIndex":
        if meta.get("format") not in (1, FORMAT):
            raise InputError(str(folder), f"index format {meta.get('format')} is not {FORMAT}",
                             "rebuild it: `twotower index --model DIR`")
        index = cls(IndexSpec(**meta["spec"]), FaissLayout(**meta["layout"]))
        index._attach(read_index(Path(folder) / "faiss.index"),
                      read_index(Path(folder) / "exact.index") if index.layout.refine else None)
        index._mapped = True
        if meta["format"] == FORMAT:
            index._ids = IdMap.load(folder)
        else:                                            # format 1: saved before the id arrays
            labels = pd.read_parquet(Path(folder) / "labels.parquet")
            index._ids = IdMap.from_pairs(labels["item_id"].astype(str).tolist(), labels["label"].to_numpy())
        index._dead, index._next_label, index.recall = set(meta["dead"]), meta["next_label"], meta.get("recall", {})
        index.search_effort = index.layout.search_effort
        return index
