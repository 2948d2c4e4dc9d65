/*
 * core/json.h — strict JSON parsing for untrusted input.
 *
 * One parser for every body, processor reply, webhook and file: RFC 8259
 * exactly (see core/json.c for the few limits it adds), building an
 * ordinary cJSON tree so callers read it with cJSON's accessors. Numbers
 * that must be integers (amounts, counts, months) are read only through
 * fgw_json_int, which refuses 1.0, 1e3 and 0.99999999999999999.
 */
#ifndef FGW_CORE_JSON_H
#define FGW_CORE_JSON_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

/* Deepest nesting of arrays and objects the parser accepts. */
#define FGW_JSON_MAX_DEPTH 64

/* Why a text was refused: the byte offset of the first offending byte (or
 * of the end of the text when it ended early) and a static reason that
 * never quotes the input, so it is safe to put in a response or a log. */
struct fgw_json_error {
	size_t offset;
	const char *reason;
};

/* Parses exactly len bytes (not necessarily NUL-terminated) as one JSON
 * value by RFC 8259, and refuses besides: duplicate object keys, NUL in any
 * string or key (escaped or raw), numbers beyond the double range, nesting
 * deeper than FGW_JSON_MAX_DEPTH, a byte-order mark. Returns the tree
 * (free with cJSON_Delete), or NULL with *err filled when err is not NULL. */
cJSON *fgw_json_parse(const char *text, size_t len, struct fgw_json_error *err);

/* fgw_json_parse without the error detail. */
cJSON *fgw_json_parse_strict(const char *text, size_t len);

/* Writes "invalid JSON at byte N: reason" into buf. */
void fgw_json_error_str(const struct fgw_json_error *err, char *buf, size_t cap);

/* Reads an integer: item must be a number that fgw_json_parse read from an
 * integer token (no fraction, no exponent) of magnitude at most 2^53-1, so
 * its value is exact, and within [min, max]. Returns 0 with *out set, or
 * FGW_ERR_INVALID (item NULL, not a number, not an integer token, or out of
 * range). Numbers built with cJSON_CreateNumber are not integer tokens. */
int fgw_json_int(const cJSON *item, int64_t min, int64_t max, int64_t *out);

/* A JSON object written straight into a growing buffer, for documents
 * built on every payment (audit details, the answer): the same bytes as
 * cJSON_PrintUnformatted of a tree with the same members (strings escaped
 * as cJSON escapes them, integers as it prints them), without a node and
 * a string copy per member. Members are appended in call order; after an
 * allocation failure every call is a no-op and fgw_jw_end returns NULL. */
struct fgw_jw {
	char *buf;
	size_t len, cap;
	int failed;
	int comma; /* a member precedes: the next one needs a comma */
};

void fgw_jw_begin(struct fgw_jw *w);
/* A string member; none when val is NULL (as cJSON_AddStringToObject). */
void fgw_jw_str(struct fgw_jw *w, const char *key, const char *val);
void fgw_jw_int(struct fgw_jw *w, const char *key, int64_t v);
/* A member whose value is JSON text already (copied as is). */
void fgw_jw_raw(struct fgw_jw *w, const char *key, const char *json);
/* "key":{ ... } */
void fgw_jw_open(struct fgw_jw *w, const char *key);
void fgw_jw_close(struct fgw_jw *w);
/* Closes the object: the malloc'ed text, or NULL (nothing to free). */
char *fgw_jw_end(struct fgw_jw *w);

#endif
