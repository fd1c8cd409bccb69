"""Which kernel a dump holds: `init_uts_ns`, `linux_banner` checked against OSRELEASE, and a
given vmlinux refused when it is another build. A mixin of `Kernel`, which provides the reads,
the symbols, `vmcoreinfo`, `release`, `warnings` and the optional vmlinux."""

from __future__ import annotations

from functools import cached_property

from .. import bounds
from ..errors import KdnbError, VmlinuxMismatch
from .objects import decode_cstring

_UTS_LEN = 65  # __NEW_UTS_LEN + 1
UTS_FIELDS = ("sysname", "nodename", "release", "version", "machine", "domainname")  # new_utsname


class KernelIdentity:
    """utsname, the banner check and the vmlinux check of a `Kernel`."""

    def utsname(self, use_symbols: bool = True) -> dict[str, str]:
        """`init_uts_ns.name`: sysname, nodename, release, version, machine, domainname ({} when
        unreadable). The name sits after a kref before 6.x (no OFFSET(uts_namespace.name) in
        VMCOREINFO then): it is where the sysname "Linux" is. Without VMCOREINFO's address of
        init_uts_ns, kallsyms gives it (unless `use_symbols` is False)."""
        try:
            if "SYMBOL(init_uts_ns)" not in self.vmcoreinfo and use_symbols:
                base = self.symbol("init_uts_ns")
            else:
                base = bounds.vmcoreinfo_int(self.vmcoreinfo, "SYMBOL(init_uts_ns)", self.reader.path)
            offset = bounds.vmcoreinfo_int(self.vmcoreinfo, "OFFSET(uts_namespace.name)", self.reader.path, -1)
            raw = self.read(base, 6 * _UTS_LEN + 16)
        except KdnbError:
            return {}
        if offset < 0:
            offset = next((o for o in (0, 4, 8) if raw[o:o + 6] == b"Linux\0"), 0)
        raw = raw[offset:]
        return {n: raw[i * _UTS_LEN:(i + 1) * _UTS_LEN].split(b"\0", 1)[0].decode("utf-8", "replace")
                for i, n in enumerate(UTS_FIELDS)}

    def _uts_version(self) -> bytes:
        """`init_uts_ns.name.version` (the `#1 SMP ... Debian ...` string), or b"" when unreadable."""
        return self.utsname(use_symbols=False).get("version", "").encode()

    @cached_property
    def _banner(self) -> tuple[str, bool]:
        return self._check_banner()

    @property
    def banner(self) -> str:
        """`linux_banner` as read from the dump ("" when unreadable)."""
        return self._banner[0]

    @property
    def banner_ok(self) -> bool:
        """Whether `linux_banner` names VMCOREINFO's OSRELEASE."""
        return self._banner[1]

    def _check_banner(self) -> tuple[str, bool]:
        """Read `linux_banner` through the page tables and check it names OSRELEASE."""
        try:
            banner = self.read_cstring(self.symbol("linux_banner"), 512)
        except KdnbError as exc:
            if self._external_symbols:
                raise VmlinuxMismatch(f"the given System.map/vmlinux does not fit this dump: "
                                      f"linux_banner unreadable ({exc})") from exc
            self.warnings.append(f"linux_banner unreadable: {exc}")
            return "", False
        ok = f"Linux version {self.release} " in banner
        if not ok:
            message = f"linux_banner {banner[:80]!r} does not match OSRELEASE {self.release!r}"
            if self._external_symbols:
                raise VmlinuxMismatch(f"the given System.map/vmlinux is not this dump's kernel: {message}")
            self.warnings.append(message)
        return banner, ok

    def _check_vmlinux(self) -> None:
        """Refuse a vmlinux of another build (build id, else banner)."""
        vm = self._vmlinux
        assert vm is not None
        dump_id = self.vmcoreinfo.get("BUILD-ID", "").lower()
        if vm.build_id and len(dump_id) == 40 and vm.build_id.lower() != dump_id:
            raise VmlinuxMismatch(f"{vm.path}: build id {vm.build_id} but the dump's kernel is {dump_id}")
        try:
            link_banner = vm.read(self._vmlinux_link_address("linux_banner"), len(self.banner) + 1)
        except KdnbError:
            return
        if self.banner and decode_cstring(link_banner) != self.banner:
            raise VmlinuxMismatch(f"{vm.path}: its linux_banner differs from the dump's ({self.banner[:60]!r})")

    def _vmlinux_link_address(self, name: str) -> int:
        assert self._vmlinux is not None
        slide = int(self.vmcoreinfo.get("KERNELOFFSET", "0"), 16)
        return self.symbol(name) - slide
