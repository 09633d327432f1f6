"""The HTTP service: a thin FastAPI layer over `twotower.Model`, with the version being served swapped whole.
`create_app` is imported on first use, so that a process starting the service (`serve.worker`) can pause the
garbage collector before the heavy imports begin."""

__all__ = ["create_app"]


def __getattr__(name: str):
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
