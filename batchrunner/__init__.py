"""batchrunner: crash-safe, resumable batch runs against the Caicaini API."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("batchrunner")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
