/*
 * gateway/admit.c — admission of payments on a reactor (gateway/admit.h).
 */
#define LOG_MODULE "http"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <event2/http.h>

#include "core/log.h"
#include "core/util.h"
#include "gateway/admit.h"
#include "gateway/gateway.h"
#include "gateway/http.h"
#include "gateway/reqctx.h"

/* One payment request waiting for a slot: the request and its route. */
struct admit_wait {
	struct gw_req g; /* first: the request, the reactor, the close watch */
	struct admit_wait *qprev, *qnext;
	admit_handler_fn handler;
	char path[64];
};

static void
unqueue(struct reactor *rx, struct admit_wait *w)
{
	if (w->qprev != NULL)
		w->qprev->qnext = w->qnext;
	else
		rx->wait_head = w->qnext;
	if (w->qnext != NULL)
		w->qnext->qprev = w->qprev;
	else
		rx->wait_tail = w->qprev;
	rx->pay_waiting--;
	atomic_fetch_sub(&rx->gw->metrics.payments_waiting, 1);
}

static void
wait_free(struct gw_req *g, int abandoned)
{
	struct admit_wait *w = (struct admit_wait *)g;
	(void)abandoned; /* nothing of it was started */
	unqueue(g->rx, w);
	free(w);
}

static long long
limit_of(const struct reactor *rx)
{
	return rx->gw->cfg.payments_inflight_max;
}

int
admit_wait(struct reactor *rx, struct evhttp_request *req, const char *path,
           admit_handler_fn handler)
{
	long long max = limit_of(rx);
	struct admit_wait *w;

	if (max <= 0 || rx->admitting || (rx->wait_head == NULL && rx->pay_running < max))
		return 0;
	/* Without memory for the wait it runs now: over the limit by one
	 * rather than refused. */
	if (strlen(path) >= sizeof(w->path) || (w = calloc(1, sizeof(*w))) == NULL)
		return 0;
	memcpy(w->path, path, strlen(path) + 1);
	w->handler = handler;
	gw_req_start(&w->g, rx, req, "waiting payment", wait_free);
	w->qprev = rx->wait_tail;
	if (rx->wait_tail != NULL)
		rx->wait_tail->qnext = w;
	else
		rx->wait_head = w;
	rx->wait_tail = w;
	rx->pay_waiting++;
	atomic_fetch_add(&rx->gw->metrics.payments_waiting, 1);
	atomic_fetch_add(&rx->gw->metrics.payments_waited, 1);
	return 1;
}

void
admit_take(struct reactor *rx)
{
	rx->pay_running++;
	atomic_fetch_add(&rx->gw->metrics.payments_running, 1);
}

void
admit_release(struct reactor *rx)
{
	rx->pay_running--;
	atomic_fetch_sub(&rx->gw->metrics.payments_running, 1);
	/* Not from here: this runs inside the ending payment's callbacks. */
	if (rx->wait_head != NULL && rx->admit_ev != NULL)
		event_active(rx->admit_ev, 0, 0);
}

/* Starts waiting payments, oldest first, while there are free slots. */
static void
admit_cb(evutil_socket_t fd, short what, void *arg)
{
	struct reactor *rx = arg;
	long long max = limit_of(rx);
	(void)fd;
	(void)what;

	while (rx->wait_head != NULL && (max <= 0 || rx->pay_running < max)) {
		struct admit_wait *w = rx->wait_head;
		struct evhttp_request *req = w->g.req;
		admit_handler_fn handler = w->handler;
		char path[sizeof(w->path)];

		memcpy(path, w->path, sizeof(path));
		gw_req_drop(&w->g); /* unqueues and frees w */
		if (req == NULL)
			continue; /* its client went away while it waited */
		log_request_set(http_req_id(rx, req));
		rx->admitting = 1;
		handler(rx, req, path);
		rx->admitting = 0;
		log_request_set(NULL);
	}
}

int
admit_reactor_start(struct reactor *rx)
{
	rx->admit_ev = event_new(rx->base, -1, 0, admit_cb, rx);
	return rx->admit_ev != NULL ? 0 : -1;
}

void
admit_reactor_stop(struct reactor *rx)
{
	/* After gw_req_abandon_all: no request waits any more. */
	if (rx->admit_ev != NULL)
		event_free(rx->admit_ev);
	rx->admit_ev = NULL;
}
