"""detente: stage peace negotiations between LLM agents and judge their outcomes."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("detente")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0+unknown"

__all__ = ["__version__"]
