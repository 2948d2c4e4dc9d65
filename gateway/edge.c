/*
 * gateway/edge.c — the HTTP edge (see edge.h).
 *
 * The scanner sees every byte of a connection's request stream when it
 * lands in the bufferevent's input buffer (an evbuffer callback runs
 * before evhttp's read callback), so evhttp never parses bytes the
 * scanner has not accepted. When the scanner refuses a request, the bytes
 * from the offending request (or line, if evhttp already read the start
 * of the request) on are cut off and replaced by a synthetic ending that
 * evhttp frames without doubt and that carries EDGE_REJECT_HEADER with
 * Connection: close; routes_handle answers it with a JSON error. Earlier
 * pipelined requests are answered first, in order, because evhttp handles
 * requests one at a time.
 *
 * Each connection's context holds a reference on its bufferevent; a
 * per-reactor sweep notices when evhttp has freed it (its callbacks are
 * cleared), enforces the head deadline and the keep-alive idle timeout,
 * and drops the reference.
 */
#define LOG_MODULE "edge"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <openssl/ssl.h>

#include "core/err.h"
#include "core/log.h"
#include "core/util.h"
#include "crypto/tls.h"
#include "gateway/edge.h"
#include "gateway/gateway.h"

/* ---- the scanner -------------------------------------------------------- */

enum {
	ST_REQ_START = 0,
	ST_METHOD,
	ST_TARGET0,
	ST_TARGET,
	ST_VERSION,
	ST_RL_LF,
	ST_LINE_START, /* header or trailer line */
	ST_NAME,
	ST_VALUE,
	ST_HL_LF,
	ST_END_LF, /* the empty line ending a head or trailer */
	ST_BODY,
	ST_CHUNK_SIZE,
	ST_CHUNK_SIZE_LF,
	ST_CHUNK_DATA,
	ST_CHUNK_CR,
	ST_CHUNK_LF,
	ST_DEAD,
};

/* RFC 7230 section 3.2.6 tchar */
static int
is_tchar(unsigned char c)
{
	if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
		return 1;
	return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

void
edge_scan_init(struct edge_scan *s, uint64_t max_head, uint64_t max_body)
{
	memset(s, 0, sizeof(*s));
	s->max_head = max_head;
	s->max_body = max_body;
	s->st = ST_REQ_START;
}

static int
reject(struct edge_scan *s, int status, const char *reason)
{
	s->status = status;
	s->reason = reason;
	s->st = ST_DEAD;
	return -1;
}

/* Methods whose body evhttp reads (evhttp_method_may_have_body); for any
 * other method it reads none, whatever the headers say. */
static int
method_has_body(const char *m)
{
	static const char *const with_body[] = { "GET",    "POST",    "PUT", "PATCH",
		                                     "DELETE", "OPTIONS", NULL };
	for (int i = 0; with_body[i] != NULL; i++)
		if (strcmp(m, with_body[i]) == 0)
			return 1;
	return 0;
}

/* An accepted header or trailer line: name[0..nlen), val[0..vlen). */
static int
header_line(struct edge_scan *s)
{
	int trailer = s->phase == EDGE_TRAILER;
	const char *v = s->val;
	size_t n = s->vlen;

	if (s->nlong)
		return 0;
	if (strcasecmp(s->name, EDGE_REJECT_HEADER) == 0)
		return reject(s, 400, "reserved header field");
	if (strcasecmp(s->name, "host") == 0) {
		/* RFC 7230 section 5.4: more than one Host is a 400 */
		if (s->seen_host++ || trailer)
			return reject(s, 400, "Host repeated");
		return 0;
	}
	if (strcasecmp(s->name, "expect") == 0) {
		/* evhttp answers any expectation but 100-continue with its own
		 * HTML 417 before the request reaches a route: refuse it here,
		 * where the answer is JSON (RFC 7231 section 5.1.1). */
		while (n > 0 && (v[0] == ' ' || v[0] == '\t'))
			v++, n--;
		while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
			n--;
		if (s->vlong || n != 12 || strncasecmp(v, "100-continue", 12) != 0)
			return reject(s, 417, "only the 100-continue expectation is supported");
		return 0;
	}
	if (strcasecmp(s->name, "content-length") != 0 &&
	    strcasecmp(s->name, "transfer-encoding") != 0)
		return 0;
	/* Framing fields in a trailer come too late to frame anything. */
	if (trailer)
		return reject(s, 400, "framing header field in a trailer");
	if (s->vlong || memchr(v, '\t', n) != NULL)
		return reject(s, 400, "malformed framing header field");
	while (n > 0 && v[0] == ' ')
		v++, n--;
	while (n > 0 && v[n - 1] == ' ')
		n--;
	if (strcasecmp(s->name, "content-length") == 0) {
		uint64_t cl = 0;
		/* RFC 7230 section 3.3.3 item 4: several differing values, or
		 * one that is not 1*DIGIT, make the length unknowable; we refuse
		 * repeats too (section 3.3.2 allows either). 18 digits cannot
		 * overflow. */
		if (s->seen_cl)
			return reject(s, 400, "Content-Length repeated");
		if (n == 0 || n > 18)
			return reject(s, 400, "invalid Content-Length");
		for (size_t i = 0; i < n; i++) {
			if (v[i] < '0' || v[i] > '9')
				return reject(s, 400, "invalid Content-Length");
			cl = cl * 10 + (uint64_t)(v[i] - '0');
		}
		if (cl > s->max_body)
			return reject(s, 413, "request body too large");
		s->seen_cl = 1;
		s->cl = cl;
		return 0;
	}
	/* Transfer-Encoding: only "chunked" (the one coding evhttp decodes).
	 * Section 3.3.3 item 3: chunked not the final coding of a request
	 * is a 400; a final chunked after codings we do not know is a 501
	 * (section 3.3.1). */
	if (s->seen_te)
		return reject(s, 400, "Transfer-Encoding repeated");
	if (n == 7 && strncasecmp(v, "chunked", 7) == 0) {
		s->seen_te = 1;
		return 0;
	}
	if (n > 7 && strncasecmp(v + n - 7, "chunked", 7) == 0 &&
	    (v[n - 8] == ',' || v[n - 8] == ' '))
		return reject(s, 501, "unsupported transfer coding");
	return reject(s, 400, "invalid Transfer-Encoding");
}

/* The empty line after a head: decides how the body is framed. */
static int
head_end(struct edge_scan *s)
{
	s->head_done = 1;
	if (s->minor == 1 && !s->seen_host)
		/* section 5.4: an HTTP/1.1 request without Host is a 400 */
		return reject(s, 400, "Host missing");
	if (s->seen_cl && s->seen_te)
		/* Section 3.3.3 item 3: "ought to be handled as an error". */
		return reject(s, 400, "both Content-Length and Transfer-Encoding");
	if (!s->has_body) {
		if (s->seen_te || (s->seen_cl && s->cl > 0))
			return reject(s, 400, "a body on a method that has none");
		return 1;
	}
	if (s->seen_te) {
		s->phase = EDGE_CHUNK;
		s->st = ST_CHUNK_SIZE;
		s->line_start = s->pos + 1;
		s->n = 0;
		s->hexdigits = 0;
		return 0;
	}
	if (s->seen_cl && s->cl > 0) {
		s->phase = EDGE_BODY;
		s->st = ST_BODY;
		s->n = s->cl;
		return 0;
	}
	return 1; /* section 3.3.3 item 6: no body */
}

static void
request_done(struct edge_scan *s)
{
	s->requests++;
	s->st = ST_REQ_START;
	s->phase = EDGE_REQLINE;
	s->in_request = 0;
	s->head_done = 0;
	s->seen_cl = s->seen_te = s->seen_host = 0;
	s->minor = 0;
	s->cl = 0;
	s->head_bytes = s->body_total = 0;
	s->mlen = 0;
	s->method[0] = '\0';
}

static void
line_begin(struct edge_scan *s)
{
	s->line_start = s->pos + 1;
	s->st = ST_LINE_START;
	s->nlen = s->vlen = 0;
	s->nlong = s->vlong = 0;
}

/* A path (or "*") evhttp always parses. Anything else is absolute-form,
 * whose authority evhttp parses strictly and answers with its own HTML
 * 400 when it cannot: parse it here first, where the refusal is JSON. */
static int
target_done(struct edge_scan *s)
{
	struct evhttp_uri *u;

	if (s->tlen > 0 && (s->target[0] == '/' || (s->tlen == 1 && s->target[0] == '*')))
		return 0;
	if (s->tlong)
		return reject(s, 400, "absolute-form request target too long");
	s->target[s->tlen] = '\0';
	if ((u = evhttp_uri_parse_with_flags(s->target, EVHTTP_URI_NONCONFORMANT)) == NULL)
		return reject(s, 400, "malformed request target");
	evhttp_uri_free(u);
	return 0;
}

/* One byte; returns 0 to go on, 1 when the byte ended a request, -1 on a
 * violation (status and reason set). */
static int
scan_byte(struct edge_scan *s, unsigned char c)
{
	if (s->phase == EDGE_REQLINE || s->phase == EDGE_HEAD || s->phase == EDGE_TRAILER) {
		if (++s->head_bytes > s->max_head)
			return reject(s, 431, "request head too large");
	}
	switch (s->st) {
	case ST_REQ_START:
		s->in_request = 1;
		s->req_start = s->line_start = s->pos;
		s->phase = EDGE_REQLINE;
		s->head_bytes = 1;
		if (!is_tchar(c))
			return reject(s, 400, "malformed request line");
		s->method[0] = (char)c;
		s->mlen = 1;
		s->st = ST_METHOD;
		return 0;
	case ST_METHOD:
		if (c == ' ') {
			s->method[s->mlen] = '\0';
			/* evhttp never closes a CONNECT connection: refuse it
			 * before evhttp reads any of it */
			if (strcmp(s->method, "CONNECT") == 0)
				return reject(s, 400, "CONNECT is not supported");
			s->has_body = method_has_body(s->method);
			s->st = ST_TARGET0;
			return 0;
		}
		if (!is_tchar(c) || s->mlen + 1 >= sizeof(s->method))
			return reject(s, 400, "malformed request line");
		s->method[s->mlen++] = (char)c;
		return 0;
	case ST_TARGET0:
	case ST_TARGET:
		if (c == ' ' && s->st == ST_TARGET) {
			s->st = ST_VERSION;
			s->n = 0;
			return target_done(s);
		}
		if (c <= 0x20 || c >= 0x7f)
			return reject(s, 400, "malformed request line");
		if (s->st == ST_TARGET0)
			s->tlen = s->tlong = 0;
		if (s->tlen + 1 < sizeof(s->target))
			s->target[s->tlen++] = (char)c;
		else
			s->tlong = 1;
		s->st = ST_TARGET;
		return 0;
	case ST_VERSION: {
		static const char v[] = "HTTP/1.";
		int digit = c >= '0' && c <= '9';
		if ((s->n == 5 || s->n == 7) && digit && c != '1' && !(s->n == 7 && c == '0'))
			return reject(s, 505, "HTTP version not supported");
		if (s->n < 7 ? c != (unsigned char)v[s->n] : s->n == 7 ? !digit : c != '\r')
			return reject(s, 400, "malformed request line");
		if (s->n == 7)
			s->minor = c - '0';
		if (s->n > 7)
			s->st = ST_RL_LF;
		s->n++;
		return 0;
	}
	case ST_RL_LF:
		if (c != '\n')
			return reject(s, 400, "malformed request line");
		s->phase = EDGE_HEAD;
		line_begin(s);
		return 0;
	case ST_LINE_START:
		if (c == '\r') {
			s->st = ST_END_LF;
			return 0;
		}
		if (c == ' ' || c == '\t')
			/* Section 3.2.4: obs-fold in a request is refused. */
			return reject(s, 400, "obsolete line folding");
		if (!is_tchar(c))
			return reject(s, 400, "malformed header field");
		s->name[0] = (char)c;
		s->nlen = 1;
		s->st = ST_NAME;
		return 0;
	case ST_NAME:
		if (c == ':') {
			s->name[s->nlen < sizeof(s->name) ? s->nlen : sizeof(s->name) - 1] = '\0';
			s->st = ST_VALUE;
			return 0;
		}
		/* Section 3.2.4: no whitespace between name and colon. */
		if (!is_tchar(c))
			return reject(s, 400, "malformed header field");
		if (s->nlen + 1 < sizeof(s->name))
			s->name[s->nlen] = (char)c;
		else
			s->nlong = 1;
		s->nlen++;
		return 0;
	case ST_VALUE:
		if (c == '\r') {
			s->val[s->vlen < sizeof(s->val) ? s->vlen : sizeof(s->val) - 1] = '\0';
			s->st = ST_HL_LF;
			return 0;
		}
		if (c != '\t' && (c < 0x20 || c == 0x7f))
			/* bare LF and other controls: section 3.5 lets a
			 * server accept a bare LF; evhttp would, we do not */
			return reject(s, 400, "malformed header field");
		if (s->vlen + 1 < sizeof(s->val))
			s->val[s->vlen] = (char)c;
		else
			s->vlong = 1;
		s->vlen++;
		return 0;
	case ST_HL_LF:
		if (c != '\n')
			return reject(s, 400, "malformed header field");
		if (header_line(s) < 0)
			return -1;
		line_begin(s);
		return 0;
	case ST_END_LF:
		if (c != '\n')
			return reject(s, 400, "malformed header field");
		if (s->phase == EDGE_TRAILER)
			return 1;
		return head_end(s); /* 1: no body, the request is complete */
	case ST_BODY:
		/* handled in edge_scan_feed, a run at a time */
		return 0;
	case ST_CHUNK_SIZE: {
		int h = fgw_hexval(c);
		if (c == '\r' && s->hexdigits > 0) {
			s->st = ST_CHUNK_SIZE_LF;
			return 0;
		}
		/* No chunk extensions and no padding: evhttp cannot parse
		 * extensions, and its strtoll would take "0x", "+" and
		 * blanks that section 4.1 does not. */
		if (h < 0)
			return reject(s, 400, "invalid chunk size");
		if (++s->hexdigits > 15)
			return reject(s, 400, "invalid chunk size");
		s->n = s->n * 16 + (uint64_t)h;
		return 0;
	}
	case ST_CHUNK_SIZE_LF:
		if (c != '\n')
			return reject(s, 400, "invalid chunk size");
		if (s->n == 0) {
			s->phase = EDGE_TRAILER;
			line_begin(s);
			return 0;
		}
		s->body_total += s->n;
		if (s->body_total > s->max_body)
			return reject(s, 413, "request body too large");
		s->phase = EDGE_CHUNK_DATA;
		s->st = ST_CHUNK_DATA;
		return 0;
	case ST_CHUNK_DATA:
		return 0; /* handled in edge_scan_feed */
	case ST_CHUNK_CR:
		if (c != '\r')
			return reject(s, 400, "chunk data not followed by CRLF");
		s->st = ST_CHUNK_LF;
		return 0;
	case ST_CHUNK_LF:
		if (c != '\n')
			return reject(s, 400, "chunk data not followed by CRLF");
		s->st = ST_CHUNK_SIZE;
		s->line_start = s->pos + 1;
		s->n = 0;
		s->hexdigits = 0;
		return 0;
	default:
		return -1;
	}
}

int
edge_scan_feed(struct edge_scan *s, const unsigned char *p, size_t n, size_t *used)
{
	size_t i = 0;
	int r;

	if (s->st == ST_DEAD) {
		*used = 0;
		return EDGE_REJECT;
	}
	while (i < n) {
		if (s->st == ST_BODY || s->st == ST_CHUNK_DATA) {
			uint64_t take = n - i < s->n ? n - i : s->n;
			i += take;
			s->pos += take;
			s->n -= take;
			if (s->n > 0)
				break;
			if (s->st == ST_BODY) {
				request_done(s);
			} else {
				s->phase = EDGE_CHUNK;
				s->line_start = s->pos;
				s->st = ST_CHUNK_CR;
			}
			continue;
		}
		r = scan_byte(s, p[i]);
		if (r < 0) {
			*used = i;
			return EDGE_REJECT;
		}
		i++;
		s->pos++;
		if (r == 1)
			request_done(s);
	}
	*used = i;
	return EDGE_NEED_MORE;
}

/* ---- connections --------------------------------------------------------- */

struct edge_conn {
	struct edge_conn *prev, *next;
	struct reactor *rx;
	struct bufferevent *bev; /* we hold one reference */
	struct evbuffer_cb_entry *in_cb, *out_cb;
	struct edge_scan scan;
	uint64_t base;      /* stream offset of the input's first byte */
	int64_t head_since; /* waiting for a head since (0: not) */
	int64_t idle_since; /* last activity */
	int flagged;        /* evhttp connection flags set */
	int guard;          /* inside our own buffer surgery */
	int dead;           /* rejected: nothing more is read */
	int reject_next;    /* the next request evhttp dispatches
	                                    is the refused one */
	int status;         /* and its answer */
	char reason[64];
	int close_now;     /* the sweep closes it */
	uint64_t keep_end; /* when dead: stream offset kept */
};

/* The sweep also releases connections evhttp has freed: their
 * descriptors stay open until then (after evhttp's shutdown), so the
 * period bounds how many a busy server holds extra. */
#define SWEEP_MS 100

/* Drops the buffer's bytes from stream offset `end` on. */
static int
cut_tail(struct edge_conn *c, struct evbuffer *in, uint64_t end)
{
	size_t len = evbuffer_get_length(in), keep;
	struct evbuffer *tmp;
	int r = -1;

	if (end < c->base || end - c->base > len)
		return -1;
	keep = (size_t)(end - c->base);
	if (keep == len)
		return 0;
	if ((tmp = evbuffer_new()) == NULL)
		return -1;
	c->guard = 1;
	if (evbuffer_remove_buffer(in, tmp, keep) == (int)keep &&
	    evbuffer_drain(in, len - keep) == 0 && evbuffer_add_buffer(in, tmp) == 0)
		r = 0;
	c->guard = 0;
	evbuffer_free(tmp);
	return r;
}

/* Replaces everything from the offending request (or line) on with an
 * ending that evhttp frames as one request carrying EDGE_REJECT_HEADER. */
static void
conn_reject(struct edge_conn *c, struct evbuffer *in)
{
	struct edge_scan *s = &c->scan;
	char inj[256], marker[128];
	uint64_t cut;
	int n, m;

	log_debug("request refused with %d: %s", s->status, s->reason);
	m = snprintf(marker, sizeof(marker),
	             EDGE_REJECT_HEADER ": %d %s\r\nConnection: close\r\n", s->status,
	             s->reason);
	if (m < 0 || (size_t)m >= sizeof(marker))
		goto fail;
	if (s->phase == EDGE_REQLINE || c->base <= s->req_start) {
		/* evhttp has read nothing of it (earlier requests may still
		 * wait in the buffer): a whole request instead */
		cut = s->req_start;
		n = snprintf(inj, sizeof(inj), "GET / HTTP/1.1\r\n%s\r\n", marker);
	} else if (s->phase == EDGE_HEAD) {
		/* evhttp read the first lines: end the head, and give it the
		 * body its headers so far announce */
		cut = s->line_start;
		n = snprintf(inj, sizeof(inj), "%s\r\n%s", marker,
		             s->has_body && s->seen_te ? "0\r\n\r\n" : "");
	} else if (s->phase == EDGE_CHUNK || s->phase == EDGE_TRAILER) {
		/* evhttp is reading this request's body, so every earlier one
		 * has been dispatched: the next dispatch is this request. Its
		 * trailer cannot carry the marker (evhttp drops trailer
		 * fields), so end the body and flag the connection. evhttp
		 * skips an empty line where it wants a chunk size. */
		cut = s->line_start;
		n = snprintf(inj, sizeof(inj), "%s\r\n",
		             s->phase == EDGE_CHUNK ? "\r\n0\r\n" : "");
		c->reject_next = 1;
		c->status = s->status;
		fgw_strlcpy(c->reason, s->reason, sizeof(c->reason));
		c->rx->edge_rejects++;
	} else {
		goto fail;
	}
	if (n < 0 || (size_t)n >= sizeof(inj) || cut_tail(c, in, cut) != 0)
		goto fail;
	c->guard = 1;
	if (evbuffer_add(in, inj, (size_t)n) != 0) {
		c->guard = 0;
		goto fail;
	}
	if (s->phase == EDGE_HEAD && cut != s->req_start && s->has_body && !s->seen_te &&
	    s->seen_cl && s->cl > 0) {
		/* the Content-Length evhttp already read; at most max_body */
		char pad[512];
		uint64_t left = s->cl;
		memset(pad, ' ', sizeof(pad));
		while (left > 0) {
			size_t k = left < sizeof(pad) ? (size_t)left : sizeof(pad);
			if (evbuffer_add(in, pad, k) != 0) {
				c->guard = 0;
				goto fail;
			}
			left -= k;
		}
	}
	c->guard = 0;
	c->dead = 1;
	c->keep_end = c->base + evbuffer_get_length(in);
	return;
fail:
	/* Cannot hand evhttp a clean ending: close without an answer. */
	c->dead = 1;
	c->close_now = 1;
	c->keep_end = c->base;
	(void)cut_tail(c, in, c->base);
}

/* evhttp frees a connection's bufferevent with bufferevent_free, which
 * clears its callbacks; our reference keeps the object readable. */
static int
evhttp_released(struct edge_conn *c)
{
	bufferevent_event_cb ecb = NULL;
	bufferevent_getcb(c->bev, NULL, NULL, &ecb, NULL);
	return ecb == NULL;
}

static void
in_cb(struct evbuffer *in, const struct evbuffer_cb_info *info, void *arg)
{
	struct edge_conn *c = arg;
	struct evbuffer_ptr ptr;
	struct evbuffer_iovec vec[8];
	size_t len, used;
	uint64_t end;

	if (c->guard)
		return;
	if (evhttp_released(c)) {
		/* closed by evhttp, not yet swept: read nothing more */
		bufferevent_disable(c->bev, EV_READ);
		return;
	}
	c->base += info->n_deleted; /* evhttp reads from the front only */
	if (info->n_added == 0)
		return;
	c->idle_since = fgw_mono_ms();
	if (!c->flagged) {
		bufferevent_event_cb ecb = NULL;
		void *evcon = NULL;
		/* evhttp's callbacks carry its connection. With this flag an
		 * EOF while requests are still buffered (a client that
		 * pipelines and half-closes) does not drop them. (On a write
		 * error the flag makes evhttp try to read a response from the
		 * client; the scanner never passes a response line, so that
		 * ends in evhttp's own 400 and a close.) */
		bufferevent_getcb(c->bev, NULL, NULL, &ecb, &evcon);
		if (ecb != NULL && evcon != NULL)
			evhttp_connection_set_flags(evcon, EVHTTP_CON_READ_ON_WRITE_ERROR);
		c->flagged = 1;
	}
	if (c->dead) {
		(void)cut_tail(c, in, c->keep_end);
		return;
	}
	len = evbuffer_get_length(in);
	end = c->base + len;
	while (c->scan.pos < end) {
		int nvec, r = EDGE_NEED_MORE;
		size_t off = (size_t)(c->scan.pos - c->base);

		if (c->scan.pos < c->base ||
		    evbuffer_ptr_set(in, &ptr, off, EVBUFFER_PTR_SET) != 0 ||
		    (nvec = evbuffer_peek(in, (ev_ssize_t)(end - c->scan.pos), &ptr, vec, 8)) <=
		        0) {
			/* Cannot scan: evhttp must not parse what we did not see. */
			c->dead = 1;
			c->close_now = 1;
			c->keep_end = c->base;
			c->guard = 1;
			evbuffer_drain(in, len);
			c->guard = 0;
			return;
		}
		for (int i = 0; i < nvec && i < 8 && r == EDGE_NEED_MORE; i++) {
			size_t want = vec[i].iov_len;
			if (want > end - c->scan.pos)
				want = (size_t)(end - c->scan.pos);
			r = edge_scan_feed(&c->scan, vec[i].iov_base, want, &used);
		}
		if (r == EDGE_REJECT) {
			conn_reject(c, in);
			return;
		}
	}
	if (c->scan.in_request && !c->scan.head_done) {
		if (c->head_since == 0)
			c->head_since = fgw_mono_ms();
	} else {
		c->head_since = 0;
	}
}

static void
out_cb(struct evbuffer *out, const struct evbuffer_cb_info *info, void *arg)
{
	struct edge_conn *c = arg;
	(void)out;
	if (info->n_deleted > 0 || info->n_added > 0)
		c->idle_since = fgw_mono_ms();
}

static void
conn_release(struct edge_conn *c)
{
	struct reactor *rx = c->rx;

	if (c->reject_next)
		rx->edge_rejects--;
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		rx->edge_conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	if (c->in_cb != NULL)
		evbuffer_remove_cb_entry(bufferevent_get_input(c->bev), c->in_cb);
	if (c->out_cb != NULL)
		evbuffer_remove_cb_entry(bufferevent_get_output(c->bev), c->out_cb);
	bufferevent_disable(c->bev, EV_READ | EV_WRITE);
	bufferevent_decref(c->bev);
	free(c);
}

static void
sweep_cb(evutil_socket_t fd, short what, void *arg)
{
	struct reactor *rx = arg;
	const struct fgw_config *cfg = &rx->gw->cfg;
	int64_t now = fgw_mono_ms();
	struct edge_conn *c, *next;
	(void)fd;
	(void)what;

	for (c = rx->edge_conns; c != NULL; c = next) {
		int busy, expired = 0;

		next = c->next;
		if (evhttp_released(c)) {
			conn_release(c);
			continue;
		}
		/* The clocks run only while the server waits for the client:
		 * not while a request is being handled or answered. */
		busy = !(bufferevent_get_enabled(c->bev) & EV_READ) ||
		       evbuffer_get_length(bufferevent_get_output(c->bev)) > 0;
		if (c->close_now) {
			expired = 1;
		} else if (busy) {
			if (c->head_since != 0)
				c->head_since = now;
			c->idle_since = now;
		} else if (c->head_since != 0 && now - c->head_since > cfg->header_timeout_ms) {
			log_debug("request head not complete in %lld ms: closing",
			          cfg->header_timeout_ms);
			expired = 1;
		} else if (!c->scan.in_request &&
		           evbuffer_get_length(bufferevent_get_input(c->bev)) == 0 &&
		           now - c->idle_since > cfg->keepalive_timeout_ms) {
			expired = 1;
		}
		if (!expired)
			continue;
		/* evhttp closes the connection as on its own read timeout. */
		bufferevent_trigger_event(c->bev, BEV_EVENT_READING | BEV_EVENT_TIMEOUT, 0);
		if (evhttp_released(c))
			conn_release(c);
	}
}

struct bufferevent *
edge_bevcb(struct event_base *base, void *arg)
{
	struct reactor *rx = arg;
	struct gateway *gw = rx->gw;
	struct bufferevent *bev = NULL;
	struct edge_conn *c = NULL;

	if (gw->tls != NULL) {
		SSL *ssl = tls_server_conn_new(gw->tls);
		if (ssl == NULL)
			return NULL;
		bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
		                                     BEV_OPT_CLOSE_ON_FREE);
		if (bev == NULL)
			SSL_free(ssl);
	} else {
		bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
	}
	if (bev == NULL || (c = calloc(1, sizeof(*c))) == NULL)
		goto fail;
	c->rx = rx;
	c->bev = bev;
	edge_scan_init(&c->scan, (uint64_t)gw->cfg.max_header_bytes,
	               (uint64_t)gw->cfg.max_body_bytes * 4);
	c->idle_since = fgw_mono_ms();
	if ((c->in_cb = evbuffer_add_cb(bufferevent_get_input(bev), in_cb, c)) == NULL ||
	    (c->out_cb = evbuffer_add_cb(bufferevent_get_output(bev), out_cb, c)) == NULL)
		goto fail;
	bufferevent_incref(bev);
	c->next = rx->edge_conns;
	if (c->next != NULL)
		c->next->prev = c;
	rx->edge_conns = c;
	return bev;
fail:
	/* Out of memory: evhttp then makes a plain bufferevent itself and
	 * serves this connection without the scanner (libevent 2.1 gives
	 * a bevcb no way to refuse one). */
	log_error("out of memory for a connection");
	if (c != NULL) {
		if (c->in_cb != NULL)
			evbuffer_remove_cb_entry(bufferevent_get_input(bev), c->in_cb);
		free(c);
	}
	if (bev != NULL)
		bufferevent_free(bev);
	return NULL;
}

int
edge_take_reject(struct reactor *rx, struct evhttp_request *req, const char **reason)
{
	const char *v = evhttp_find_header(evhttp_request_get_input_headers(req),
	                                   EDGE_REJECT_HEADER);
	struct evhttp_connection *evcon;
	struct bufferevent *bev;
	char *end = NULL;
	long status;

	if (v != NULL) {
		status = strtol(v, &end, 10);
		if (status < 400 || status > 599 || end == NULL)
			status = 400;
		while (end != NULL && *end == ' ')
			end++;
		*reason = end != NULL && *end != '\0' ? end : "malformed request";
		return (int)status;
	}
	/* Rare (a broken chunked body): a walk over this reactor's
	 * connections only while one is flagged. */
	if (rx->edge_rejects == 0 || (evcon = evhttp_request_get_connection(req)) == NULL ||
	    (bev = evhttp_connection_get_bufferevent(evcon)) == NULL)
		return 0;
	for (struct edge_conn *c = rx->edge_conns; c != NULL; c = c->next) {
		if (c->bev != bev || !c->reject_next)
			continue;
		c->reject_next = 0;
		rx->edge_rejects--;
		*reason = c->reason; /* lives as long as the connection */
		return c->status;
	}
	return 0;
}

int
edge_reactor_start(struct reactor *rx)
{
	struct timeval tv = { 0, SWEEP_MS * 1000 };
	if ((rx->edge_timer = event_new(rx->base, -1, EV_PERSIST, sweep_cb, rx)) == NULL ||
	    event_add(rx->edge_timer, &tv) != 0)
		return FGW_ERR_NOMEM;
	return FGW_OK;
}

void
edge_reactor_stop(struct reactor *rx)
{
	if (rx->edge_timer != NULL) {
		event_free(rx->edge_timer);
		rx->edge_timer = NULL;
	}
	while (rx->edge_conns != NULL)
		conn_release(rx->edge_conns);
}
