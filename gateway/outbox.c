/*
 * gateway/outbox.c — the delivery policy both outbox senders follow.
 */
#define LOG_MODULE "outbox"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/err.h"
#include "core/log.h"
#include "core/util.h"
#include "crypto/secmem.h"
#include "gateway/outbox.h"

int64_t
outbox_backoff_ms(int64_t base, int done)
{
	int shift = done > 1 ? done - 1 : 0;
	if (shift > 30)
		shift = 30;
	return base << shift;
}

int64_t
outbox_lease_ms(long long timeout_ms)
{
	return 2 * (int64_t)timeout_ms + 5000;
}

enum outbox_fate
outbox_after_failure(const struct outbox_policy *p, int attempts, int64_t created_at,
                     int64_t now, int64_t *next_at)
{
	*next_at = now + outbox_backoff_ms(p->retry_base_ms, attempts + 1);
	return *next_at > created_at + p->max_age_s * 1000 ? OUTBOX_FAILED : OUTBOX_RETRY;
}

void
outbox_count(atomic_ullong counters[3], enum outbox_fate fate)
{
	atomic_fetch_add(&counters[fate], 1);
}

enum outbox_fate
outbox_settle(const struct outbox_policy *p, atomic_ullong counters[3],
              const struct outbox_attempt *a, int64_t now, int64_t *next_at)
{
	enum outbox_fate fate;

	if (a->error == NULL || a->error[0] == '\0') {
		fate = OUTBOX_DELIVERED;
		*next_at = a->due_at;
	} else {
		fate = outbox_after_failure(p, a->attempts, a->created_at, now, next_at);
		if (a->give_up)
			fate = OUTBOX_FAILED;
	}
	outbox_count(counters, fate);
	return fate;
}

int
outbox_round(const struct outbox_sender *s, int max)
{
	int r = s->claim(s->arg, fgw_now_ms(), max);
	if (r != 0)
		log_error("%s: cannot claim due rows: %s", s->name, fgw_strerror(r));
	return r;
}

int
outbox_claimed(const struct outbox_sender *s, int rc, int n, int stopping)
{
	if (rc != 0) {
		log_error("%s: claiming due rows: %s", s->name, fgw_strerror(rc));
		return 0;
	}
	if (stopping)
		return 0;
	for (int i = 0; i < n; i++)
		s->send(s->arg, i);
	return n;
}

int
outbox_read_secret(const char *path, size_t max, size_t min_len, int one_line,
                   struct secbuf **out, struct fgw_why *why)
{
	struct stat sb;
	char *text = NULL;
	size_t len = 0;
	int r;

	if (stat(path, &sb) != 0) {
		fgw_why_set(why, path, 0, 0, "%s", strerror(errno));
		return FGW_ERR_NOT_FOUND;
	}
	if (!S_ISREG(sb.st_mode) || (sb.st_mode & 077) != 0) {
		fgw_why_set(why, path, 0, 0, "must be a regular file with mode 0600 or stricter");
		return FGW_ERR_INVALID;
	}
	if ((r = fgw_read_secret_file(path, max, &text, &len)) != 0) {
		fgw_why_set(why, path, 0, 0, "%s", fgw_strerror(r));
		return r;
	}
	if (len < min_len || memchr(text, '\0', len) != NULL ||
	    (one_line && strpbrk(text, "\r\n") != NULL)) {
		if (one_line)
			fgw_why_set(why, path, 0, 0, "needs one line of text");
		else
			fgw_why_set(why, path, 0, 0, "needs at least %zu bytes of text", min_len);
		r = FGW_ERR_INVALID;
	} else {
		r = secbuf_from(out, text, len);
	}
	fgw_freezero(text, len);
	return r;
}
