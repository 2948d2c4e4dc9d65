/*
 * gateway/refusals.c — per-window counting of refused requests, so that
 * unauthenticated traffic cannot grow the audit table without bound (see
 * refusals.h for the policy).
 *
 * Two small tables under one mutex: `cur` counts the running window,
 * `done` holds the suppressed counts of ended windows until the caller
 * drains them into audit rows. Both are fixed arrays; a source that finds
 * `cur` full is counted in the bucket "other".
 */
#include <arpa/inet.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/util.h"
#include "gateway/refusals.h"

#define DONE_SLOTS (REFUSALS_SLOTS + 8) /* room for a few "other" rows */

struct slot {
	char event_type[32];
	char bucket[REFUSALS_BUCKET_MAX];
	uint64_t admitted;
	uint64_t suppressed;
};

struct refusals {
	pthread_mutex_t lock;
	int64_t window_ms;
	unsigned burst;
	int64_t window_start; /* monotonic ms; 0: no window yet */
	uint64_t admitted;    /* individual rows in this window, all slots */
	struct slot cur[REFUSALS_SLOTS];
	size_t n_cur;
	struct slot done[DONE_SLOTS];
	size_t n_done;
	int64_t done_window_ms;
	atomic_ullong suppressed_total;
};

void
refusals_bucket(const char *source, char out[REFUSALS_BUCKET_MAX])
{
	unsigned char a[16];
	char txt[INET6_ADDRSTRLEN];

	fgw_strlcpy(out, "unknown", REFUSALS_BUCKET_MAX);
	if (source == NULL)
		return;
	if (inet_pton(AF_INET, source, a) == 1) {
		snprintf(out, REFUSALS_BUCKET_MAX, "%u.%u.%u.0/24", a[0], a[1], a[2]);
	} else if (inet_pton(AF_INET6, source, a) == 1) {
		/* One customer network usually holds a whole /64. */
		memset(a + 8, 0, 8);
		if (inet_ntop(AF_INET6, a, txt, sizeof(txt)) != NULL)
			snprintf(out, REFUSALS_BUCKET_MAX, "%s/64", txt);
	}
}

int
refusals_new(int64_t window_ms, unsigned burst, struct refusals **out)
{
	struct refusals *rf;

	*out = NULL;
	if (window_ms < 1)
		return FGW_ERR_INVALID;
	if ((rf = calloc(1, sizeof(*rf))) == NULL)
		return FGW_ERR_NOMEM;
	if (pthread_mutex_init(&rf->lock, NULL) != 0) {
		free(rf);
		return FGW_ERR_INTERNAL;
	}
	rf->window_ms = window_ms;
	rf->burst = burst;
	atomic_init(&rf->suppressed_total, 0);
	*out = rf;
	return FGW_OK;
}

void
refusals_free(struct refusals *rf)
{
	if (rf == NULL)
		return;
	pthread_mutex_destroy(&rf->lock);
	free(rf);
}

static struct slot *
find_slot(struct slot *tab, size_t *n, size_t cap, const char *type, const char *bucket)
{
	for (size_t i = 0; i < *n; i++)
		if (strcmp(tab[i].event_type, type) == 0 && strcmp(tab[i].bucket, bucket) == 0)
			return &tab[i];
	if (*n == cap)
		return NULL;
	memset(&tab[*n], 0, sizeof(tab[*n]));
	fgw_strlcpy(tab[*n].event_type, type, sizeof(tab[*n].event_type));
	fgw_strlcpy(tab[*n].bucket, bucket, sizeof(tab[*n].bucket));
	return &tab[(*n)++];
}

/* Moves the running window's suppressed counts to `done`; lock held. */
static void
end_window(struct refusals *rf)
{
	for (size_t i = 0; i < rf->n_cur; i++) {
		const struct slot *c = &rf->cur[i];
		struct slot *d;
		if (c->suppressed == 0)
			continue;
		/* Keep the last slots for "other": a full table still counts. */
		if (rf->n_done + 8 > DONE_SLOTS ||
		    (d = find_slot(rf->done, &rf->n_done, DONE_SLOTS, c->event_type,
		                   c->bucket)) == NULL)
			d = find_slot(rf->done, &rf->n_done, DONE_SLOTS, c->event_type, "other");
		if (d != NULL)
			d->suppressed += c->suppressed;
	}
	rf->done_window_ms = rf->window_ms;
	rf->n_cur = 0;
	rf->admitted = 0;
	rf->window_start = 0;
}

static void
maybe_end_window(struct refusals *rf, int64_t now_ms)
{
	if (rf->window_start != 0 && now_ms - rf->window_start >= rf->window_ms)
		end_window(rf);
}

int
refusals_admit(struct refusals *rf, const char *event_type, const char *source,
               int64_t now_ms)
{
	char bucket[REFUSALS_BUCKET_MAX];
	struct slot *s;
	int own = 0;

	if (rf == NULL)
		return 1;
	refusals_bucket(source, bucket);
	pthread_mutex_lock(&rf->lock);
	maybe_end_window(rf, now_ms);
	if (rf->window_start == 0)
		rf->window_start = now_ms > 0 ? now_ms : 1;
	/* The last slots are kept for "other" so a full table still counts. */
	s = rf->n_cur + 4 < REFUSALS_SLOTS
	        ? find_slot(rf->cur, &rf->n_cur, REFUSALS_SLOTS, event_type, bucket)
	        : NULL;
	if (s == NULL)
		s = find_slot(rf->cur, &rf->n_cur, REFUSALS_SLOTS, event_type, "other");
	if (s != NULL && s->admitted < rf->burst && rf->admitted < 4ULL * rf->burst) {
		s->admitted++;
		rf->admitted++;
		own = 1;
	} else {
		if (s != NULL)
			s->suppressed++;
		atomic_fetch_add(&rf->suppressed_total, 1);
	}
	pthread_mutex_unlock(&rf->lock);
	return own;
}

size_t
refusals_drain(struct refusals *rf, int64_t now_ms, int force,
               struct refusal_summary *out, size_t cap)
{
	size_t n = 0;

	if (rf == NULL)
		return 0;
	pthread_mutex_lock(&rf->lock);
	if (force && rf->window_start != 0)
		end_window(rf);
	else
		maybe_end_window(rf, now_ms);
	while (n < cap && n < rf->n_done) {
		struct refusal_summary *o = &out[n];
		const struct slot *d = &rf->done[n];
		fgw_strlcpy(o->event_type, d->event_type, sizeof(o->event_type));
		fgw_strlcpy(o->bucket, d->bucket, sizeof(o->bucket));
		o->suppressed = d->suppressed;
		o->window_ms = rf->done_window_ms;
		n++;
	}
	memmove(rf->done, rf->done + n, (rf->n_done - n) * sizeof(rf->done[0]));
	rf->n_done -= n;
	pthread_mutex_unlock(&rf->lock);
	return n;
}

uint64_t
refusals_suppressed_total(struct refusals *rf)
{
	return rf == NULL ? 0 : atomic_load(&rf->suppressed_total);
}
