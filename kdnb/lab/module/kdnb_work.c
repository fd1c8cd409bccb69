// SPDX-License-Identifier: GPL-2.0
/*
 * kdnb_work: a workload process with a recognisable name for the kdnb lab guests.
 * Usage: kdnb_work NAME MODE [ARG]
 *   sleep        sleep forever (S state)
 *   spin CPU     busy loop pinned to CPU (R state)
 *   fifo PATH    block reading a FIFO nobody writes (S state, pipe_read)
 *   hog          allocate and touch memory until the OOM killer (or panic_on_oom) acts
 * The process names itself NAME (prctl PR_SET_NAME) so it shows up as NAME in ps and in a dump.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: kdnb_work NAME sleep|spin CPU|fifo PATH|hog\n");
		return 2;
	}
	prctl(PR_SET_NAME, argv[1], 0, 0, 0);
	if (!strcmp(argv[2], "sleep")) {
		for (;;)
			pause();
	} else if (!strcmp(argv[2], "spin")) {
		cpu_set_t set;
		volatile unsigned long n = 0;

		CPU_ZERO(&set);
		CPU_SET(argc > 3 ? atoi(argv[3]) : 0, &set);
		sched_setaffinity(0, sizeof(set), &set);
		for (;;)
			n++;
	} else if (!strcmp(argv[2], "fifo")) {
		char c;
		int fd = open(argc > 3 ? argv[3] : "/kdnb.fifo", O_RDONLY);

		for (;;)
			if (read(fd, &c, 1) <= 0)
				pause();
	} else if (!strcmp(argv[2], "hog")) {
		for (;;) {
			size_t sz = 8 << 20;
			char *p = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

			if (p == MAP_FAILED)
				continue;
			memset(p, 0x6b, sz);
		}
	}
	fprintf(stderr, "kdnb_work: unknown mode %s\n", argv[2]);
	return 2;
}
