"""The kernel layer: virtual memory, kallsyms symbols, BTF types and typed object access."""

from .kernel import Kernel
from .objects import Layout, ListWalk, Object
from .types import Member, Type

__all__ = ["Kernel", "Layout", "ListWalk", "Object", "Member", "Type"]
