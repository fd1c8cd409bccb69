// SPDX-License-Identifier: GPL-2.0
/*
 * kdnb_work: a workload process with a recognisable name for the kdnb lab guests.
 * Usage: kdnb_work NAME MODE [ARG]
 *   sleep        sleep forever (S state)
 *   spin CPU     busy loop pinned to CPU (R state)
 *   fifo PATH    block reading a FIFO nobody writes (S state, pipe_read)
 *   hog          allocate and touch memory until the OOM killer (or panic_on_oom) acts
 *   sockets      bring lo up, hold sockets of several families with unread data, sleep:
 *                a unix listener at /kdnb.sock with one accepted connection, a unix
 *                socketpair, TCP 127.0.0.1:4242 listener + connection, TCP [::1]:4244
 *                listener, UDP 127.0.0.1:4243 with one unread datagram
 *   iohang DEV   4 KiB writes + fsync to the block device DEV until one never completes
 *                (the io-hang scenario's disk, whose writes QEMU throttles): D state
 * The process names itself NAME (prctl PR_SET_NAME) so it shows up as NAME in ps and in a dump.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static void lo_up(void)
{
	struct ifreq ifr = { .ifr_name = "lo" };
	int s = socket(AF_INET, SOCK_DGRAM, 0);

	if (s < 0 || ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
		return;
	ifr.ifr_flags |= IFF_UP;
	ioctl(s, SIOCSIFFLAGS, &ifr);
	close(s);
}

/* Sockets the dump must show: every call may fail (no IPv6), the others stay. */
static void hold_sockets(void)
{
	struct sockaddr_un un = { .sun_family = AF_UNIX, .sun_path = "/kdnb.sock" };
	struct sockaddr_in in = { .sin_family = AF_INET, .sin_port = htons(4242) };
	struct sockaddr_in6 in6 = { .sin6_family = AF_INET6, .sin6_port = htons(4244),
				    .sin6_addr = IN6ADDR_LOOPBACK_INIT };
	int l, c, pair[2];

	lo_up();
	l = socket(AF_UNIX, SOCK_STREAM, 0);
	bind(l, (struct sockaddr *)&un, sizeof(un));
	listen(l, 4);
	c = socket(AF_UNIX, SOCK_STREAM, 0);
	connect(c, (struct sockaddr *)&un, sizeof(un));
	accept(l, NULL, NULL);
	write(c, "kdnb unix stream\n", 17);
	socketpair(AF_UNIX, SOCK_DGRAM, 0, pair);
	write(pair[0], "kdnb-dgram", 10);
	in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	l = socket(AF_INET, SOCK_STREAM, 0);
	bind(l, (struct sockaddr *)&in, sizeof(in));
	listen(l, 4);
	c = socket(AF_INET, SOCK_STREAM, 0);
	connect(c, (struct sockaddr *)&in, sizeof(in));
	accept(l, NULL, NULL);
	write(c, "kdnb tcp payload, 32 bytes long\n", 32);
	l = socket(AF_INET6, SOCK_STREAM, 0);
	bind(l, (struct sockaddr *)&in6, sizeof(in6));
	listen(l, 4);
	in.sin_port = htons(4243);
	l = socket(AF_INET, SOCK_DGRAM, 0);
	bind(l, (struct sockaddr *)&in, sizeof(in));
	c = socket(AF_INET, SOCK_DGRAM, 0);
	sendto(c, "kdnb udp", 8, 0, (struct sockaddr *)&in, sizeof(in));
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: kdnb_work NAME sleep|spin CPU|fifo PATH|sockets|hog\n");
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
	} else if (!strcmp(argv[2], "sockets")) {
		hold_sockets();
		for (;;)
			pause();
	} else if (!strcmp(argv[2], "iohang")) {
		static char buf[4096];
		off_t off = 0;
		int fd = -1, i;

		for (i = 0; i < 100 && fd < 0; i++)
			if ((fd = open(argc > 3 ? argv[3] : "/dev/vdb", O_WRONLY)) < 0)
				usleep(100000);
		if (fd < 0) {
			perror("kdnb_work iohang: open");
			return 1;
		}
		memset(buf, 0x6b, sizeof(buf));
		for (;; off += 1 << 16) {  /* the first write fits the throttle's burst, a later one hangs */
			pwrite(fd, buf, sizeof(buf), off);
			fsync(fd);
		}
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
