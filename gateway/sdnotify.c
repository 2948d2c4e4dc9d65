/*
 * gateway/sdnotify.c — systemd's notification protocol, which is small
 * enough not to need libsystemd: a datagram of "KEY=VALUE" lines sent to
 * the socket in $NOTIFY_SOCKET, a path or, when it starts with '@', a name
 * in the abstract namespace.
 */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/err.h"
#include "core/util.h"
#include "gateway/sdnotify.h"

int
sdnotify(const char *state)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa;
	size_t plen;
	socklen_t salen;
	ssize_t n;
	int fd, r;

	if (path == NULL || path[0] == '\0')
		return 1;
	plen = strlen(path);
	if ((path[0] != '/' && path[0] != '@') || plen >= sizeof(sa.sun_path))
		return FGW_ERR_INVALID;
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, path, plen);
	if (path[0] == '@')
		sa.sun_path[0] = '\0'; /* abstract: the name is not NUL-terminated */
	salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen + (path[0] == '/'));
	if ((fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0)
		return FGW_ERR_IO;
	do {
		n = sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sa, salen);
	} while (n < 0 && errno == EINTR);
	r = n == (ssize_t)strlen(state) ? FGW_OK : FGW_ERR_IO;
	close(fd);
	return r;
}

uint64_t
sdnotify_watchdog_usec(void)
{
	const char *usec = getenv("WATCHDOG_USEC"), *pid = getenv("WATCHDOG_PID");
	int64_t v, p;
	if (usec == NULL || fgw_parse_i64(usec, 1, INT64_MAX, &v) != 0)
		return 0;
	if (pid != NULL &&
	    (fgw_parse_i64(pid, 1, INT64_MAX, &p) != 0 || p != (int64_t)getpid()))
		return 0;
	return (uint64_t)v;
}
