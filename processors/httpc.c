/*
 * processors/httpc.c — the asynchronous HTTP client: one libcurl multi
 * handle driven by one libevent event_base, in the shape of curl's
 * docs/examples/multi-event.c.
 *
 * Layout: curl tells us which sockets to watch (sock_cb: one struct
 * httpc_sock with an embedded event per socket, attached to curl with
 * curl_multi_assign) and when to wake it (timer_cb: one evtimer). Both
 * event callbacks call curl_multi_socket_action and then drain
 * curl_multi_info_read. A finished transfer is classified (result code ->
 * err; maybe_sent from whether libcurl ever began to write the request,
 * prereq_cb), detached from the multi handle and put on the done
 * queue; a separate internal event, made active with event_active, runs
 * the user callbacks. So user code never runs inside a libcurl callback
 * and may freely start, cancel or free from its done callback.
 *
 * Every request is on exactly one list: queued (waiting for one of its
 * host's max_conns connections, on that host's origin), active (in the
 * multi handle) or done (waiting for delivery). httpc_cancel unlinks and
 * frees it wherever it is; httpc_free cancels everything.
 *
 * Why a queue of our own when libcurl queues too: a request libcurl holds
 * as pending has an easy handle with its buffers (~10 KiB), so 10,000
 * payments waiting for 64 processor connections took ~100 MiB. A queued
 * request here holds only its URL, headers and body; it gets a handle when
 * its host has a free connection, and its total time counts from the
 * call, as it did in libcurl's queue.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>

#include <curl/curl.h>
#include <event2/event.h>
#include <event2/event_struct.h>

#define LOG_MODULE "httpc"
#include "core/err.h"
#include "core/log.h"
#include "core/util.h"
#include "processors/httpc.h"

#define HTTPC_DEFAULT_CONNECT_MS 2000L
#define HTTPC_DEFAULT_MAX_CONNS 64L
#define HTTPC_DEFAULT_TOTAL_MS 30000L
#define HTTPC_DEFAULT_MAX_BODY ((size_t)1 << 20)
/* Idle easy handles kept for reuse (curl_easy_reset): creating and
 * destroying one per request showed in the profile. */
#define HTTPC_IDLE_MAX 64
/* The per-transfer receive buffer. Processor answers are a few hundred
 * bytes; curl's default of 16 KiB per transfer in flight was most of the
 * gateway's memory with 1,000 payments waiting for a processor connection
 * (peak RSS 48.5 -> 36.9 MiB at 1,000 connections). */
#define HTTPC_RECV_BUFFER 4096L

enum req_state {
	REQ_QUEUED,    /* on its origin's queue, no easy handle yet */
	REQ_ACTIVE,    /* added to the multi handle */
	REQ_DONE,      /* finished, on the done queue */
	REQ_DELIVERING /* its done callback is running */
};

struct httpc_origin;

struct httpc_req {
	struct httpc *c;
	TAILQ_ENTRY(httpc_req) link;
	enum req_state state;
	struct httpc_origin *o; /* while queued or active */
	char *url, *method;     /* while queued: what req_start needs */
	long total_ms;
	struct event expire; /* while queued: the total time runs out */
	CURL *easy;
	struct curl_slist *hdrs;
	char *req_body;
	size_t req_body_len;
	char *buf; /* response body, NUL-terminated when not NULL */
	size_t len, cap;
	int too_large, nomem;
	int attempts;       /* times libcurl was about to write the request on
	                      a connection (CURLOPT_PREREQFUNCTION) */
	int may_repeat;     /* GET: libcurl may send it again on a fresh
	                      connection after a reused one died */
	int refused_resend; /* a repeat was stopped (prereq_cb) */
	httpc_done_fn done;
	void *arg;
	int64_t started_ms;
	struct httpc_response resp;
};

struct httpc_sock {
	struct httpc *c;
	curl_socket_t fd;
	int added;
	struct event ev;
	LIST_ENTRY(httpc_sock) link;
};

TAILQ_HEAD(req_list, httpc_req);

/* scheme://host:port of a URL (as written; a different spelling of one
 * host only means libcurl's own per-host limit queues the excess). */
#define ORIGIN_MAX 280
struct httpc_origin {
	LIST_ENTRY(httpc_origin) link;
	char key[ORIGIN_MAX];
	int active; /* its requests in the multi handle */
	struct req_list queued;
};

struct httpc {
	struct event_base *base;
	CURLM *multi;
	struct event *timer;
	struct event *deliver;
	struct req_list active;
	struct req_list done;
	LIST_HEAD(, httpc_sock) socks;
	LIST_HEAD(, httpc_origin) origins; /* with a request queued or active */
	long max_conns;
	int inflight;
	int delivering; /* deliver_cb is running user callbacks */
	int closing;    /* httpc_free began: refuse new requests */
	long connect_timeout_ms;
	int verify_tls;
	size_t max_body;
	char *ca_file;
	char *client_cert;
	char *client_key;
	char *proxy;
	CURL *idle[HTTPC_IDLE_MAX];
	int n_idle;
};

/* ---- request memory ---------------------------------------------------- */

/* Header lines carry the processor credential (Authorization): wiped
 * before the list is freed, like the adapter's own copy. */
static void
hdrs_free(struct httpc_req *r)
{
	for (struct curl_slist *l = r->hdrs; l != NULL; l = l->next)
		if (l->data != NULL)
			explicit_bzero(l->data, strlen(l->data));
	curl_slist_free_all(r->hdrs);
	r->hdrs = NULL;
}

/* A request body may hold card fields (adapters with needs_clear_card):
 * our copy is wiped before it is freed. */
static void
req_body_free(struct httpc_req *r)
{
	if (r->req_body != NULL)
		fgw_freezero(r->req_body, r->req_body_len + 1);
	r->req_body = NULL;
}

static CURL *
easy_get(struct httpc *c)
{
	return c->n_idle > 0 ? c->idle[--c->n_idle] : curl_easy_init();
}

/* Back to the idle list with every option reset (the next request sets
 * its own); connections live in the multi handle's cache, not here. */
static void
easy_put(struct httpc *c, CURL *easy)
{
	if (c->closing || c->n_idle == HTTPC_IDLE_MAX) {
		curl_easy_cleanup(easy);
		return;
	}
	curl_easy_reset(easy);
	c->idle[c->n_idle++] = easy;
}

static void
req_free(struct httpc_req *r)
{
	if (r == NULL)
		return;
	if (r->easy != NULL)
		easy_put(r->c, r->easy);
	hdrs_free(r);
	req_body_free(r);
	free(r->url);
	free(r->method);
	free(r->buf);
	free(r);
}

/* Detaches the easy handle from the multi and releases what only the
 * transfer needed; the response buffer stays for delivery. */
static void
req_detach(struct httpc_req *r)
{
	if (r->easy != NULL) {
		curl_multi_remove_handle(r->c->multi, r->easy);
		easy_put(r->c, r->easy);
		r->easy = NULL;
	}
	hdrs_free(r);
	req_body_free(r);
}

static size_t
write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct httpc_req *r = userdata;
	size_t n = size * nmemb;
	size_t max = r->c->max_body;

	if (n == 0)
		return 0;
	if (n > max || r->len > max - n) {
		r->too_large = 1;
		return 0; /* short count: curl ends with CURLE_WRITE_ERROR */
	}
	if (r->len + n + 1 > r->cap) {
		size_t ncap = r->cap ? r->cap : 4096;
		while (ncap < r->len + n + 1)
			ncap *= 2;
		if (ncap > max + 1)
			ncap = max + 1;
		char *nb = realloc(r->buf, ncap);
		if (nb == NULL) {
			r->nomem = 1;
			return 0;
		}
		r->buf = nb;
		r->cap = ncap;
	}
	memcpy(r->buf + r->len, ptr, n);
	r->len += n;
	r->buf[r->len] = '\0';
	return n;
}

/* ---- result classification --------------------------------------------- */

/* CURLOPT_PREREQFUNCTION: libcurl calls it on the connection it chose
 * (new or reused, TLS done) right before it writes the request, and again
 * for each attempt when it re-sends the request on a fresh connection
 * because a reused one died. So a request with no call never left us, and
 * one with a call may have reached the server whatever the final result
 * code says (a re-send's connect failure proves nothing about the first
 * attempt).
 *
 * A request that changes something (anything but GET) is never sent a
 * second time behind the caller's back: its repeat is aborted here, before
 * a byte goes out, and the caller sees an unknown outcome and asks the
 * processor (the reconciler). */
static int
prereq_cb(void *clientp, char *primary_ip, char *local_ip, int primary_port,
          int local_port)
{
	struct httpc_req *r = clientp;

	(void)primary_ip;
	(void)local_ip;
	(void)primary_port;
	(void)local_port;
	if (r->attempts++ > 0 && !r->may_repeat) {
		r->refused_resend = 1;
		return CURL_PREREQFUNC_ABORT;
	}
	return CURL_PREREQFUNC_OK;
}

static void
classify(struct httpc_req *r, CURLcode code)
{
	struct httpc_response *resp = &r->resp;

	resp->status = 0;
	/* Only a request that libcurl never began to write on any connection
	 * provably did not leave. */
	resp->maybe_sent = r->attempts > 0;
	switch (code) {
	case CURLE_OK: {
		long status = 0;
		curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
		resp->err = FGW_OK;
		resp->status = status;
		break;
	}
	case CURLE_COULDNT_CONNECT:
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
		resp->err = FGW_ERR_UNAVAILABLE;
		break;
	case CURLE_OPERATION_TIMEDOUT:
		resp->err = FGW_ERR_TIMEOUT;
		break;
	case CURLE_FILESIZE_EXCEEDED:
		resp->err = FGW_ERR_TOO_LARGE;
		resp->maybe_sent = 1;
		break;
	case CURLE_WRITE_ERROR:
		resp->err = r->too_large ? FGW_ERR_TOO_LARGE
		            : r->nomem   ? FGW_ERR_NOMEM
		                         : FGW_ERR_IO;
		resp->maybe_sent = 1; /* an answer was arriving */
		break;
	case CURLE_OUT_OF_MEMORY:
		resp->err = FGW_ERR_NOMEM;
		break;
	default:
		/* GOT_NOTHING, RECV_ERROR, SEND_ERROR, TLS failures, a repeat
		 * stopped by prereq_cb, ... */
		resp->err = FGW_ERR_IO;
		break;
	}
	if (resp->err != FGW_OK) {
		log_debug("request failed: %s (curl %d: %s), attempts %d%s, maybe_sent %d",
		          fgw_strerror(resp->err), (int)code, curl_easy_strerror(code),
		          r->attempts, r->refused_resend ? " (repeat not sent)" : "",
		          resp->maybe_sent);
		/* A partial body is no answer. */
		r->len = 0;
		if (r->buf != NULL)
			r->buf[0] = '\0';
	}
	resp->elapsed_ms = (long)(fgw_mono_ms() - r->started_ms);
}

/* ---- driving the multi handle ----------------------------------------- */

static void leave_active(struct httpc *c, struct httpc_req *r);

static void
drain(struct httpc *c)
{
	CURLMsg *msg;
	int left = 0;

	while ((msg = curl_multi_info_read(c->multi, &left)) != NULL) {
		if (msg->msg != CURLMSG_DONE)
			continue;
		CURL *easy = msg->easy_handle;
		CURLcode code = msg->data.result;
		char *priv = NULL;
		if (curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv) != CURLE_OK ||
		    priv == NULL) {
			/* Not ours: cannot happen; keep the multi clean anyway. */
			curl_multi_remove_handle(c->multi, easy);
			continue;
		}
		struct httpc_req *r = (struct httpc_req *)(void *)priv;
		classify(r, code);
		req_detach(r); /* msg is invalid from here on */
		TAILQ_REMOVE(&c->active, r, link);
		TAILQ_INSERT_TAIL(&c->done, r, link);
		r->state = REQ_DONE;
		event_active(c->deliver, EV_TIMEOUT, 0);
		leave_active(c, r);
	}
}

static void
sock_event_cb(evutil_socket_t fd, short what, void *arg)
{
	struct httpc_sock *hs = arg;
	struct httpc *c = hs->c; /* hs may be freed inside socket_action */
	int running = 0;
	int flags = 0;

	if (what & EV_READ)
		flags |= CURL_CSELECT_IN;
	if (what & EV_WRITE)
		flags |= CURL_CSELECT_OUT;
	CURLMcode mc = curl_multi_socket_action(c->multi, fd, flags, &running);
	if (mc != CURLM_OK)
		log_warn("curl_multi_socket_action: %s", curl_multi_strerror(mc));
	drain(c);
}

static void
timer_event_cb(evutil_socket_t fd, short what, void *arg)
{
	struct httpc *c = arg;
	int running = 0;

	(void)fd;
	(void)what;
	CURLMcode mc = curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	if (mc != CURLM_OK)
		log_warn("curl_multi_socket_action: %s", curl_multi_strerror(mc));
	drain(c);
}

static void
sock_release(struct httpc_sock *hs)
{
	if (hs->added)
		event_del(&hs->ev);
	LIST_REMOVE(hs, link);
	free(hs);
}

/* CURLMOPT_SOCKETFUNCTION. Returning -1 makes curl abort the transfers
 * (CURLM_ABORTED_BY_CALLBACK), which drain then reports per request. */
static int
sock_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
	struct httpc *c = userp;
	struct httpc_sock *hs = socketp;

	(void)easy;
	if (what == CURL_POLL_REMOVE) {
		/* A socket we never saw (socketp NULL) is fine: nothing to do. */
		if (hs != NULL) {
			sock_release(hs);
			curl_multi_assign(c->multi, s, NULL);
		}
		return 0;
	}
	if (hs == NULL) {
		hs = calloc(1, sizeof(*hs));
		if (hs == NULL)
			return -1;
		hs->c = c;
		hs->fd = s;
		LIST_INSERT_HEAD(&c->socks, hs, link);
		if (curl_multi_assign(c->multi, s, hs) != CURLM_OK) {
			sock_release(hs);
			return -1;
		}
	} else if (hs->added) {
		event_del(&hs->ev);
		hs->added = 0;
	}
	short kind = EV_PERSIST;
	if (what & CURL_POLL_IN)
		kind |= EV_READ;
	if (what & CURL_POLL_OUT)
		kind |= EV_WRITE;
	if (!(kind & (EV_READ | EV_WRITE)))
		return 0;
	if (event_assign(&hs->ev, c->base, s, kind, sock_event_cb, hs) != 0 ||
	    event_add(&hs->ev, NULL) != 0)
		return -1;
	hs->added = 1;
	return 0;
}

/* CURLMOPT_TIMERFUNCTION: -1 removes the timer, 0 means "as soon as
 * possible" (the next loop iteration, never a call from in here). */
static int
timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
	struct httpc *c = userp;

	(void)multi;
	if (timeout_ms < 0) {
		evtimer_del(c->timer);
		return 0;
	}
	struct timeval tv = { .tv_sec = timeout_ms / 1000,
		                  .tv_usec = (timeout_ms % 1000) * 1000 };
	return evtimer_add(c->timer, &tv) == 0 ? 0 : -1;
}

/* The deferred delivery: runs the done callbacks outside libcurl. */
static void
deliver_cb(evutil_socket_t fd, short what, void *arg)
{
	struct httpc *c = arg;
	struct httpc_req *r;

	(void)fd;
	(void)what;
	c->delivering = 1;
	while (!c->closing && (r = TAILQ_FIRST(&c->done)) != NULL) {
		TAILQ_REMOVE(&c->done, r, link);
		r->state = REQ_DELIVERING;
		c->inflight--;
		r->resp.body = r->buf != NULL ? r->buf : "";
		r->resp.body_len = r->len;
		r->done(r->arg, &r->resp);
		req_free(r);
	}
	c->delivering = 0;
	if (c->closing)
		httpc_free(c); /* httpc_free was called from a callback */
}

/* ---- per-host queue ------------------------------------------------------ */

static struct httpc_origin *
origin_get(struct httpc *c, const char *url)
{
	struct httpc_origin *o;
	const char *p = strstr(url, "://");
	size_t n;
	char key[ORIGIN_MAX];

	p = p != NULL ? p + 3 : url;
	n = (size_t)(p - url) + strcspn(p, "/?#");
	if (n >= sizeof(key))
		n = sizeof(key) - 1;
	for (size_t i = 0; i < n; i++)
		key[i] = (char)((url[i] >= 'A' && url[i] <= 'Z') ? url[i] + 32 : url[i]);
	key[n] = '\0';
	LIST_FOREACH(o, &c->origins, link)
	if (strcmp(o->key, key) == 0)
		return o;
	if ((o = calloc(1, sizeof(*o))) == NULL)
		return NULL;
	memcpy(o->key, key, n + 1);
	TAILQ_INIT(&o->queued);
	LIST_INSERT_HEAD(&c->origins, o, link);
	return o;
}

/* Frees an origin nothing waits on or runs through. */
static void
origin_release(struct httpc_origin *o)
{
	if (o != NULL && o->active == 0 && TAILQ_EMPTY(&o->queued)) {
		LIST_REMOVE(o, link);
		free(o);
	}
}

/* A request that never left us ends with err (delivered like any other). */
static void
queued_fail(struct httpc *c, struct httpc_req *r, int err)
{
	r->resp.err = err;
	r->resp.status = 0;
	r->resp.maybe_sent = 0;
	r->resp.elapsed_ms = (long)(fgw_mono_ms() - r->started_ms);
	r->len = 0;
	TAILQ_INSERT_TAIL(&c->done, r, link);
	r->state = REQ_DONE;
	event_active(c->deliver, EV_TIMEOUT, 0);
}

/* A queued request's total time ran out before its host had room. */
static void
expire_cb(evutil_socket_t fd, short what, void *arg)
{
	struct httpc_req *r = arg;
	struct httpc_origin *o = r->o;

	(void)fd;
	(void)what;
	TAILQ_REMOVE(&o->queued, r, link);
	r->o = NULL;
	queued_fail(r->c, r, FGW_ERR_TIMEOUT);
	origin_release(o);
}

#define SETOPT(opt, val)                                                               \
	do {                                                                               \
		CURLcode cc_ = curl_easy_setopt(r->easy, (opt), (val));                        \
		if (cc_ != CURLE_OK) {                                                         \
			ret = cc_ == CURLE_OUT_OF_MEMORY ? FGW_ERR_NOMEM : FGW_ERR_INTERNAL;       \
			log_warn("curl_easy_setopt(%d): %s", (int)(opt), curl_easy_strerror(cc_)); \
			goto out;                                                                  \
		}                                                                              \
	} while (0)

/* Gives r an easy handle and adds it to the multi handle with timeout_ms
 * left of its total time; r->o has room. */
static int
req_start(struct httpc *c, struct httpc_req *r, long timeout_ms)
{
	int ret = FGW_ERR_NOMEM;

	if ((r->easy = easy_get(c)) == NULL)
		goto out;
	SETOPT(CURLOPT_URL, r->url);
	SETOPT(CURLOPT_PRIVATE, (char *)(void *)r);
	SETOPT(CURLOPT_WRITEFUNCTION, write_cb);
	SETOPT(CURLOPT_WRITEDATA, r);
	SETOPT(CURLOPT_PREREQFUNCTION, prereq_cb);
	SETOPT(CURLOPT_PREREQDATA, r);
	SETOPT(CURLOPT_NOSIGNAL, 1L);
	SETOPT(CURLOPT_TCP_NODELAY, 1L);
	SETOPT(CURLOPT_TCP_KEEPALIVE, 1L);
	SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
	SETOPT(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	SETOPT(CURLOPT_FOLLOWLOCATION, 0L);
	SETOPT(CURLOPT_CONNECTTIMEOUT_MS, c->connect_timeout_ms);
	SETOPT(CURLOPT_TIMEOUT_MS, timeout_ms);
	SETOPT(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)c->max_body);
	SETOPT(CURLOPT_PROXY, c->proxy != NULL ? c->proxy : "");
	SETOPT(CURLOPT_USERAGENT, "flairgw");
	SETOPT(CURLOPT_BUFFERSIZE, HTTPC_RECV_BUFFER);
	SETOPT(CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
	SETOPT(CURLOPT_SSL_VERIFYPEER, c->verify_tls ? 1L : 0L);
	SETOPT(CURLOPT_SSL_VERIFYHOST, c->verify_tls ? 2L : 0L);
	if (c->ca_file != NULL)
		SETOPT(CURLOPT_CAINFO, c->ca_file);
	if (c->client_cert != NULL)
		SETOPT(CURLOPT_SSLCERT, c->client_cert);
	if (c->client_key != NULL)
		SETOPT(CURLOPT_SSLKEY, c->client_key);
	SETOPT(CURLOPT_HTTPHEADER, r->hdrs);
	if (r->may_repeat) { /* GET */
		SETOPT(CURLOPT_HTTPGET, 1L);
	} else {
		if (strcmp(r->method, "POST") != 0)
			SETOPT(CURLOPT_CUSTOMREQUEST, r->method);
		if (r->req_body != NULL) {
			SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->req_body_len);
			SETOPT(CURLOPT_POSTFIELDS, r->req_body);
		}
	}
	CURLMcode mc = curl_multi_add_handle(c->multi, r->easy);
	if (mc != CURLM_OK) {
		log_warn("curl_multi_add_handle: %s", curl_multi_strerror(mc));
		ret = mc == CURLM_OUT_OF_MEMORY ? FGW_ERR_NOMEM : FGW_ERR_INTERNAL;
		goto out;
	}
	r->state = REQ_ACTIVE;
	TAILQ_INSERT_TAIL(&c->active, r, link);
	r->o->active++;
	ret = FGW_OK;
out:
	if (ret != FGW_OK && r->easy != NULL) {
		easy_put(c, r->easy);
		r->easy = NULL;
	}
	return ret;
}

/* Starts queued requests of o while it has room. */
static void
pump(struct httpc *c, struct httpc_origin *o)
{
	struct httpc_req *r;
	long left;
	int rc;

	while (!c->closing && o->active < c->max_conns &&
	       (r = TAILQ_FIRST(&o->queued)) != NULL) {
		TAILQ_REMOVE(&o->queued, r, link);
		evtimer_del(&r->expire);
		left = r->total_ms - (long)(fgw_mono_ms() - r->started_ms);
		if (left <= 0)
			rc = FGW_ERR_TIMEOUT;
		else
			rc = req_start(c, r, left);
		if (rc != FGW_OK) {
			r->o = NULL;
			queued_fail(c, r, rc);
		}
	}
}

/* r left the multi handle (finished or cancelled): its host has room for
 * the next queued request. */
static void
leave_active(struct httpc *c, struct httpc_req *r)
{
	struct httpc_origin *o = r->o;

	if (o == NULL)
		return;
	r->o = NULL;
	o->active--;
	pump(c, o);
	origin_release(o);
}

/* ---- public functions -------------------------------------------------- */

static int
dup_opt(const char *s, char **out)
{
	*out = NULL;
	if (s == NULL)
		return FGW_OK;
	*out = strdup(s);
	return *out != NULL ? FGW_OK : FGW_ERR_NOMEM;
}

int
httpc_new(struct event_base *base, const struct httpc_opts *opts, struct httpc **out)
{
	struct httpc *c = NULL;
	int r = FGW_ERR_NOMEM;
	long max_conns = HTTPC_DEFAULT_MAX_CONNS;

	if (out != NULL)
		*out = NULL;
	if (base == NULL || out == NULL)
		return FGW_ERR_INVALID;
	if ((c = calloc(1, sizeof(*c))) == NULL)
		return FGW_ERR_NOMEM;
	c->base = base;
	TAILQ_INIT(&c->active);
	TAILQ_INIT(&c->done);
	LIST_INIT(&c->socks);
	LIST_INIT(&c->origins);
	c->connect_timeout_ms = HTTPC_DEFAULT_CONNECT_MS;
	c->verify_tls = 1;
	c->max_body = HTTPC_DEFAULT_MAX_BODY;
	if (opts != NULL) {
		if (opts->connect_timeout_ms < 0 || opts->max_conns_per_host < 0) {
			r = FGW_ERR_INVALID;
			goto out;
		}
		if (opts->connect_timeout_ms > 0)
			c->connect_timeout_ms = opts->connect_timeout_ms;
		if (opts->max_conns_per_host > 0)
			max_conns = opts->max_conns_per_host;
		if (opts->max_response_bytes > 0)
			c->max_body = opts->max_response_bytes;
		c->verify_tls = opts->verify_tls ? 1 : 0;
		if ((r = dup_opt(opts->ca_file, &c->ca_file)) != 0 ||
		    (r = dup_opt(opts->client_cert, &c->client_cert)) != 0 ||
		    (r = dup_opt(opts->client_key, &c->client_key)) != 0 ||
		    (r = dup_opt(opts->proxy, &c->proxy)) != 0)
			goto out;
	}
	c->max_conns = max_conns;
	r = FGW_ERR_NOMEM;
	if ((c->timer = evtimer_new(base, timer_event_cb, c)) == NULL ||
	    (c->deliver = event_new(base, -1, 0, deliver_cb, c)) == NULL ||
	    (c->multi = curl_multi_init()) == NULL)
		goto out;
	/* The connection cache holds idle keep-alive connections; size it so
	 * one host's pool is not pruned between bursts. */
	long cache = max_conns < 4 ? 16 : max_conns * 4;
	if (curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, sock_cb) ||
	    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c) ||
	    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, timer_cb) ||
	    curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c) ||
	    curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS, max_conns) ||
	    curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, cache)) {
		r = FGW_ERR_INTERNAL;
		goto out;
	}
	*out = c;
	c = NULL; /* owned by the caller now */
	r = FGW_OK;
out:
	httpc_free(c);
	return r;
}

void
httpc_free(struct httpc *c)
{
	struct httpc_req *r;
	struct httpc_sock *hs;
	struct httpc_origin *o;

	if (c == NULL)
		return;
	c->closing = 1;
	while ((o = LIST_FIRST(&c->origins)) != NULL) {
		while ((r = TAILQ_FIRST(&o->queued)) != NULL) {
			TAILQ_REMOVE(&o->queued, r, link);
			evtimer_del(&r->expire);
			req_free(r);
			c->inflight--;
		}
		LIST_REMOVE(o, link);
		free(o);
	}
	/* Cancel everything; curl may call sock_cb/timer_cb while we do. */
	while ((r = TAILQ_FIRST(&c->active)) != NULL) {
		TAILQ_REMOVE(&c->active, r, link);
		r->o = NULL; /* freed above */
		req_detach(r);
		req_free(r);
		c->inflight--;
	}
	while ((r = TAILQ_FIRST(&c->done)) != NULL) {
		TAILQ_REMOVE(&c->done, r, link);
		req_free(r);
		c->inflight--;
	}
	if (c->delivering)
		return; /* deliver_cb finishes the job after the callback */
	while (c->n_idle > 0)
		curl_easy_cleanup(c->idle[--c->n_idle]);
	if (c->multi != NULL)
		curl_multi_cleanup(c->multi);
	while ((hs = LIST_FIRST(&c->socks)) != NULL)
		sock_release(hs);
	if (c->timer != NULL)
		event_free(c->timer);
	if (c->deliver != NULL)
		event_free(c->deliver);
	free(c->ca_file);
	free(c->client_cert);
	free(c->client_key);
	free(c->proxy);
	free(c);
}

void
httpc_cancel(struct httpc_req *r)
{
	if (r == NULL)
		return;
	struct httpc *c = r->c;
	struct httpc_origin *o = r->o;
	switch (r->state) {
	case REQ_QUEUED:
		TAILQ_REMOVE(&o->queued, r, link);
		evtimer_del(&r->expire);
		r->o = NULL;
		origin_release(o);
		break;
	case REQ_ACTIVE:
		TAILQ_REMOVE(&c->active, r, link);
		req_detach(r);
		leave_active(c, r);
		break;
	case REQ_DONE:
		TAILQ_REMOVE(&c->done, r, link);
		break;
	case REQ_DELIVERING:
		return; /* its callback is running; deliver_cb frees it */
	}
	c->inflight--;
	req_free(r);
}

int
httpc_inflight(const struct httpc *c)
{
	return c != NULL ? c->inflight : 0;
}

int
httpc_queued(const struct httpc *c)
{
	const struct httpc_origin *o;
	const struct httpc_req *r;
	int n = 0;

	if (c == NULL)
		return 0;
	LIST_FOREACH(o, &c->origins, link)
	TAILQ_FOREACH(r, &o->queued, link)
		n++;
	return n;
}

static int
method_ok(const char *m)
{
	size_t n = strlen(m);
	if (n == 0 || n > 16)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (m[i] < 'A' || m[i] > 'Z')
			return 0;
	return 1;
}

static int
has_ctl(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return 1;
	return 0;
}

static int
build_headers(struct httpc_req *r, const char *const *headers)
{
	int have_expect = 0;
	struct curl_slist *l;

	for (size_t i = 0; headers != NULL && headers[i] != NULL; i++) {
		if (has_ctl(headers[i]) || strchr(headers[i], ':') == NULL)
			return FGW_ERR_INVALID;
		if (strncasecmp(headers[i], "Expect:", 7) == 0)
			have_expect = 1;
		if ((l = curl_slist_append(r->hdrs, headers[i])) == NULL)
			return FGW_ERR_NOMEM;
		r->hdrs = l;
	}
	/* No "Expect: 100-continue" round trip before a body. */
	if (!have_expect) {
		if ((l = curl_slist_append(r->hdrs, "Expect:")) == NULL)
			return FGW_ERR_NOMEM;
		r->hdrs = l;
	}
	return FGW_OK;
}

int
httpc_request(struct httpc *c, const char *method, const char *url,
              const char *const *headers, const char *body, size_t len,
              long total_timeout_ms, httpc_done_fn done, void *arg,
              struct httpc_req **out)
{
	struct httpc_req *r = NULL;
	struct httpc_origin *o;
	int ret = FGW_ERR_NOMEM;
	int is_get, is_post;

	if (out != NULL)
		*out = NULL;
	if (c == NULL || method == NULL || url == NULL || done == NULL ||
	    (body == NULL && len > 0))
		return FGW_ERR_INVALID;
	if (c->closing)
		return FGW_ERR_SHUTDOWN;
	if (!method_ok(method) || has_ctl(url) || strchr(url, ' ') != NULL ||
	    (strncasecmp(url, "http://", 7) != 0 && strncasecmp(url, "https://", 8) != 0))
		return FGW_ERR_INVALID;
	is_get = strcmp(method, "GET") == 0;
	is_post = strcmp(method, "POST") == 0;
	if (is_get && len > 0)
		return FGW_ERR_INVALID;
	if (total_timeout_ms <= 0)
		total_timeout_ms = HTTPC_DEFAULT_TOTAL_MS;

	if ((r = calloc(1, sizeof(*r))) == NULL)
		return FGW_ERR_NOMEM;
	r->c = c;
	r->done = done;
	r->arg = arg;
	r->may_repeat = is_get;
	r->total_ms = total_timeout_ms;
	if ((ret = build_headers(r, headers)) != 0)
		goto out;
	ret = FGW_ERR_NOMEM;
	if ((r->url = strdup(url)) == NULL || (r->method = strdup(method)) == NULL)
		goto out;
	if (!is_get && (is_post || len > 0)) {
		/* Our own copy: the caller's buffer may go away. */
		if ((r->req_body = malloc(len + 1)) == NULL)
			goto out;
		if (len > 0)
			memcpy(r->req_body, body, len);
		r->req_body_len = len;
		r->req_body[len] = '\0';
	}
	if ((o = origin_get(c, url)) == NULL)
		goto out;
	r->o = o;
	r->started_ms = fgw_mono_ms();
	if (o->active < c->max_conns && TAILQ_EMPTY(&o->queued)) {
		if ((ret = req_start(c, r, total_timeout_ms)) != FGW_OK) {
			r->o = NULL;
			origin_release(o);
			goto out;
		}
	} else {
		evtimer_assign(&r->expire, c->base, expire_cb, r);
		struct timeval tv = { .tv_sec = total_timeout_ms / 1000,
			                  .tv_usec = (total_timeout_ms % 1000) * 1000 };
		if (evtimer_add(&r->expire, &tv) != 0) {
			r->o = NULL;
			origin_release(o);
			ret = FGW_ERR_INTERNAL;
			goto out;
		}
		r->state = REQ_QUEUED;
		TAILQ_INSERT_TAIL(&o->queued, r, link);
	}
	c->inflight++;
	if (out != NULL)
		*out = r;
	r = NULL; /* owned by c now */
	ret = FGW_OK;
out:
	req_free(r);
	return ret;
}
