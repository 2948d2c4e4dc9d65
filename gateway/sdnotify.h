/*
 * gateway/sdnotify.h — systemd's service notification protocol
 * (sd_notify(3)) without libsystemd: one datagram a state change to the
 * AF_UNIX socket named by $NOTIFY_SOCKET, and the watchdog interval from
 * $WATCHDOG_USEC.
 */
#ifndef FGW_GATEWAY_SDNOTIFY_H
#define FGW_GATEWAY_SDNOTIFY_H

#include <stdint.h>

/* Sends state ("READY=1", "WATCHDOG=1", "STOPPING=1", "STATUS=…", lines
 * joined by '\n'). Returns 0 when sent, 1 when not under a service manager
 * ($NOTIFY_SOCKET unset), or a negative FGW_ERR_* code. */
int sdnotify(const char *state);

/* The watchdog interval in microseconds asked for by the service manager,
 * or 0 when none is (or it is meant for another process: $WATCHDOG_PID). */
uint64_t sdnotify_watchdog_usec(void);

#endif
