"""Reference ml-analyze server: the ml-analyze HTTP contract, backed by real parsing and matching."""

__version__ = "0.1.0"

from .app import create_app  # noqa: E402  (after __version__, which app imports)

__all__ = ["__version__", "create_app"]
