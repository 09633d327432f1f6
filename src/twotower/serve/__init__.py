"""The HTTP service: a thin FastAPI layer over `twotower.Model`, with the version being served swapped whole."""

from .app import create_app

__all__ = ["create_app"]
