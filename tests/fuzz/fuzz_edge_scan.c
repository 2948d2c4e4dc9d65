/*
 * tests/fuzz/fuzz_edge_scan.c — libFuzzer target for the HTTP edge
 * scanner (gateway/edge.c), which decides where every request on a
 * connection ends before evhttp parses it.
 *
 * The first input byte seeds the chunk sizes; the rest is a byte stream
 * from a client. It is fed once whole and once in pieces of 1..16 bytes.
 *
 * Oracle: a scanner's verdict must not depend on how TCP cut the stream
 * (a scanner that does is a smuggling gap between two reads): the same
 * verdict, the same offset of the rejection, the same count of complete
 * requests, the same status; a rejection carries a status the edge
 * answers with and a reason; accepted bytes never exceed what was fed;
 * once rejected, every later feed rejects at 0.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "gateway/edge.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define check(cond)           \
	do {                      \
		if (!(cond))          \
			__builtin_trap(); \
	} while (0)

struct verdict {
	int rc;
	uint64_t at; /* stream offset of the rejection */
	uint64_t requests;
	int status;
};

static void
run(const uint8_t *p, size_t n, unsigned seed, int pieces, struct verdict *v)
{
	struct edge_scan s;
	size_t off = 0, used = 0;
	edge_scan_init(&s, 8192, 65536);
	v->rc = EDGE_NEED_MORE;
	while (off < n) {
		size_t len = n - off;
		if (pieces) {
			seed = seed * 1103515245u + 12345u;
			len = 1 + (seed >> 16) % 16;
			if (len > n - off)
				len = n - off;
		}
		v->rc = edge_scan_feed(&s, p + off, len, &used);
		check(used <= len);
		if (v->rc == EDGE_REJECT) {
			off += used;
			break;
		}
		check(used == len);
		off += len;
	}
	v->at = off;
	v->requests = s.requests;
	v->status = v->rc == EDGE_REJECT ? s.status : 0;
	if (v->rc == EDGE_REJECT) {
		check(s.status == 400 || s.status == 413 || s.status == 417 || s.status == 431 ||
		      s.status == 501 || s.status == 505);
		check(s.reason != NULL && s.reason[0] != '\0');
		check(edge_scan_feed(&s, (const unsigned char *)"G", 1, &used) == EDGE_REJECT &&
		      used == 0);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct verdict whole, cut;
	if (size < 1)
		return 0;
	run(data + 1, size - 1, data[0], 0, &whole);
	run(data + 1, size - 1, data[0], 1, &cut);
	check(whole.rc == cut.rc);
	check(whole.at == cut.at);
	check(whole.requests == cut.requests);
	check(whole.status == cut.status);
	return 0;
}
