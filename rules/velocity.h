/*
 * rules/velocity.h — sliding-window counters for the rules engine.
 *
 * One store is shared by every reactor thread: it is sharded, each shard
 * behind its own mutex. Per key (a dimension plus a string such as a card
 * fingerprint or an IP) it keeps the recent events, sorted by time, with
 * their amount and whether they were declined. Memory is bounded three
 * ways: events older than the retention are pruned, a key keeps at most
 * max_events_per_key events (the oldest go first), and the store holds at
 * most max_keys keys and max_events events (least recently recorded keys
 * are evicted first).
 *
 * Events may be recorded in any time order (the gateway replays recent
 * transactions from the database at start): each key's events stay sorted.
 *
 * A window of W ms at time NOW holds the events with ts > NOW - W, so an
 * event exactly W ms old is outside. Events stamped after NOW (another
 * thread read the clock a moment later) are inside.
 */
#ifndef FGW_RULES_VELOCITY_H
#define FGW_RULES_VELOCITY_H

#include <stddef.h>
#include <stdint.h>

enum velocity_dim {
	VELOCITY_CARD = 0, /* card fingerprint */
	VELOCITY_CUSTOMER, /* customer id, or the e-mail when there is none */
	VELOCITY_IP,       /* IPv4 address, or the IPv6 /64 */
	VELOCITY_EMAIL,    /* e-mail, lower-cased */
	VELOCITY_NDIMS
};

struct velocity;

struct velocity_opts {
	int64_t retention_ms;        /* 0: 24 h; only grows afterwards */
	uint32_t max_events_per_key; /* 0: 512 */
	size_t max_keys;             /* 0: 200000 */
	size_t max_events;           /* 0: 1000000 */
};

struct velocity_stats {
	int64_t count;    /* attempts in the window */
	int64_t sum;      /* their amounts, minor units, saturating */
	int64_t declines; /* declines in the window */
};

/* Longest key kept; longer keys are cut to this many bytes. */
#define VELOCITY_KEY_MAX 256

/* Creates a store (opts may be NULL). 0 or FGW_ERR_NOMEM/INVALID/IO. */
int velocity_new(const struct velocity_opts *opts, struct velocity **out);
void velocity_free(struct velocity *v);

/* Records one attempt of amount (>= 0) at ts_ms; declined: it was
 * declined. Events older than the retention, measured from the key's
 * newest event, are ignored. 0 or FGW_ERR_INVALID/NOMEM. */
int velocity_record(struct velocity *v, enum velocity_dim dim, const char *key,
                    int64_t ts_ms, int64_t amount, int declined);
/* Marks the attempt recorded at ts_ms as declined (the processor said no
 * after the attempt was recorded); records a decline-only event when no
 * such attempt is held. 0 or FGW_ERR_INVALID/NOMEM. */
int velocity_mark_declined(struct velocity *v, enum velocity_dim dim, const char *key,
                           int64_t ts_ms);
/* Attempts, amounts and declines of key in (now_ms - window_ms, +inf).
 * An unknown key gives zeros. 0 or FGW_ERR_INVALID. */
int velocity_query(struct velocity *v, enum velocity_dim dim, const char *key,
                   int64_t now_ms, int64_t window_ms, struct velocity_stats *out);

/* The same for n windows at once (window_ms ascending), under one lock
 * and in one pass over the key's events: out[i] is for windows_ms[i]. */
int velocity_query_windows(struct velocity *v, enum velocity_dim dim, const char *key,
                           int64_t now_ms, const int64_t *windows_ms, size_t n,
                           struct velocity_stats *out);

/* Raises the retention to at least ms (never lowers it). Call it with
 * rules_max_window_ms() before replaying history; rules_eval also does. */
void velocity_ensure_retention(struct velocity *v, int64_t ms);
int64_t velocity_retention_ms(const struct velocity *v);
/* Keys and events held now (for metrics and tests). */
void velocity_usage(struct velocity *v, size_t *keys, size_t *events);
/* "card", "customer", "ip", "email". */
const char *velocity_dim_name(enum velocity_dim dim);

#endif
