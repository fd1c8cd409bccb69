"""Linux x86_64 signal numbers and si_code meanings (include/uapi/asm-generic/signal.h and
siginfo.h), for telling a user what a process died of."""

from __future__ import annotations

SIGNALS = {
    1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 4: "SIGILL", 5: "SIGTRAP", 6: "SIGABRT", 7: "SIGBUS",
    8: "SIGFPE", 9: "SIGKILL", 10: "SIGUSR1", 11: "SIGSEGV", 12: "SIGUSR2", 13: "SIGPIPE",
    14: "SIGALRM", 15: "SIGTERM", 16: "SIGSTKFLT", 17: "SIGCHLD", 18: "SIGCONT", 19: "SIGSTOP",
    20: "SIGTSTP", 21: "SIGTTIN", 22: "SIGTTOU", 23: "SIGURG", 24: "SIGXCPU", 25: "SIGXFSZ",
    26: "SIGVTALRM", 27: "SIGPROF", 28: "SIGWINCH", 29: "SIGIO", 30: "SIGPWR", 31: "SIGSYS",
}
SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP, SIGABRT, SIGSYS = 11, 7, 4, 8, 5, 6, 31
# Signals whose default action dumps core (man 7 signal, "Core" action)
CORE_SIGNALS = frozenset({3, 4, 5, 6, 7, 8, 11, 24, 25, 31})
# The fault signals: si_code > 0 means the kernel raised them for an instruction, si_addr valid
FAULT_SIGNALS = frozenset({SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP})

# si_code values every signal shares (<= 0: sent by a process; SI_KERNEL: by the kernel)
GENERIC_CODES = {
    0: ("SI_USER", "sent by kill() or raise()"),
    0x80: ("SI_KERNEL", "sent by the kernel"),
    -1: ("SI_QUEUE", "sent by sigqueue()"),
    -2: ("SI_TIMER", "a POSIX timer expired"),
    -3: ("SI_MESGQ", "a POSIX message queue changed state"),
    -4: ("SI_ASYNCIO", "asynchronous I/O completed"),
    -5: ("SI_SIGIO", "queued SIGIO"),
    -6: ("SI_TKILL", "sent by tkill()/tgkill() (raise() and abort() use it)"),
    -7: ("SI_DETHREAD", "sent by the kernel when another thread called execve()"),
    -60: ("SI_ASYNCNL", "asynchronous name lookup completed"),
}
SIGNAL_CODES = {
    SIGSEGV: {
        1: ("SEGV_MAPERR", "address not mapped to an object"),
        2: ("SEGV_ACCERR", "invalid permissions for a mapped object"),
        3: ("SEGV_BNDERR", "failed address bound checks"),
        4: ("SEGV_PKUERR", "access denied by memory protection keys"),
        5: ("SEGV_ACCADI", "ADI not enabled for the mapped object"),
        6: ("SEGV_ADIDERR", "disrupting MCD error"),
        7: ("SEGV_ADIPERR", "precise MCD exception"),
        8: ("SEGV_MTEAERR", "asynchronous ARM MTE error"),
        9: ("SEGV_MTESERR", "synchronous ARM MTE exception"),
        10: ("SEGV_CPERR", "control protection fault (shadow stack)"),
    },
    SIGBUS: {
        1: ("BUS_ADRALN", "invalid address alignment"),
        2: ("BUS_ADRERR", "non-existent physical address (past the end of a mapped file)"),
        3: ("BUS_OBJERR", "object-specific hardware error"),
        4: ("BUS_MCEERR_AR", "hardware memory error consumed on a machine check: action required"),
        5: ("BUS_MCEERR_AO", "hardware memory error detected in the process: action optional"),
    },
    SIGILL: {
        1: ("ILL_ILLOPC", "illegal opcode"),
        2: ("ILL_ILLOPN", "illegal operand"),
        3: ("ILL_ILLADR", "illegal addressing mode"),
        4: ("ILL_ILLTRP", "illegal trap"),
        5: ("ILL_PRVOPC", "privileged opcode"),
        6: ("ILL_PRVREG", "privileged register"),
        7: ("ILL_COPROC", "coprocessor error"),
        8: ("ILL_BADSTK", "internal stack error"),
        9: ("ILL_BADIADDR", "unimplemented instruction address"),
    },
    SIGFPE: {
        1: ("FPE_INTDIV", "integer divide by zero"),
        2: ("FPE_INTOVF", "integer overflow"),
        3: ("FPE_FLTDIV", "floating-point divide by zero"),
        4: ("FPE_FLTOVF", "floating-point overflow"),
        5: ("FPE_FLTUND", "floating-point underflow"),
        6: ("FPE_FLTRES", "floating-point inexact result"),
        7: ("FPE_FLTINV", "floating-point invalid operation"),
        8: ("FPE_FLTSUB", "subscript out of range"),
        14: ("FPE_FLTUNK", "undiagnosed floating-point exception"),
        15: ("FPE_CONDTRAP", "trap on condition"),
    },
    SIGTRAP: {
        1: ("TRAP_BRKPT", "process breakpoint"),
        2: ("TRAP_TRACE", "process trace trap"),
        3: ("TRAP_BRANCH", "process taken branch trap"),
        4: ("TRAP_HWBKPT", "hardware breakpoint/watchpoint"),
        5: ("TRAP_UNK", "undiagnosed trap"),
        6: ("TRAP_PERF", "perf event with sigtrap=1"),
    },
    SIGSYS: {
        1: ("SYS_SECCOMP", "seccomp filter triggered"),
        2: ("SYS_USER_DISPATCH", "syscall user dispatch triggered"),
    },
}


def signal_name(signo: int) -> str:
    """`SIGSEGV` for 11; `signal 40` (a real-time signal) for numbers without a name."""
    if 34 <= signo <= 64:
        return f"SIGRTMIN+{signo - 34}"
    return SIGNALS.get(signo, f"signal {signo}")


def code_meaning(signo: int, code: int) -> tuple[str, str]:
    """(name, meaning) of a si_code for a signal; the kernel's generic codes apply to all."""
    if code > 0 and code != 0x80:
        found = SIGNAL_CODES.get(signo, {}).get(code)
        if found:
            return found
        return (f"code {code}", "a signal-specific code kdnb does not know")
    return GENERIC_CODES.get(code, (f"code {code}", "unknown si_code"))


def sent_by_process(code: int) -> bool:
    """Whether a si_code says a process sent the signal (kill, tkill, sigqueue: si_pid valid)."""
    return code in (0, -1, -6)
