/* data/cores/crashers.c's programs with Crashpad's handler as their crash reporter: a fatal
 * signal fork()s and exec()s crashpad_handler --trace-parent-with-exception, which ptraces this
 * process and writes a minidump; then the signal is delivered as usual.
 *
 *     mdcrashers HANDLER DATABASE SCENARIO [ARGS...]
 *
 * tools/make_minidumps.py builds this statically and records gdb's view of each crash. */
#define main crashers_main
#include "crashers.c"  /* data/cores/crashers.c (-I data/cores) */
#undef main

#include <stdint.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>

/* The block crashpad_handler reads from this process at the address it is given. */
static struct {
    uint64_t siginfo_address;
    uint64_t context_address;
    int32_t thread_id;
} exception_information;

static const char *handler_path, *database;

static void report(int sig, siginfo_t *si, void *uc)
{
    char database_arg[4096], info_arg[64];
    exception_information.siginfo_address = (uintptr_t)si;
    exception_information.context_address = (uintptr_t)uc;
    exception_information.thread_id = (int32_t)syscall(SYS_gettid);
    snprintf(database_arg, sizeof database_arg, "--database=%s", database);
    snprintf(info_arg, sizeof info_arg, "--trace-parent-with-exception=%#lx",
             (unsigned long)(uintptr_t)&exception_information);
    prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY, 0, 0, 0);
    pid_t child = fork();
    if (child == 0) {
        execl(handler_path, handler_path, database_arg, info_arg, "--no-periodic-tasks",
              (char *)NULL);
        _exit(127);
    }
    if (child > 0)
        waitpid(child, NULL, 0);
    signal(sig, SIG_DFL);  /* returning re-runs the faulting instruction, now fatal */
    if (si->si_code <= 0)  /* sent, not raised by an instruction: send it again */
        raise(sig);
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: mdcrashers HANDLER DATABASE SCENARIO [ARGS...]\n");
        return 1;
    }
    handler_path = argv[1];
    database = argv[2];
    static char alt_stack[64 * 1024];  /* the stack-overflow case needs a stack to report on */
    stack_t ss = {.ss_sp = alt_stack, .ss_size = sizeof alt_stack};
    sigaltstack(&ss, NULL);
    struct sigaction sa = {.sa_sigaction = report, .sa_flags = SA_SIGINFO | SA_ONSTACK};
    int fatal[] = {SIGSEGV, SIGABRT, SIGBUS, SIGILL, SIGFPE, SIGQUIT};
    for (unsigned i = 0; i < sizeof fatal / sizeof fatal[0]; i++)
        sigaction(fatal[i], &sa, NULL);
    argv[2] = argv[0];
    return crashers_main(argc - 2, argv + 2);
}
