"""A crash-style command line for on-call engineers: `kdnb ps`, `bt`, `log`, `runq`, `kmem -s`,
`mod`, `locks`, `mount`, `wq`, `whatis`, `shell`."""

from .commands import add_subparser

__all__ = ["add_subparser"]
