/*
 * gateway/reqlog.c — request ids and the access log.
 *
 * Every request gets a record when it is dispatched: its id (the client's
 * X-Request-Id when acceptable, else a fresh one), method, route pattern,
 * peer and start time. The answer fills in status, bytes and transaction
 * id; the line is written once the reply has gone out (evhttp's
 * on-complete callback). evhttp calls nothing when a client vanishes: a
 * request answered to a connection already gone is freed at once, one
 * whose connection dies while its reply is written or before it is
 * answered is freed with the connection. Each record therefore holds a
 * reference to its connection's bufferevent, and a sweep writes the line
 * of every record whose connection evhttp has released (status 499 when
 * it was never answered, as nginx does). Every record ends in exactly one
 * line and is freed then.
 *
 * The line never holds a header value or body: the route is the pattern
 * (ids in a path stay out), the id was checked to hold no card number.
 */
#define LOG_MODULE "access"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <sodium.h>

#include "core/card.h"
#include "core/err.h"
#include "core/log.h"
#include "core/util.h"
#include "gateway/http.h"

struct http_req {
	struct http_req *prev, *next;
	struct reactor *rx;
	struct evhttp_request *req; /* NULL once evhttp may have freed it */
	struct bufferevent *bev;    /* one reference, or NULL */
	int64_t start_mono;
	int status; /* 0: not answered */
	size_t bytes;
	char id[HTTP_REQUEST_ID_MAX + 1];
	char method[8];
	char route[64];
	char client[64];
	char txn[40];
};

#define SWEEP_MS 200

int
http_request_id_valid(const char *id)
{
	size_t n = strlen(id), ps, pe;
	if (n == 0 || n > HTTP_REQUEST_ID_MAX)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (id[i] < 0x21 || id[i] > 0x7e || id[i] == '"' || id[i] == '\\')
			return 0;
	/* It goes on every log line and into error bodies. */
	return !card_find_pan(id, n, &ps, &pe);
}

static struct http_req *
find(struct reactor *rx, struct evhttp_request *req)
{
	for (struct http_req *r = rx->reqs; r != NULL; r = r->next)
		if (r->req == req)
			return r;
	return NULL;
}

static void
json_str(char *out, size_t cap, const char *s)
{
	/* Only values we produced or checked: escape the two that matter. */
	size_t o = 0;
	for (; *s && o + 3 < cap; s++) {
		if (*s == '"' || *s == '\\')
			out[o++] = '\\';
		out[o++] = (unsigned char)*s < 0x20 ? '?' : *s;
	}
	out[o] = '\0';
}

static void
write_line(struct http_req *r, int gone)
{
	struct gateway *gw = r->rx->gw;
	char line[1024], ts[96], client[140], route[140];
	struct timespec now;
	struct tm tm;
	long long ms = (long long)(fgw_mono_ms() - r->start_mono);
	int fd = gw->access_mode == ACCESS_LOG_FILE ? gw->access_fd : log_fd_get();
	int status = r->status != 0 ? r->status : 499;
	int n;

	if (gw->access_mode == ACCESS_LOG_OFF || fd < 0)
		return;
	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
	         tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
	         now.tv_nsec / 1000000);
	if (strcmp(gw->cfg.log_format, "json") == 0) {
		json_str(client, sizeof(client), r->client);
		json_str(route, sizeof(route), r->route);
		n = snprintf(
		    line, sizeof(line),
		    "{\"ts\":\"%s\",\"level\":\"info\",\"module\":\"access\","
		    "\"requestId\":\"%s\",\"client\":\"%s\",\"method\":\"%s\","
		    "\"route\":\"%s\",\"status\":%d,\"bytes\":%zu,\"latencyMs\":%lld%s%s%s%s}\n",
		    ts, r->id, client, r->method, route, status, r->bytes, ms,
		    r->txn[0] ? ",\"transactionId\":\"" : "", r->txn, r->txn[0] ? "\"" : "",
		    gone ? ",\"clientGone\":true" : "");
	} else {
		n = snprintf(line, sizeof(line),
		             "%s info  [access] req=%s %s %s %s %d %zu %lldms%s%s%s\n", ts, r->id,
		             r->client[0] ? r->client : "-", r->method, r->route, status,
		             r->bytes, ms, r->txn[0] ? " txn=" : "", r->txn,
		             gone ? " client-gone" : "");
	}
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(line)) {
		n = (int)sizeof(line) - 1;
		line[n - 1] = '\n';
	}
	log_write_line(fd, line, (size_t)n);
}

static void
finish(struct http_req *r, int gone)
{
	struct reactor *rx = r->rx;
	write_line(r, gone);
	if (r->prev != NULL)
		r->prev->next = r->next;
	else
		rx->reqs = r->next;
	if (r->next != NULL)
		r->next->prev = r->prev;
	if (r->bev != NULL)
		bufferevent_decref(r->bev);
	free(r);
}

static void
on_complete(struct evhttp_request *req, void *arg)
{
	struct http_req *r = arg;
	(void)req;
	finish(r, 0);
}

/* evhttp frees a connection's bufferevent with bufferevent_free, which
 * clears its callbacks; our reference keeps the object readable. */
static int
conn_released(const struct http_req *r)
{
	bufferevent_event_cb ecb = NULL;
	if (r->bev == NULL)
		return 0;
	bufferevent_getcb(r->bev, NULL, NULL, &ecb, NULL);
	return ecb == NULL;
}

static void
sweep_cb(evutil_socket_t fd, short what, void *arg)
{
	struct reactor *rx = arg;
	struct http_req *r, *next;
	(void)fd;
	(void)what;
	for (r = rx->reqs; r != NULL; r = next) {
		next = r->next;
		if (conn_released(r))
			finish(r, 1);
	}
}

void
http_req_begin(struct reactor *rx, struct evhttp_request *req, const char *route)
{
	struct http_req *r = calloc(1, sizeof(*r));
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	const char *given = evhttp_find_header(evhttp_request_get_input_headers(req),
	                                       "X-Request-Id");
	unsigned char rnd[12];
	char hex[sizeof(rnd) * 2 + 1], id[8 + sizeof(hex)];

	if (given != NULL && http_request_id_valid(given)) {
		log_request_set(given);
	} else {
		randombytes_buf(rnd, sizeof(rnd));
		fgw_hex(rnd, sizeof(rnd), hex);
		snprintf(id, sizeof(id), "req_%s", hex);
		log_request_set(id);
	}
	evhttp_add_header(evhttp_request_get_output_headers(req), "X-Request-Id",
	                  log_request_get());
	if (r == NULL)
		return; /* answered with its id, not logged */
	r->rx = rx;
	r->req = req;
	r->start_mono = fgw_mono_ms();
	fgw_strlcpy(r->id, log_request_get(), sizeof(r->id));
	fgw_strlcpy(r->method, http_method_name(evhttp_request_get_command(req)),
	            sizeof(r->method));
	fgw_strlcpy(r->route, route, sizeof(r->route));
	http_peer_address(req, r->client, sizeof(r->client));
	if (evcon != NULL && (r->bev = evhttp_connection_get_bufferevent(evcon)) != NULL)
		bufferevent_incref(r->bev);
	r->next = rx->reqs;
	if (r->next != NULL)
		r->next->prev = r;
	rx->reqs = r;
	evhttp_request_set_on_complete_cb(req, on_complete, r);
}

const char *
http_req_id(struct reactor *rx, struct evhttp_request *req)
{
	struct http_req *r = find(rx, req);
	return r != NULL ? r->id : NULL;
}

void
http_req_answer(struct reactor *rx, struct evhttp_request *req, int status, size_t bytes,
                const char *body)
{
	struct http_req *r = find(rx, req);
	const char *t;
	size_t n;

	if (r == NULL)
		return;
	/* The answer's log lines (and any after it) carry its id. */
	log_request_set(r->id);
	r->status = status;
	r->bytes = bytes;
	if (body != NULL && (t = strstr(body, "\"transactionId\":\"")) != NULL) {
		t += 17;
		n = strspn(t, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_");
		if (n > 0 && n < sizeof(r->txn) && t[n] == '"') {
			memcpy(r->txn, t, n);
			r->txn[n] = '\0';
		}
	}
	if (evhttp_request_get_connection(req) == NULL) {
		/* The client is gone: evhttp frees the request without
		 * completing it. */
		evhttp_request_set_on_complete_cb(req, NULL, NULL);
		r->req = NULL;
		finish(r, 1);
	}
}

int
reqlog_reactor_start(struct reactor *rx)
{
	struct timeval tv = { 0, SWEEP_MS * 1000 };
	if ((rx->reqlog_timer = event_new(rx->base, -1, EV_PERSIST, sweep_cb, rx)) == NULL ||
	    event_add(rx->reqlog_timer, &tv) != 0)
		return FGW_ERR_NOMEM;
	return FGW_OK;
}

void
reqlog_reactor_stop(struct reactor *rx)
{
	/* After evhttp_free: every request is gone; the lines say how far
	 * each got. */
	while (rx->reqs != NULL) {
		rx->reqs->req = NULL;
		finish(rx->reqs, 1);
	}
	if (rx->reqlog_timer != NULL)
		event_free(rx->reqlog_timer);
	rx->reqlog_timer = NULL;
}
