/*
 * core/log.c — formats a line into a stack buffer, scrubs it, and writes it
 * with one write(2) so lines from different threads never interleave.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <ctype.h>

#include "core/card.h"
#include "core/err.h"
#include "core/log.h"

int log_current_level = LOG_LVL_INFO;
static int log_json;
static int log_fd = 2;

static _Thread_local char log_req[LOG_REQUEST_ID_MAX];

static const char *const level_names[] = { "error", "warn", "info", "debug" };

void
log_setup(int level, int json, int fd)
{
	log_current_level = level;
	log_json = json;
	log_fd = fd;
}

void
log_request_set(const char *id)
{
	size_t n = id != NULL ? strlen(id) : 0;
	if (n >= sizeof(log_req))
		n = sizeof(log_req) - 1;
	memcpy(log_req, id != NULL ? id : "", n);
	log_req[n] = '\0';
}

const char *
log_request_get(void)
{
	return log_req;
}

int
log_fd_get(void)
{
	return log_fd;
}

void
log_write_line(int fd, const char *line, size_t len)
{
	ssize_t w = write(fd, line, len);
	(void)w;
}

int
log_level_parse(const char *name, int *level)
{
	for (int i = 0; i < 4; i++) {
		if (strcasecmp(name, level_names[i]) == 0) {
			*level = i;
			return FGW_OK;
		}
	}
	return FGW_ERR_INVALID;
}

void
log_scrub_digits(char *buf)
{
	size_t len = strlen(buf), i = 0, rs, re, n;
	/* The same runs card_find_pan looks at, masked whether or not they
	 * pass Luhn: a log line can afford to lose a long number. */
	while (card_digit_run(buf, len, i, &rs, &re, &n)) {
		if (n >= 13)
			for (size_t k = rs; k < re; k++)
				if (isdigit((unsigned char)buf[k]))
					buf[k] = '#';
		i = re;
	}
}

/* JSON-escape src into dst (bounded). */
static size_t
json_escape(char *dst, size_t cap, const char *src)
{
	size_t o = 0;
	for (; *src != '\0' && o + 7 < cap; src++) {
		unsigned char c = (unsigned char)*src;
		if (c == '"' || c == '\\') {
			dst[o++] = '\\';
			dst[o++] = (char)c;
		} else if (c < 0x20) {
			o += (size_t)snprintf(dst + o, cap - o, "\\u%04x", c);
		} else {
			dst[o++] = (char)c;
		}
	}
	dst[o] = '\0';
	return o;
}

void
log_emit(int level, const char *module, const char *txn_id, const char *fmt, ...)
{
	char msg[2048], line[4608], ts[96], rq[320], rqesc[300];
	struct timespec now;
	struct tm tm;
	va_list ap;
	int n;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_scrub_digits(msg);

	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
	         tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
	         now.tv_nsec / 1000000);
	if (level < 0 || level > 3)
		level = LOG_LVL_ERROR;

	rq[0] = '\0';
	if (log_json) {
		char esc[4200];
		json_escape(esc, sizeof(esc), msg);
		if (log_req[0] != '\0') {
			json_escape(rqesc, sizeof(rqesc), log_req);
			snprintf(rq, sizeof(rq), ",\"req\":\"%s\"", rqesc);
		}
		n = snprintf(
		    line, sizeof(line),
		    "{\"ts\":\"%s\",\"level\":\"%s\",\"module\":\"%s\"%s%s%s%s,\"msg\":\"%s\"}\n",
		    ts, level_names[level], module, rq, txn_id ? ",\"txn\":\"" : "",
		    txn_id ? txn_id : "", txn_id ? "\"" : "", esc);
	} else {
		if (log_req[0] != '\0')
			snprintf(rq, sizeof(rq), " req=%s", log_req);
		n = snprintf(line, sizeof(line), "%s %-5s [%s]%s%s%s %s\n", ts,
		             level_names[level], module, rq, txn_id ? " " : "",
		             txn_id ? txn_id : "", msg);
	}
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(line)) {
		n = (int)sizeof(line) - 1;
		line[n - 1] = '\n';
	}
	ssize_t w = write(log_fd, line, (size_t)n);
	(void)w;
}
