"""Vector indexes over item vectors: one interface (`VectorIndex`), FAISS embedded and PostgreSQL + pgvector."""

from .base import IndexSpec, IndexStats, SearchResult, VectorIndex
from .faiss_index import FaissIndex, choose_layout

__all__ = ["FaissIndex", "IndexSpec", "IndexStats", "SearchResult", "VectorIndex", "choose_layout"]
