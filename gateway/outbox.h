/*
 * gateway/outbox.h — what the two senders of the outbox (webhooks.c on
 * reactor 0, mail.c on its own thread) share: the fate of one attempt
 * (delivered, retried after an exponential backoff, or given up once the
 * next try would fall past the row's maximum age), its metric, and the
 * secret file a sender signs or logs in with. What stays theirs is the
 * transport: an HTTP POST with a signature, or SMTP through libcurl.
 */
#ifndef FGW_GATEWAY_OUTBOX_H
#define FGW_GATEWAY_OUTBOX_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct fgw_why;
struct secbuf;

/* Indexes into a sender's three attempt counters (gateway.h metrics). */
enum outbox_fate { OUTBOX_DELIVERED = 0, OUTBOX_RETRY = 1, OUTBOX_FAILED = 2 };

struct outbox_policy {
	long long retry_base_ms; /* the first retry's delay */
	long long max_age_s;     /* after the row was created: given up */
};

/* How long a sender's claim on its rows (store/claim.h) lasts, for a
 * delivery timeout of timeout_ms: twice that and 5 s, time to record the
 * answer too. Another instance sends a row again only after this, when
 * the sender died (or stalled) with it. */
int64_t outbox_lease_ms(long long timeout_ms);

/* Delay before attempt number done + 1: base * 2^(done - 1), capped. */
int64_t outbox_backoff_ms(int64_t base, int done);

/* The fate of an attempt that failed: attempts is how many the row had
 * before this one, created_at its creation (ms). *next_at receives when to
 * try again; the fate is OUTBOX_FAILED when that falls past the maximum
 * age, else OUTBOX_RETRY. */
enum outbox_fate outbox_after_failure(const struct outbox_policy *p, int attempts,
                                      int64_t created_at, int64_t now, int64_t *next_at);

/* Counts one attempt's fate in a sender's counters[3]. */
void outbox_count(atomic_ullong counters[3], enum outbox_fate fate);

/* Reads a sender's secret file (regular, mode 0600 or stricter) into
 * guarded memory: at least min_len bytes, no NUL, and with one_line no CR
 * or LF. 0, or a negative FGW_ERR_* code with why filled (where: path). */
int outbox_read_secret(const char *path, size_t max, size_t min_len, int one_line,
                       struct secbuf **out, struct fgw_why *why);

#endif
