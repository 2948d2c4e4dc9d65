/*
 * processors/breaker.c — the circuit breaker (processors/breaker.h).
 */
#include "processors/breaker.h"

void
breaker_init(struct proc_breaker *b, int threshold, int64_t open_ms)
{
	b->threshold = threshold > 0 ? threshold : 1;
	b->open_ms = open_ms > 0 ? open_ms : 1;
	atomic_init(&b->failures, 0);
	atomic_init(&b->open_until, 0);
	atomic_init(&b->probe_until, 0);
	atomic_init(&b->opened, 0);
}

int
breaker_route(struct proc_breaker *b, int64_t now, int *probe)
{
	long long until = atomic_load(&b->open_until), slot;

	*probe = 0;
	if (until == 0)
		return 1;
	if (now < until)
		return 0;
	/* Half-open: one probe at a time. */
	slot = atomic_load(&b->probe_until);
	if (now >= slot &&
	    atomic_compare_exchange_strong(&b->probe_until, &slot, now + b->open_ms)) {
		*probe = 1;
		return 1;
	}
	return 0;
}

static void
trip(struct proc_breaker *b, int64_t now)
{
	atomic_store(&b->open_until, now + b->open_ms);
	atomic_store(&b->probe_until, 0);
	atomic_fetch_add(&b->opened, 1);
}

void
breaker_record(struct proc_breaker *b, int ok, int probe, int64_t now)
{
	if (ok) {
		atomic_store(&b->failures, 0);
		if (atomic_load(&b->open_until) != 0 && probe) {
			atomic_store(&b->open_until, 0);
			atomic_store(&b->probe_until, 0);
		}
		return;
	}
	if (probe) {
		trip(b, now);
		return;
	}
	if (atomic_fetch_add(&b->failures, 1) + 1 >= b->threshold &&
	    atomic_load(&b->open_until) == 0) {
		atomic_store(&b->failures, 0);
		trip(b, now);
	}
}
