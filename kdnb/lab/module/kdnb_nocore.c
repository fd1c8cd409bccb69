// SPDX-License-Identifier: GPL-2.0
/*
 * kdnb_nocore: the "segmentation fault, but no core dumped" cases of the nocore lab scenario.
 * Usage: kdnb_nocore CASE
 *   ok       control: RLIMIT_CORE unlimited, cwd / (a core is written)
 *   rlimit   RLIMIT_CORE 0
 *   dir      RLIMIT_CORE unlimited, as uid/gid 65534 (dumpable again after setuid) in
 *            /nocore-ro (mode 0555, root's)
 *   suid     RLIMIT_CORE unlimited, as uid 65534 exec'ing /bin/kdnb_nocore_suid (set-uid root):
 *            the credentials change at exec, so fs.suid_dumpable (0) decides
 *   pipe     RLIMIT_CORE unlimited, core_pattern piped to a program that does not exist (set by
 *            the caller)
 * Each case forks a waiter named kdnb_nc_CASE (pause() forever: the task a vmcore shows with the
 * case's settings) and a crasher named kdnb_ncx_CASE that writes through NULL under the same
 * settings, waits for the crasher and logs to /dev/kmsg:
 *   KDNB-NOCORE case=CASE waiter=PID crasher=PID signal=N core_dumped=0|1
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#define NOBODY 65534

static int *volatile nowhere;

static void named(const char *prefix, const char *what)
{
	char name[16];

	snprintf(name, sizeof(name), "%s%s", prefix, what);
	prctl(PR_SET_NAME, name);
}

static void core_limit(rlim_t value)
{
	struct rlimit rl = { value, RLIM_INFINITY };

	setrlimit(RLIMIT_CORE, &rl);
}

static void become_nobody(void)
{
	if (setgid(NOBODY) || setuid(NOBODY)) {
		perror("kdnb_nocore: setuid");
		exit(2);
	}
}

static void run(const char *what)
{
	char line[160];
	pid_t waiter, crasher;
	int status = 0, fd;

	waiter = fork();
	if (waiter == 0) {
		named("kdnb_nc_", what);
		for (;;)
			pause();
	}
	crasher = fork();
	if (crasher == 0) {
		named("kdnb_ncx_", what);
		*nowhere = 1;
		_exit(0);
	}
	waitpid(crasher, &status, 0);
	snprintf(line, sizeof(line), "KDNB-NOCORE case=%s waiter=%d crasher=%d signal=%d core_dumped=%d\n",
		 what, waiter, crasher, WIFSIGNALED(status) ? WTERMSIG(status) : 0,
		 WIFSIGNALED(status) && WCOREDUMP(status) ? 1 : 0);
	fd = open("/dev/kmsg", O_WRONLY);
	if (fd >= 0) {
		write(fd, line, strlen(line));
		close(fd);
	}
	fputs(line, stdout);
}

int main(int argc, char **argv)
{
	const char *what = argc > 1 ? argv[1] : "";

	if (!strcmp(what, "rlimit")) {
		core_limit(0);
	} else if (!strcmp(what, "dir")) {
		core_limit(RLIM_INFINITY);
		if (chdir("/nocore-ro"))
			return 2;
		become_nobody();
		/* setuid() made the process undumpable (fs.suid_dumpable 0): only the directory may
		 * stand in the way in this case */
		prctl(PR_SET_DUMPABLE, 1);
	} else if (!strcmp(what, "suid") && getuid() != 0) {
		;  /* the set-uid copy: real uid 65534, effective uid 0 */
	} else if (!strcmp(what, "suid")) {
		core_limit(RLIM_INFINITY);
		become_nobody();
		execl("/bin/kdnb_nocore_suid", "kdnb_nocore_suid", "suid", (char *)NULL);
		return 2;
	} else if (!strcmp(what, "ok") || !strcmp(what, "pipe")) {
		core_limit(RLIM_INFINITY);
	} else {
		fprintf(stderr, "usage: kdnb_nocore ok|rlimit|dir|suid|pipe\n");
		return 1;
	}
	run(what);
	return 0;
}
