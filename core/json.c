/*
 * core/json.c — the one strict JSON parser for untrusted input (request
 * bodies, processor replies, webhooks, files): cJSON checks neither UTF-8
 * nor what follows the value, so those checks come first and last here.
 */
#include <stddef.h>

#include <cjson/cJSON.h>

#include "core/json.h"

/* JSON text must be UTF-8 (RFC 8259) with no raw control characters
 * except whitespace between tokens; cJSON checks neither. */
static int
json_text_ok(const unsigned char *p, size_t len)
{
	size_t i = 0;
	while (i < len) {
		unsigned char c = p[i];
		size_t n;
		unsigned int cp;
		if (c < 0x80) {
			if (c < 0x20 && c != '\t' && c != '\n' && c != '\r')
				return 0;
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			n = 1;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			n = 2;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			n = 3;
			cp = c & 0x07;
		} else {
			return 0;
		}
		if (i + n >= len)
			return 0;
		for (size_t k = 1; k <= n; k++) {
			if (i + k >= len || (p[i + k] & 0xc0) != 0x80)
				return 0;
			cp = (cp << 6) | (p[i + k] & 0x3f);
		}
		/* overlong, surrogates, beyond U+10FFFF */
		if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return 0;
		i += n + 1;
	}
	return 1;
}

/* Parses exactly len bytes as one JSON value: nothing but whitespace may
 * follow it. */
cJSON *
fgw_json_parse_strict(const char *text, size_t len)
{
	const char *end = NULL;
	cJSON *v;
	if (text == NULL || len == 0 || !json_text_ok((const unsigned char *)text, len))
		return NULL;
	v = cJSON_ParseWithLengthOpts(text, len, &end, 0);
	if (v == NULL)
		return NULL;
	while (end < text + len && (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r'))
		end++;
	if (end != text + len) {
		cJSON_Delete(v);
		return NULL;
	}
	return v;
}
