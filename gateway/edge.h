/*
 * gateway/edge.h — the HTTP edge: a strict scanner for the request
 * stream of one connection, and what the server hangs on each connection
 * to enforce it (framing errors, header and idle deadlines).
 *
 * libevent's evhttp (2.1) parses leniently: the first of several
 * Content-Length headers wins, "+5" is a length, chunk sizes go through
 * strtoll (so "0x5" and " 5" pass), obsolete line folding and bare LF
 * are accepted, a non-hex chunk size is answered 413. Two parsers that
 * disagree about where a message ends is request smuggling (RFC 7230
 * section 9.5), so every byte a client sends passes this scanner before
 * evhttp parses it; the scanner accepts only messages whose length is
 * unambiguous under RFC 7230 section 3.3.3 and that evhttp frames the same
 * way.
 */
#ifndef FGW_GATEWAY_EDGE_H
#define FGW_GATEWAY_EDGE_H

#include <stddef.h>
#include <stdint.h>

/* Where in a message the scanner is (what a cut there means to evhttp). */
enum edge_phase {
	EDGE_REQLINE = 0, /* before or inside a request line */
	EDGE_HEAD,        /* inside the header block */
	EDGE_CHUNK,       /* a chunk-size line, or the CRLF after chunk data */
	EDGE_CHUNK_DATA,
	EDGE_TRAILER, /* the trailer section of a chunked body */
	EDGE_BODY,    /* a Content-Length body */
};

struct edge_scan {
	/* limits, set before the first edge_scan_feed */
	uint64_t max_head; /* bytes in a request head (request line included) */
	uint64_t max_body; /* bytes in a body (Content-Length or chunk total) */

	/* results */
	int status;          /* when rejected: 400, 413, 417, 431 or 501 */
	const char *reason;  /* when rejected: a constant phrase */
	uint64_t requests;   /* complete requests scanned */
	uint64_t pos;        /* stream offset of the next byte */
	uint64_t req_start;  /* stream offset of the current request */
	uint64_t line_start; /* stream offset of the current line or element */
	enum edge_phase phase;
	int in_request;       /* some byte of the current request was seen */
	int head_done;        /* the current request's head is complete */
	int has_body;         /* method whose body evhttp reads */
	int seen_cl, seen_te; /* among the accepted header lines */
	int seen_host;
	int minor; /* HTTP/1.minor */
	uint64_t cl;

	/* private */
	int st;
	uint64_t n, head_bytes, body_total;
	int hexdigits;
	char method[16];
	size_t mlen;
	char name[32];
	size_t nlen;
	char val[40];
	size_t vlen;
	char target[512]; /* an absolute-form request target, to parse */
	size_t tlen;
	int tlong;
	int vlong, nlong;
};

enum {
	EDGE_NEED_MORE = 0, /* everything fed was accepted */
	EDGE_REJECT = 1,    /* stopped at *used: see status, reason, phase */
};

/* Starts a scanner for a new connection. */
void edge_scan_init(struct edge_scan *s, uint64_t max_head, uint64_t max_body);
/* Feeds the next n bytes of the stream. Returns EDGE_NEED_MORE, or
 * EDGE_REJECT with *used the number of bytes accepted before the
 * offending one; once rejected, every later call rejects at 0. */
int edge_scan_feed(struct edge_scan *s, const unsigned char *p, size_t n, size_t *used);

/* The header a synthetic request carries to ask routes_handle for a
 * framing error answer; the scanner refuses it from clients. */
#define EDGE_REJECT_HEADER "Fgw-Edge-Reject"

struct reactor;
struct bufferevent;
struct event_base;
struct evhttp_request;

/* The status (400, 413, 417, 431, 501 or 505) a request refused by the scanner
 * must be answered with, and *reason; 0 for any other request. */
int edge_take_reject(struct reactor *rx, struct evhttp_request *req, const char **reason);

/* Per reactor: the connection list and its sweep timer. */
int edge_reactor_start(struct reactor *rx);
/* Frees every connection context (after evhttp_free). */
void edge_reactor_stop(struct reactor *rx);
/* Wraps a new connection's bufferevent (plain, or TLS when ssl_bev is
 * not NULL) with the scanner; the evhttp bevcb. */
struct bufferevent *edge_bevcb(struct event_base *base, void *rx);

#endif
