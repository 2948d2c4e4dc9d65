/*
 * processors/breaker.h — a circuit breaker in front of one processor
 * instance, shared by every reactor (atomics, no lock).
 *
 * Closed: new transactions may go to its processor. After `threshold`
 * consecutive failures (5xx, transport errors, timeouts) it opens: new
 * transactions go to the next processor for `open_ms`. Then it is
 * half-open: exactly one transaction (the probe) goes to its processor;
 * success closes the breaker, failure opens it again. A probe that never
 * reports (its transaction ended before the processor call) frees the slot
 * after open_ms.
 *
 * The breaker only ever routes NEW transactions. A transaction whose
 * attempt on a processor has an unknown outcome stays there (in
 * processing, for the reconciler): failing it over could charge twice.
 */
#ifndef FGW_PROCESSORS_BREAKER_H
#define FGW_PROCESSORS_BREAKER_H

#include <stdatomic.h>
#include <stdint.h>

struct proc_breaker {
	int threshold;
	int64_t open_ms;
	atomic_int failures;      /* consecutive */
	atomic_llong open_until;  /* 0: closed; else ms until half-open */
	atomic_llong probe_until; /* half-open: the probe slot is taken until */
	atomic_ullong opened;     /* times it opened (metrics, tests) */
};

void breaker_init(struct proc_breaker *b, int threshold, int64_t open_ms);
/* 1: use this processor (*probe set if this is the half-open probe); 0:
 * try the next one. */
int breaker_route(struct proc_breaker *b, int64_t now, int *probe);
/* The processor answered (ok = 1: it is up, whatever the card's outcome)
 * or failed (ok = 0). */
void breaker_record(struct proc_breaker *b, int ok, int probe, int64_t now);

#endif
