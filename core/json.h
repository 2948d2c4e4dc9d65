/*
 * core/json.h — strict JSON parsing for untrusted input.
 */
#ifndef FGW_CORE_JSON_H
#define FGW_CORE_JSON_H

#include <stddef.h>

#include <cjson/cJSON.h>

/* Parses exactly len bytes (not necessarily NUL-terminated) as one JSON
 * value: valid UTF-8 (no overlong forms or surrogates), no raw control
 * characters other than whitespace, nothing but whitespace after the
 * value. NULL when any of that fails (or text is NULL / empty). */
cJSON *fgw_json_parse_strict(const char *text, size_t len);

#endif
