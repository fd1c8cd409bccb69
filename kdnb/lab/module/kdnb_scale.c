// SPDX-License-Identifier: GPL-2.0
/*
 * kdnb_scale: a production-size workload for the kdnb lab's scale scenario.
 * Usage: kdnb_scale PROCS THREADS FILES LOGLINES DIR
 *   PROCS     sleeping processes named kdnb_scale (each a fork of this one)
 *   THREADS   threads per process, the main thread included (1 = no extra thread)
 *   FILES     files created in DIR (a tmpfs), all held open by one process named kdnb_files
 *   LOGLINES  lines "kdnb-scale log line N" written to /dev/kmsg at KERN_DEBUG
 * When everything is in place it prints one line on /dev/kmsg (KERN_WARNING, so it reaches the
 * console): "KDNB-SCALE procs=P threads=T tasks=N files=F files_open=O loglines=L", with what
 * it actually managed, then exits (the sleepers and kdnb_files stay, reparented to init).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

static void *sleeper(void *arg)
{
	(void)arg;
	for (;;)
		pause();
	return NULL;
}

/* One sleeping process with THREADS threads; writes one byte to READY when they all exist. */
static void sleeper_process(int threads, int ready)
{
	pthread_attr_t attr;
	pthread_t t;
	int i, made = 1;
	char ok;

	prctl(PR_SET_NAME, "kdnb_scale", 0, 0, 0);
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 64 * 1024);
	for (i = 1; i < threads; i++)
		made += pthread_create(&t, &attr, sleeper, NULL) == 0;
	ok = made == threads ? 'y' : 'n';
	write(ready, &ok, 1);
	close(ready);
	sleeper(NULL);
}

/* Create FILES files in DIR and keep them open; writes the number held open to READY. */
static void files_process(long files, const char *dir, int ready)
{
	struct rlimit rl = { .rlim_cur = files + 64, .rlim_max = files + 64 };
	char path[4096];
	long i, open_now = 0;

	prctl(PR_SET_NAME, "kdnb_files", 0, 0, 0);
	setrlimit(RLIMIT_NOFILE, &rl);
	for (i = 0; i < files; i++) {
		int fd;

		snprintf(path, sizeof(path), "%s/f%06ld", dir, i);
		fd = open(path, O_CREAT | O_RDWR, 0644);
		if (fd >= 0) {
			write(fd, path, strlen(path));
			open_now++;
		}
	}
	write(ready, &open_now, sizeof(open_now));
	close(ready);
	sleeper(NULL);
}

int main(int argc, char **argv)
{
	long procs, threads, files, lines, i, made = 0, good = 0, files_open = 0;
	int pfd[2], ffd[2], kmsg;
	char buf[128], c;

	if (argc != 6) {
		fprintf(stderr, "usage: kdnb_scale PROCS THREADS FILES LOGLINES DIR\n");
		return 2;
	}
	procs = atol(argv[1]);
	threads = atol(argv[2]);
	files = atol(argv[3]);
	lines = atol(argv[4]);
	if (pipe(pfd) || pipe(ffd))
		return 1;
	for (i = 0; i < procs; i++) {
		pid_t p = fork();

		if (p == 0) {
			close(pfd[0]);
			sleeper_process((int)threads, pfd[1]);
		}
		made += p > 0;
	}
	close(pfd[1]);
	for (i = 0; i < made && read(pfd[0], &c, 1) == 1; i++)
		good += c == 'y';
	if (files > 0) {
		if (fork() == 0) {
			close(ffd[0]);
			files_process(files, argv[5], ffd[1]);
		}
		close(ffd[1]);
		if (read(ffd[0], &files_open, sizeof(files_open)) != sizeof(files_open))
			files_open = 0;
	}
	kmsg = open("/dev/kmsg", O_WRONLY);
	for (i = 0; i < lines && kmsg >= 0; i++) {
		int n = snprintf(buf, sizeof(buf), "<7>kdnb-scale log line %ld\n", i);

		write(kmsg, buf, n);
	}
	snprintf(buf, sizeof(buf), "<4>KDNB-SCALE procs=%ld threads=%ld tasks=%ld files=%ld "
		 "files_open=%ld loglines=%ld\n", made, good == made ? threads : 0,
		 made * (good == made ? threads : 1), files, files_open, kmsg >= 0 ? lines : 0);
	if (kmsg >= 0)
		write(kmsg, buf, strlen(buf));
	printf("%s", buf + 3);
	return 0;
}
