/*
 * gateway/refusals.h — bounds what refused, unauthenticated traffic writes
 * to the append-only audit table.
 *
 * Each refusal (a bad credential, a refused webhook) asks refusals_admit
 * whether it may be audited on its own. Within one window (a fixed period
 * on the monotonic clock) the first `burst` refusals of an event type from
 * one source bucket (IPv4 /24, IPv6 /64) are, up to 4 * burst in all;
 * the rest are only counted. When the window ends, refusals_drain hands
 * out one summary per (event type, bucket) that had refusals counted but
 * not audited, for the caller to write as one audit row. So a flood adds
 * at most 4 * burst + REFUSALS_SLOTS rows per window, whatever its rate.
 *
 * Thread safety: every function may be called from any thread.
 */
#ifndef FGW_GATEWAY_REFUSALS_H
#define FGW_GATEWAY_REFUSALS_H

#include <stddef.h>
#include <stdint.h>

#define REFUSALS_SLOTS 64 /* (event type, bucket) pairs per window */
#define REFUSALS_BUCKET_MAX 64

struct refusals;

struct refusal_summary {
	char event_type[32];
	char bucket[REFUSALS_BUCKET_MAX]; /* "203.0.113.0/24", "2001:db8::/64",
	                                      "other" when the table was full */
	uint64_t suppressed;              /* refusals counted, not audited */
	int64_t window_ms;                /* length of the window they fell in */
};

/* window_ms >= 1; burst may be 0 (everything is summarised). Returns 0,
 * FGW_ERR_INVALID or FGW_ERR_NOMEM. */
int refusals_new(int64_t window_ms, unsigned burst, struct refusals **out);
void refusals_free(struct refusals *rf);

/* One refusal of event_type (at most 31 bytes) from source (an IP address
 * in text, or anything else: bucket "unknown") at monotonic time now_ms.
 * Returns 1 when it should be audited on its own, 0 when it was only
 * counted (and will be in a summary). rf == NULL: always 1. */
int refusals_admit(struct refusals *rf, const char *event_type, const char *source,
                   int64_t now_ms);

/* Ends the window when it is over (or at once with force) and copies up
 * to cap summaries of ended windows into out; returns how many. Summaries
 * that do not fit stay for the next call. */
size_t refusals_drain(struct refusals *rf, int64_t now_ms, int force,
                      struct refusal_summary *out, size_t cap);

/* Refusals counted without their own audit row since start. */
uint64_t refusals_suppressed_total(struct refusals *rf);

/* The bucket of a source address (exposed for tests). */
void refusals_bucket(const char *source, char out[REFUSALS_BUCKET_MAX]);

#endif
