/*
 * tests/unit/test_edge.c — the HTTP edge scanner (gateway/edge.c): which
 * request streams it accepts, where it stops, and that the answer does
 * not depend on how the stream is split into reads.
 */
#include <stdint.h>
#include <string.h>

#include "gateway/edge.h"
#include "tt.h"

#define MAX_HEAD 1024
#define MAX_BODY 4096

struct scan_case {
	const char *name;
	const char *input;
	int status;        /* 0: accepted */
	uint64_t requests; /* complete requests before the end or the stop */
	int phase;         /* when refused: the scanner's phase */
};

#define POST "POST /v1/transactions HTTP/1.1\r\nHost: a\r\n"
#define GET "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"

static const struct scan_case cases_tab[] = {
	{ "get", GET, 0, 1, 0 },
	{ "pipelined gets", GET GET GET, 0, 3, 0 },
	{ "content-length body", POST "Content-Length: 2\r\n\r\n{}" GET, 0, 2, 0 },
	{ "content-length OWS", POST "Content-Length:  2 \r\n\r\n{}", 0, 1, 0 },
	{ "chunked body",
	  POST
	  "Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\nA\r\n0123456789\r\n0\r\n\r\n" GET,
	  0, 2, 0 },
	{ "chunked trailer", POST "Transfer-Encoding: Chunked\r\n\r\n0\r\nX-T: 1\r\n\r\n", 0,
	  1, 0 },
	{ "incomplete head", POST "Content-Le", 0, 0, 0 },
	{ "head without body", "HEAD / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", 0,
	  1, 0 },
	{ "http/1.0", "GET / HTTP/1.0\r\n\r\n", 0, 1, 0 },
	{ "two content-lengths", POST "Content-Length: 2\r\nContent-Length: 3\r\n\r\n", 400,
	  0, EDGE_HEAD },
	{ "content-length list", POST "Content-Length: 2, 2\r\n\r\n", 400, 0, EDGE_HEAD },
	{ "plus content-length", POST "Content-Length: +2\r\n\r\n", 400, 0, EDGE_HEAD },
	{ "negative content-length", POST "Content-Length: -1\r\n\r\n", 400, 0, EDGE_HEAD },
	{ "tab in content-length", POST "Content-Length:\t2\r\n\r\n", 400, 0, EDGE_HEAD },
	{ "19 digit content-length", POST "Content-Length: 1000000000000000000\r\n\r\n", 400,
	  0, EDGE_HEAD },
	{ "content-length over the body limit", POST "Content-Length: 4097\r\n\r\n", 413, 0,
	  EDGE_HEAD },
	{ "cl and te", POST "Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n", 400, 0,
	  EDGE_HEAD },
	{ "te twice", POST "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
	  400, 0, EDGE_HEAD },
	{ "gzip", POST "Transfer-Encoding: gzip\r\n\r\n", 400, 0, EDGE_HEAD },
	{ "chunked then gzip", POST "Transfer-Encoding: chunked, gzip\r\n\r\n", 400, 0,
	  EDGE_HEAD },
	{ "gzip then chunked", POST "Transfer-Encoding: gzip, chunked\r\n\r\n", 501, 0,
	  EDGE_HEAD },
	{ "non-hex chunk size", POST "Transfer-Encoding: chunked\r\n\r\nzz\r\n", 400, 0,
	  EDGE_CHUNK },
	{ "0x chunk size", POST "Transfer-Encoding: chunked\r\n\r\n0x2\r\n", 400, 0,
	  EDGE_CHUNK },
	{ "chunk extension", POST "Transfer-Encoding: chunked\r\n\r\n2;a=b\r\n", 400, 0,
	  EDGE_CHUNK },
	{ "16 hex digits", POST "Transfer-Encoding: chunked\r\n\r\n0000000000000002\r\n", 400,
	  0, EDGE_CHUNK },
	{ "chunks over the body limit", POST "Transfer-Encoding: chunked\r\n\r\n1001\r\n",
	  413, 0, EDGE_CHUNK },
	{ "chunk data without crlf", POST "Transfer-Encoding: chunked\r\n\r\n2\r\n{}XX", 400,
	  0, EDGE_CHUNK },
	{ "framing field in trailer",
	  POST "Transfer-Encoding: chunked\r\n\r\n0\r\nContent-Length: 5\r\n\r\n", 400, 0,
	  EDGE_TRAILER },
	{ "obs-fold", POST "X-A: b\r\n c\r\n\r\n", 400, 0, EDGE_HEAD },
	{ "space before colon", POST "Content-Length : 2\r\n\r\n", 400, 0, EDGE_HEAD },
	{ "bare lf in head", POST "X-A: b\nX-B: c\r\n\r\n", 400, 0, EDGE_HEAD },
	{ "bare lf request line", "GET / HTTP/1.1\n\r\n", 400, 0, EDGE_REQLINE },
	{ "leading empty line", "\r\n" GET, 400, 0, EDGE_REQLINE },
	{ "reserved header", POST EDGE_REJECT_HEADER ": 200\r\n\r\n", 400, 0, EDGE_HEAD },
	{ "body on head", "HEAD / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n", 400, 0,
	  EDGE_HEAD },
	{ "connect", "CONNECT a:443 HTTP/1.1\r\n\r\n", 400, 0, EDGE_REQLINE },
	{ "two hosts", "GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n", 400, 0, EDGE_HEAD },
	{ "no host", "GET / HTTP/1.1\r\n\r\n", 400, 0, EDGE_HEAD },
	{ "host in trailer", POST "Transfer-Encoding: chunked\r\n\r\n0\r\nHost: b\r\n\r\n",
	  400, 0, EDGE_TRAILER },
	{ "http/2 preface", "PRI * HTTP/2.0\r\n\r\n", 505, 0, EDGE_REQLINE },
	{ "response line", "HTTP/1.1 200 OK\r\n\r\n", 400, 0, EDGE_REQLINE },
	{ "smuggled second request is refused, first kept",
	  GET POST "Content-Length: 2\r\nContent-Length: 40\r\n\r\n", 400, 1, EDGE_HEAD },
	{ NULL, NULL, 0, 0, 0 },
};

/* Feeds input in pieces of `step` bytes (0: all at once). */
static int
run(const struct scan_case *c, size_t step, struct edge_scan *s, size_t *total_used)
{
	const unsigned char *p = (const unsigned char *)c->input;
	size_t n = strlen(c->input), off = 0, used;
	int r = EDGE_NEED_MORE;

	edge_scan_init(s, MAX_HEAD, MAX_BODY);
	*total_used = 0;
	while (off < n && r == EDGE_NEED_MORE) {
		size_t k = step == 0 || n - off < step ? n - off : step;
		r = edge_scan_feed(s, p + off, k, &used);
		*total_used += used;
		off += k;
	}
	return r;
}

static int
test_table(void)
{
	static const size_t steps[] = { 0, 1, 2, 7 };

	TT_BEGIN;

	for (const struct scan_case *c = cases_tab; c->name != NULL; c++) {
		for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
			struct edge_scan s;
			size_t used;
			int r = run(c, steps[i], &s, &used);
			if (c->status == 0) {
				if (r != EDGE_NEED_MORE || s.requests != c->requests ||
				    used != strlen(c->input)) {
					fprintf(stderr,
					        "  %s (step %zu): r=%d status=%d (%s) requests=%llu\n",
					        c->name, steps[i], r, s.status, s.reason ? s.reason : "",
					        (unsigned long long)s.requests);
					tt_fail = 1;
				}
			} else if (r != EDGE_REJECT || s.status != c->status ||
			           s.requests != c->requests || (int)s.phase != c->phase ||
			           s.reason == NULL) {
				fprintf(stderr,
				        "  %s (step %zu): r=%d status=%d requests=%llu phase=%d\n",
				        c->name, steps[i], r, s.status, (unsigned long long)s.requests,
				        (int)s.phase);
				tt_fail = 1;
			}
		}
	}
	TT_END;
}

/* Where the scanner stops is what the server cuts at: the offending
 * request's first byte, or the offending line's. */
static int
test_offsets(void)
{
	struct edge_scan s;
	size_t used;
	const char *in = GET POST "Content-Length: 2\r\nContent-Length: 3\r\n\r\n";
	const char *second = strstr(in, "POST");
	const char *line = strstr(in, "Content-Length: 3");

	TT_BEGIN;
	edge_scan_init(&s, MAX_HEAD, MAX_BODY);
	CHECK_EQ_INT(edge_scan_feed(&s, (const unsigned char *)in, strlen(in), &used),
	             EDGE_REJECT);
	CHECK_EQ_INT(s.req_start, second - in);
	CHECK_EQ_INT(s.line_start, line - in);
	CHECK_EQ_INT(s.seen_cl, 1);
	CHECK_EQ_INT(s.cl, 2);
	CHECK(used < strlen(in));
	/* once refused, always refused */
	CHECK_EQ_INT(edge_scan_feed(&s, (const unsigned char *)"GET", 3, &used), EDGE_REJECT);
	CHECK_EQ_INT(used, 0);
end:
	TT_END;
}

static int
test_head_limit(void)
{
	struct edge_scan s;
	size_t used;
	char big[MAX_HEAD + 64];

	TT_BEGIN;
	memset(big, 'a', sizeof(big));
	memcpy(big, "GET / HTTP/1.1\r\nX-Big: ", 23);
	edge_scan_init(&s, MAX_HEAD, MAX_BODY);
	CHECK_EQ_INT(edge_scan_feed(&s, (const unsigned char *)big, sizeof(big), &used),
	             EDGE_REJECT);
	CHECK_EQ_INT(s.status, 431);
	CHECK_EQ_INT(used, MAX_HEAD);
end:
	TT_END;
}

static const struct tt_case cases[] = {
	{ "table", test_table },
	{ "offsets", test_offsets },
	{ "head_limit", test_head_limit },
	{ NULL, NULL },
};

TT_MAIN(cases)
