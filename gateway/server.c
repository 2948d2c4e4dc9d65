/*
 * gateway/server.c — reactor threads.
 *
 * Everything a reactor needs is built on the main thread (so start-up
 * errors are reported before anything runs), then each reactor thread
 * only runs its event loop. Every reactor has its own listening socket on
 * the same address (SO_REUSEPORT: the kernel spreads connections).
 * Stopping: the main thread activates each reactor's stop event; the
 * reactor closes its listener, answers new requests on open connections
 * with 503, and leaves its loop once its transactions are finished or the
 * shutdown timeout has passed.
 */
#define LOG_MODULE "server"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>

#include "core/err.h"
#include "core/log.h"
#include "core/util.h"
#include "gateway/admit.h"
#include "gateway/edge.h"
#include "gateway/gateway.h"
#include "gateway/http.h"
#include "gateway/reqctx.h"
#include "gateway/resv.h"
#include "gateway/startup.h"
#include "pipeline/reconcile.h"
#include "processors/httpc.h"
#include "store/store.h"

/* The reactor whose thread this is (accept errors arrive without it). */
static _Thread_local struct reactor *this_rx;

static int
split_listen(const char *listen, char *host, size_t hostlen, char *port, size_t portlen)
{
	const char *colon;
	if (listen[0] == '[') {
		const char *end = strchr(listen, ']');
		if (end == NULL || end[1] != ':')
			return FGW_ERR_INVALID;
		if ((size_t)(end - listen - 1) >= hostlen)
			return FGW_ERR_INVALID;
		memcpy(host, listen + 1, (size_t)(end - listen - 1));
		host[end - listen - 1] = '\0';
		colon = end + 1;
	} else {
		colon = strrchr(listen, ':');
		if (colon == NULL || (size_t)(colon - listen) >= hostlen)
			return FGW_ERR_INVALID;
		memcpy(host, listen, (size_t)(colon - listen));
		host[colon - listen] = '\0';
	}
	return fgw_strlcpy(port, colon + 1, portlen) == 0 && port[0] ? FGW_OK
	                                                             : FGW_ERR_INVALID;
}

/* A listening socket on listen_addr; with share, one that other sockets
 * of this process may bind too (SO_REUSEPORT: one per reactor). */
/* listen_addr as an address to bind (*ai: freeaddrinfo it). */
static int
resolve_listen(const char *listen_addr, struct addrinfo **ai, struct fgw_why *why)
{
	char host[128], port[16];
	struct addrinfo hints;
	int r;

	*ai = NULL;
	if (split_listen(listen_addr, host, sizeof(host), port, sizeof(port)) != 0) {
		fgw_why_set(why, "listen", 0, 0, "'%s' is not HOST:PORT", listen_addr);
		return FGW_ERR_INVALID;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	if ((r = getaddrinfo(host[0] ? host : NULL, port, &hints, ai)) != 0) {
		fgw_why_set(why, "listen", 0, 0, "%s: %s", listen_addr, gai_strerror(r));
		*ai = NULL;
		return FGW_ERR_INVALID;
	}
	return FGW_OK;
}

int
server_listen_check(const char *listen_addr, struct fgw_why *why)
{
	struct addrinfo *ai = NULL;
	int r = resolve_listen(listen_addr, &ai, why);
	if (ai != NULL)
		freeaddrinfo(ai);
	return r;
}

static int
make_listener(const char *listen_addr, int share, evutil_socket_t *out,
              struct fgw_why *why)
{
	struct addrinfo *ai = NULL;
	int fd = -1, one = 1, r;

	if ((r = resolve_listen(listen_addr, &ai, why)) != 0)
		return r;
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
	    (share && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) ||
	    bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 1024) != 0) {
		fgw_why_set(why, "listen", 0, 0, "%s: %s", listen_addr, strerror(errno));
		if (fd >= 0)
			close(fd);
		freeaddrinfo(ai);
		return FGW_ERR_IO;
	}
	freeaddrinfo(ai);
	*out = fd;
	return FGW_OK;
}

static void
drain_check(evutil_socket_t fd, short what, void *arg)
{
	struct reactor *rx = arg;
	int busy = rx->inflight;
	(void)fd;
	(void)what;
	for (int i = 0; i < PROC_INSTANCES_MAX; i++)
		if (rx->proc_httpc[i] != NULL)
			busy += httpc_inflight(rx->proc_httpc[i]);
	if (busy == 0) {
		event_base_loopexit(rx->base, NULL);
		return;
	}
	if (fgw_mono_ms() >= rx->drain_deadline) {
		log_warn("reactor %d: shutdown timeout with %d transactions in flight", rx->idx,
		         rx->inflight);
		event_base_loopexit(rx->base, NULL);
	}
}

static void
stop_cb(evutil_socket_t fd, short what, void *arg)
{
	struct reactor *rx = arg;
	struct timeval tv = { 0, 20000 };
	(void)fd;
	(void)what;
	if (rx->draining)
		return;
	rx->draining = 1;
	if (rx->bound != NULL) {
		evhttp_del_accept_socket(rx->http, rx->bound);
		rx->bound = NULL;
	}
	rx->drain_deadline = fgw_mono_ms() + rx->gw->cfg.shutdown_timeout_ms;
	rx->drain_ev = event_new(rx->base, -1, EV_PERSIST, drain_check, rx);
	if (rx->drain_ev == NULL || event_add(rx->drain_ev, &tv) != 0)
		event_base_loopexit(rx->base, NULL);
	else
		drain_check(-1, 0, rx);
}

static void *
reactor_main(void *arg)
{
	struct reactor *rx = arg;
	this_rx = rx;
	event_base_dispatch(rx->base);
	return NULL;
}

/* Each processor's own client: its TLS settings, timeouts and connection
 * limit (0 in a setting: the processor_* default). */
static int
processor_clients(const struct fgw_config *cfg, struct reactor *rx)
{
	struct httpc_opts o;
	int r;

	for (int i = 0; i < cfg->n_procs; i++) {
		const struct proc_settings *s = &cfg->procs[i];
		memset(&o, 0, sizeof(o));
		o.connect_timeout_ms = s->connect_timeout_ms > 0
		                           ? s->connect_timeout_ms
		                           : cfg->processor_connect_timeout_ms;
		o.max_conns_per_host = s->max_conns > 0 ? s->max_conns : cfg->processor_max_conns;
		o.ca_file = s->ca_file[0] ? s->ca_file : NULL;
		o.verify_tls = (int)s->verify_tls;
		o.client_cert = s->client_cert[0] ? s->client_cert : NULL;
		o.client_key = s->client_key[0] ? s->client_key : NULL;
		if ((r = httpc_new(rx->base, &o, &rx->proc_httpc[i])) != 0)
			return r;
	}
	rx->httpc = rx->proc_httpc[0];
	return FGW_OK;
}

#define ACCEPT_PAUSE_MS 200 /* listener off after EMFILE and the like */
#define ACCEPT_LOG_MS 5000  /* at most one log line per interval */

static void
accept_resume(evutil_socket_t fd, short what, void *arg)
{
	struct reactor *rx = arg;
	(void)fd;
	(void)what;
	if (rx->bound != NULL && !rx->draining)
		evconnlistener_enable(evhttp_bound_socket_get_listener(rx->bound));
}

/* accept() failed (out of descriptors, buffers or memory). libevent
 * would log and retry at once, forever, spinning the loop; instead stop
 * accepting for a moment while open connections are served, and log
 * the failures once per interval. */
static void
accept_error(struct evconnlistener *lev, void *arg)
{
	struct reactor *rx = this_rx;
	int err = EVUTIL_SOCKET_ERROR();
	struct timeval tv = { 0, ACCEPT_PAUSE_MS * 1000 };
	int64_t now = fgw_mono_ms();
	(void)arg;

	evconnlistener_disable(lev);
	if (rx == NULL)
		return;
	rx->accept_errors++;
	if (rx->accept_logged == 0 || now - rx->accept_logged >= ACCEPT_LOG_MS) {
		log_warn("reactor %d: accept: %s (%lu failures); pausing new connections",
		         rx->idx, evutil_socket_error_to_string(err), rx->accept_errors);
		rx->accept_errors = 0;
		rx->accept_logged = now;
	}
	if (rx->accept_ev == NULL || event_add(rx->accept_ev, &tv) != 0)
		evconnlistener_enable(lev);
}

static int
reactor_init(struct gateway *gw, struct reactor *rx, struct fgw_why *why)
{
	const struct fgw_config *cfg = &gw->cfg;
	evutil_socket_t fd = -1;
	struct timeval tv;
	int r;

	rx->gw = gw;
	if ((rx->base = event_base_new()) == NULL ||
	    (rx->http = evhttp_new(rx->base)) == NULL) {
		fgw_why_set(why, NULL, 0, 0, "cannot create the event loop");
		return FGW_ERR_NOMEM;
	}
	/* libevent refuses bodies beyond this with its own (HTML) 413; up to
	 * it we read the body and refuse anything over max_body_bytes with a
	 * JSON error, so clients almost always get our error shape. */
	evhttp_set_max_body_size(rx->http, (ev_ssize_t)cfg->max_body_bytes * 4);
	evhttp_set_max_headers_size(rx->http, (ev_ssize_t)cfg->max_header_bytes);
	tv.tv_sec = cfg->read_timeout_ms / 1000;
	tv.tv_usec = (cfg->read_timeout_ms % 1000) * 1000;
	/* libevent 2.1 has one timeout for reading a request and writing its
	 * answer. */
	evhttp_set_timeout_tv(rx->http, &tv);
	/* Every method reaches routes_handle, which answers the ones a
	 * route does not take with a JSON 405 and an Allow header, and
	 * methods it does not know with a JSON 501: evhttp's own refusal is
	 * an HTML 501. libevent 2.1 gives a method it does not know the
	 * type 1 << 15 (EVHTTP_REQ_UNKNOWN_, not in its public header). */
	evhttp_set_allowed_methods(rx->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST |
	                                         EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
	                                         EVHTTP_REQ_HEAD | EVHTTP_REQ_OPTIONS |
	                                         EVHTTP_REQ_TRACE | EVHTTP_REQ_CONNECT |
	                                         EVHTTP_REQ_PATCH | (1 << 15));
	evhttp_set_default_content_type(rx->http, "application/json");
	evhttp_set_gencb(rx->http, routes_handle, rx);
	/* Every connection goes through the edge scanner (TLS or not). */
	evhttp_set_bevcb(rx->http, edge_bevcb, rx);
	if (edge_reactor_start(rx) != 0 || reqlog_reactor_start(rx) != 0 ||
	    admit_reactor_start(rx) != 0 ||
	    (rx->accept_ev = evtimer_new(rx->base, accept_resume, rx)) == NULL) {
		fgw_why_set(why, NULL, 0, 0, "cannot create the event loop");
		return FGW_ERR_NOMEM;
	}
	if ((r = make_listener(cfg->listen, 1, &fd, why)) != 0)
		return r;
	if ((rx->bound = evhttp_accept_socket_with_handle(rx->http, fd)) == NULL) {
		close(fd);
		fgw_why_set(why, NULL, 0, 0, "cannot accept on %s", cfg->listen);
		return FGW_ERR_IO;
	}
	evconnlistener_set_error_cb(evhttp_bound_socket_get_listener(rx->bound),
	                            accept_error);
	if ((r = processor_clients(cfg, rx)) != 0 ||
	    (r = store_waker_new(gw->store, rx->base, &rx->waker)) != 0 ||
	    (r = store_reader_open(gw->store, &rx->reader)) != 0) {
		fgw_why_set(why, NULL, 0, 0, "reactor %d: %s", rx->idx, fgw_strerror(r));
		return r;
	}
	if ((rx->stop_ev = event_new(rx->base, -1, 0, stop_cb, rx)) == NULL ||
	    resv_reactor_start(rx) != 0)
		return FGW_ERR_NOMEM;
	rx->env.base = rx->base;
	rx->env.procs = gw->procs;
	rx->env.n_procs = gw->n_procs;
	rx->env.proc_httpc = rx->proc_httpc;
	rx->env.store = gw->store;
	rx->env.waker = rx->waker;
	rx->env.kr = gw->kr;
	rx->env.pl = &gw->pl;
	rx->env.limits.max_amount = cfg->max_amount;
	rx->env.limits.currencies = cfg->currencies;
	rx->env.limits.sealed.max_age_ms = cfg->encrypted_card_max_age_s * 1000;
	rx->env.limits.sealed.max_skew_ms = cfg->encrypted_card_max_skew_s * 1000;
	rx->env.limits.sealed.require_iat = cfg->encrypted_card_require_iat != 0;
	rx->env.idem_ttl_ms = cfg->idempotency_ttl_s * 1000;
	rx->env.reader = rx->reader;
	rx->env.vault_onetime_ttl_ms = cfg->vault_onetime_ttl_s * 1000;
	rx->env.risk = gw->risk.up ? &gw->risk : NULL;
	rx->env.reader = rx->reader;
	rx->env.routes = cfg->routes.n > 0 ? &cfg->routes : NULL;
	if (rx->idx == 0) {
		/* One reconciler is enough (it asks the processor, cheaply) and
		 * keeps two reactors from asking about the same row. */
		/* A row may only be decided once no request of its attempt can
		 * still be on its way, on either processor. */
		/* startup_timing refused a grace that is not longer. */
		long long longest_timeout = startup_longest_timeout(gw);
		struct reconciler_opts ro = {
			.interval_ms = cfg->reconcile_interval_ms,
			.grace_ms = cfg->reconcile_grace_ms > 0 ? cfg->reconcile_grace_ms
			                                        : longest_timeout + 5000,
			.not_found_settle_ms = cfg->reconcile_not_found_settle_ms,
			.max_attempts = (int)cfg->reconcile_max_attempts,
			.backoff_max_ms = cfg->reconcile_backoff_max_ms,
			.concurrency = (int)cfg->reconcile_concurrency,
			.action_expiry_ms = cfg->reconcile_3ds_expiry_ms,
			.call_ms = longest_timeout,
		};
		if ((r = reconciler_start(&rx->env, &ro, &rx->recon)) != 0) {
			fgw_why_set(why, NULL, 0, 0, "reconciler: %s", fgw_strerror(r));
			return r;
		}
	}
	return FGW_OK;
}

static void
reactor_cleanup(struct reactor *rx)
{
	/* Reads still running on the store's threads point into requests
	 * about to be freed: wait for them, drop the ones not started. */
	if (rx->waker != NULL)
		store_read_cancel(rx->gw->store, rx->waker);
	gw_req_abandon_all(rx);
	admit_reactor_stop(rx);
	resv_reactor_stop(rx);
	if (rx->http != NULL)
		evhttp_free(rx->http);
	edge_reactor_stop(rx);
	reqlog_reactor_stop(rx);
	if (rx->accept_ev != NULL)
		event_free(rx->accept_ev);
	for (int i = 0; i < PROC_INSTANCES_MAX; i++)
		if (rx->proc_httpc[i] != NULL)
			httpc_free(rx->proc_httpc[i]);
	rx->httpc = NULL;
	if (rx->reader != NULL)
		store_reader_close(rx->reader);
	if (rx->waker != NULL)
		store_waker_free(rx->waker);
	reconciler_free(rx->recon);
	if (rx->stop_ev != NULL)
		event_free(rx->stop_ev);
	if (rx->drain_ev != NULL)
		event_free(rx->drain_ev);
	if (rx->base != NULL)
		event_base_free(rx->base);
	memset(rx, 0, sizeof(*rx));
}

static int
open_access_log(const char *path)
{
	return open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
}

/* Put in place of the old descriptor with dup3 (atomic), like log_file:
 * a line being written goes whole to one file or the other. */
void
server_reopen_access_log(struct gateway *gw)
{
	int fd;
	if (gw->access_mode != ACCESS_LOG_FILE || gw->access_fd < 0)
		return;
	if ((fd = open_access_log(gw->cfg.access_log)) < 0 ||
	    dup3(fd, gw->access_fd, O_CLOEXEC) < 0)
		log_error("SIGUSR1: cannot reopen access_log %s; logging on to the old file",
		          gw->cfg.access_log);
	if (fd >= 0)
		close(fd);
}

static int
setup_access_log(struct gateway *gw, struct fgw_why *why)
{
	const char *a = gw->cfg.access_log;
	gw->access_fd = -1;
	if (strcmp(a, "on") == 0 || a[0] == '\0') {
		gw->access_mode = ACCESS_LOG_MAIN;
	} else if (strcmp(a, "off") == 0) {
		gw->access_mode = ACCESS_LOG_OFF;
	} else {
		gw->access_mode = ACCESS_LOG_FILE;
		if ((gw->access_fd = open_access_log(a)) < 0) {
			fgw_why_set(why, "access_log", 0, 0, "%s: %s", a, strerror(errno));
			return FGW_ERR_IO;
		}
	}
	return FGW_OK;
}

/* Stops the first running reactors (their threads run), then frees every
 * reactor and closes the access log: the end of a start that failed part
 * way and of a stop alike. */
static void
reactors_end(struct gateway *gw, int running)
{
	for (int i = 0; i < running; i++)
		event_active(gw->rx[i].stop_ev, EV_TIMEOUT, 0);
	for (int i = 0; i < running; i++)
		pthread_join(gw->rx[i].thread, NULL);
	for (int i = 0; i < gw->n_rx; i++)
		reactor_cleanup(&gw->rx[i]);
	free(gw->rx);
	gw->rx = NULL;
	if (gw->access_fd >= 0)
		close(gw->access_fd);
	gw->access_fd = -1;
}


int
server_start(struct gateway *gw, struct fgw_why *why)
{
	evutil_socket_t probe;
	int r, started = 0;

	if ((r = setup_access_log(gw, why)) != 0)
		return r;
	/* Through SO_REUSEPORT another flairgw of the same user listening on
	 * this address would silently share its traffic with us. A socket
	 * without it binds only where nobody listens: refuse if it cannot. */
	if ((r = make_listener(gw->cfg.listen, 0, &probe, why)) != 0) {
		size_t n = strlen(why->msg);
		snprintf(why->msg + n, sizeof(why->msg) - n, " (is another process serving it?)");
		return r;
	}
	evutil_closesocket(probe);
	if ((gw->rx = calloc((size_t)gw->n_rx, sizeof(*gw->rx))) == NULL)
		return FGW_ERR_NOMEM;
	for (int i = 0; i < gw->n_rx; i++) {
		gw->rx[i].idx = i;
		if ((r = reactor_init(gw, &gw->rx[i], why)) != 0)
			goto fail;
	}
	for (int i = 0; i < gw->n_rx; i++) {
		if (pthread_create(&gw->rx[i].thread, NULL, reactor_main, &gw->rx[i]) != 0) {
			fgw_why_set(why, NULL, 0, 0, "cannot start reactor thread");
			r = FGW_ERR_INTERNAL;
			goto fail;
		}
		started++;
	}
	return FGW_OK;
fail:
	reactors_end(gw, started);
	return r;
}

void
server_stop(struct gateway *gw)
{
	if (gw->rx == NULL)
		return;
	atomic_store(&gw->stopping, 1);
	reactors_end(gw, gw->n_rx);
}
