/*
 * gateway/outbox.h — what the two senders of the outbox (webhooks.c on
 * reactor 0, mail.c on its own thread) share: one delivery loop shape and
 * one policy. A round (outbox_round) claims the kind's due rows and starts
 * each one's delivery; when a delivery ends, outbox_settle decides its
 * fate (delivered, retried after an exponential backoff, or given up once
 * the next try would fall past the row's maximum age), counts it, and the
 * kind records that outcome with its audit event. The secret file a sender
 * signs or logs in with is read here too. What stays theirs is the
 * transport (an HTTP POST with a signature, or SMTP through libcurl), the
 * store calls of their table, and when a round runs (a reactor timer while
 * nothing is in flight; the sender thread's poll).
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

/* One attempt at a row, as its sender saw it end. */
struct outbox_attempt {
	int attempts;       /* the row's attempts before this one */
	int64_t created_at; /* the row's creation (ms) */
	int64_t due_at;     /* when it was due: kept when delivered */
	const char *error;  /* NULL or "": delivered */
	int give_up;        /* failed for good now, whatever its age */
};

/* The shared policy applied to an attempt that ended at now: its fate
 * (counted in counters[3]) and, in *next_at, when the row is due again
 * (due_at when delivered). */
enum outbox_fate outbox_settle(const struct outbox_policy *p, atomic_ullong counters[3],
                               const struct outbox_attempt *a, int64_t now,
                               int64_t *next_at);

/* A kind's side of a round: claim takes up to max rows due at now for
 * this instance (a store job under a lease, store/claim.h) into the
 * sender's own batch and, once they are in place — at once, or from the
 * job's callback — the kind calls outbox_claimed; send starts the delivery
 * of row i of that batch; the delivery's end settles it (outbox_settle)
 * and records it in the kind's table. */
struct outbox_sender {
	const char *name; /* for log lines: "outbox", "mail" */
	void *arg;
	int (*claim)(void *arg, int64_t now, int max);
	void (*send)(void *arg, int i);
};

/* Starts one round: the claim of up to max due rows. 0, or the claim's
 * error (logged). */
int outbox_round(const struct outbox_sender *s, int max);
/* The round's claim ended with rc and n rows: starts each delivery, or
 * none when rc failed (logged) or the sender is stopping (the rows are
 * due again once their lease ends). Returns how many it started. */
int outbox_claimed(const struct outbox_sender *s, int rc, int n, int stopping);

/* Reads a sender's secret file (regular, mode 0600 or stricter) into
 * guarded memory: at least min_len bytes, no NUL, and with one_line no CR
 * or LF. 0, or a negative FGW_ERR_* code with why filled (where: path). */
int outbox_read_secret(const char *path, size_t max, size_t min_len, int one_line,
                       struct secbuf **out, struct fgw_why *why);

#endif
