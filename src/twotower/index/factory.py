"""Index spec strings, as FAISS's `index_factory` names structures: `backend:kind,key=value,...`.

    faiss:flat
    faiss:hnsw,m=32,ef_construction=80,ef_search=128
    faiss:ivf,nlist=4000,nprobe=32
    faiss:ivf-sq8,nlist=4000,nprobe=32,refine=2
    pgvector:hnsw,m=16,ef_construction=64,ef_search=40

`VectorIndex.describe()` writes one, `make_vector_index` reads one back into an empty index of that backend."""

from __future__ import annotations

from dataclasses import replace

from ..errors import InputError
from .base import IndexSpec, VectorIndex
from .faiss_index import FaissIndex, FaissLayout, choose_layout

FAISS_KEYS = {"m": "hnsw_m", "ef_construction": "ef_construction", "ef_search": "search_effort",
              "nprobe": "search_effort", "nlist": "nlist", "refine": "refine"}
PGVECTOR_KEYS = {"m", "ef_construction", "ef_search"}
FIX = "write backend:kind[,key=value...], e.g. faiss:flat, faiss:hnsw,m=32 or pgvector:hnsw,m=16"


def parse_index_spec(text: str) -> tuple[str, str, dict[str, int]]:
    """'faiss:hnsw,m=32' -> ('faiss', 'hnsw', {'m': 32}); a wrong backend, kind or key is one clear error."""
    backend, _, rest = str(text).partition(":")
    kind, *pairs = rest.split(",") if rest else [""]
    if backend not in ("faiss", "pgvector"):
        raise InputError(f"index spec {text!r}", f"unknown backend {backend!r}", FIX)
    kinds = ("flat", "hnsw", "ivf", "ivf-sq8") if backend == "faiss" else ("hnsw",)
    if kind not in kinds:
        raise InputError(f"index spec {text!r}", f"{backend} has no kind {kind!r} (it has {', '.join(kinds)})", FIX)
    params = {}
    known = FAISS_KEYS if backend == "faiss" else PGVECTOR_KEYS
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or key not in known or not value.isdigit():
            raise InputError(f"index spec {text!r}", f"{pair!r} is not one of {sorted(known)} = a whole number", FIX)
        params[key] = int(value)
    return backend, kind, params


def make_vector_index(text: str, spec: IndexSpec, n_items: int = 0, dsn: str | None = None,
                      table: str = "twotower_items") -> VectorIndex:
    """An empty index from a spec string; `dsn` is the PostgreSQL server of a pgvector index."""
    backend, kind, params = parse_index_spec(text)
    if backend == "faiss":
        layout = choose_layout(n_items, kind=kind)
        layout = replace(layout, **{FAISS_KEYS[k]: v for k, v in params.items()})
        return FaissIndex(spec, layout)
    if dsn is None:
        raise InputError(f"index spec {text!r}", "a pgvector index needs a server", "pass its dsn")
    from .pgvector_index import PgVectorIndex

    return PgVectorIndex(spec, dsn, table, params.get("m", 16), params.get("ef_construction", 64),
                         params.get("ef_search"))


__all__ = ["FaissLayout", "make_vector_index", "parse_index_spec"]
