"""The package's version, for `--version`, the User-Agent and run.json.

Its one home: pyproject.toml reads it from here at build time. A literal rather than
`importlib.metadata.version()`, whose import and lookup cost every command ~50 ms and ~4 MB.
"""

from __future__ import annotations

__version__ = "0.1.0"
