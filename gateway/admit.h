/*
 * gateway/admit.h — admission of payments on a reactor.
 *
 * At most payments_inflight_max payments run at once per reactor (parsed,
 * in the pipeline). A payment request over the limit waits, unparsed, in
 * a small context (struct gw_req, so the client going away and a forced
 * stop are handled as for any request in flight) and runs, in arrival
 * order, when a running payment ends. A burst on many connections then
 * costs what evhttp already read plus a few hundred bytes per waiting
 * request, instead of a parsed request, a transaction and its store jobs
 * each (docs/performance.md, RSS with 10,000 connections).
 */
#ifndef FGW_GATEWAY_ADMIT_H
#define FGW_GATEWAY_ADMIT_H

struct reactor;
struct evhttp_request;

typedef void (*admit_handler_fn)(struct reactor *rx, struct evhttp_request *req,
                                 const char *path);

/* Called by a payment route once the request passed its cheap checks
 * (credentials, headers) and before it parses. Returns 1 when req now
 * waits (the handler is called again with it later, from the event
 * loop); 0 when it may run now. */
int admit_wait(struct reactor *rx, struct evhttp_request *req, const char *path,
               admit_handler_fn handler);
/* A payment starts running (counted against the limit) ... */
void admit_take(struct reactor *rx);
/* ... and ends: the next waiting one is started from the event loop. */
void admit_release(struct reactor *rx);

int admit_reactor_start(struct reactor *rx);
void admit_reactor_stop(struct reactor *rx);

#endif
