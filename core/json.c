/*
 * core/json.c — the one strict JSON parser for untrusted input (request
 * bodies, processor replies, webhooks, files).
 *
 * A recursive-descent parser of the RFC 8259 grammar that builds a cJSON
 * tree with cJSON's own constructors, so callers keep cJSON's accessors.
 * cJSON's parser is not used: it accepts leading zeros, "2.", invalid
 * escapes, raw control characters and cuts strings at \u0000.
 *
 * Beyond the grammar, and deliberately:
 * - duplicate object keys are refused: two readers of the same body (us,
 *   a processor, a log reader) could otherwise each see a different value;
 * - NUL is refused in every string and key: C strings would end there;
 * - a number whose value overflows a double is refused (1e400);
 * - nesting deeper than FGW_JSON_MAX_DEPTH is refused (the stack);
 * - number tokens longer than NUM_MAX bytes are refused;
 * - a byte-order mark is refused (RFC 8259 section 8.1 allows that).
 *
 * Each number remembers whether its token was an integer of exact value:
 * the INT_TOKEN bit in cJSON's type, above the 0xFF that cJSON_Is* mask
 * and clear of cJSON_IsReference / cJSON_StringIsConst, which cJSON_Delete
 * reads. Scratch copies of input are wiped: bodies carry card numbers.
 */
#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "core/err.h"
#include "core/json.h"
#include "core/util.h"

#define INT_TOKEN (1 << 12)
#define INT_EXACT_MAX 9007199254740991LL /* 2^53 - 1 */
#define NUM_MAX 512

struct jp {
	const unsigned char *p;
	size_t len;
	size_t pos;
	char *buf; /* decoded string, at most len + 1 bytes */
	size_t fail_at;
	const char *why;
};

struct key_at {
	const char *key;
	size_t at;
};

static int parse_value(struct jp *j, int depth, cJSON **out);

static int
jfail(struct jp *j, size_t at, const char *why)
{
	if (j->why == NULL) {
		j->why = why;
		j->fail_at = at;
	}
	return FGW_ERR_INVALID;
}

static void
skip_ws(struct jp *j)
{
	while (j->pos < j->len && (j->p[j->pos] == ' ' || j->p[j->pos] == '\t' ||
	                           j->p[j->pos] == '\n' || j->p[j->pos] == '\r'))
		j->pos++;
}

static int
hex4(const unsigned char *s, unsigned int *out)
{
	unsigned int v = 0;
	for (int i = 0; i < 4; i++) {
		int d = fgw_hexval(s[i]);
		if (d < 0)
			return -1;
		v = v << 4 | (unsigned int)d;
	}
	*out = v;
	return 0;
}

/* Length of the well-formed UTF-8 sequence at s (RFC 3629 table: no
 * overlong forms, no surrogates, nothing above U+10FFFF), or 0. */
static size_t
utf8_len(const unsigned char *s, size_t avail)
{
	unsigned char c = s[0], lo = 0x80, hi = 0xbf;
	size_t n;
	if (c >= 0xc2 && c <= 0xdf)
		n = 2;
	else if (c >= 0xe0 && c <= 0xef)
		n = 3;
	else if (c >= 0xf0 && c <= 0xf4)
		n = 4;
	else
		return 0;
	if (c == 0xe0)
		lo = 0xa0;
	else if (c == 0xed)
		hi = 0x9f;
	else if (c == 0xf0)
		lo = 0x90;
	else if (c == 0xf4)
		hi = 0x8f;
	if (avail < n || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t k = 2; k < n; k++)
		if (s[k] < 0x80 || s[k] > 0xbf)
			return 0;
	return n;
}

static size_t
utf8_put(char *d, unsigned int cp)
{
	if (cp < 0x80) {
		d[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		d[0] = (char)(0xc0 | (cp >> 6));
		d[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		d[0] = (char)(0xe0 | (cp >> 12));
		d[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		d[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	d[0] = (char)(0xf0 | (cp >> 18));
	d[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
	d[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
	d[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

/* A \u escape at j->pos (the backslash), one or a surrogate pair. */
static int
parse_u_escape(struct jp *j, unsigned int *cp)
{
	size_t at = j->pos;
	unsigned int hi, lo;
	if (j->len - at < 6 || hex4(j->p + at + 2, &hi) != 0)
		return jfail(j, at, "invalid \\u escape");
	if (hi >= 0xdc00 && hi <= 0xdfff)
		return jfail(j, at, "lone surrogate in \\u escape");
	if (hi >= 0xd800 && hi <= 0xdbff) {
		if (j->len - at < 12 || j->p[at + 6] != '\\' || j->p[at + 7] != 'u' ||
		    hex4(j->p + at + 8, &lo) != 0 || lo < 0xdc00 || lo > 0xdfff)
			return jfail(j, at, "lone surrogate in \\u escape");
		*cp = 0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00);
		j->pos += 12;
		return FGW_OK;
	}
	if (hi == 0)
		return jfail(j, at, "NUL in string");
	*cp = hi;
	j->pos += 6;
	return FGW_OK;
}

/* A string at j->pos (the opening quote), decoded into j->buf. */
static int
parse_string(struct jp *j, size_t *outlen)
{
	size_t n = 0;
	int r;
	j->pos++;
	for (;;) {
		unsigned char c;
		size_t u;
		if (j->pos >= j->len)
			return jfail(j, j->pos, "unterminated string");
		c = j->p[j->pos];
		if (c == '"') {
			j->pos++;
			break;
		}
		if (c == '\\') {
			unsigned int cp;
			if (j->pos + 1 >= j->len)
				return jfail(j, j->pos, "invalid escape");
			switch (j->p[j->pos + 1]) {
			case '"':
				cp = '"';
				break;
			case '\\':
				cp = '\\';
				break;
			case '/':
				cp = '/';
				break;
			case 'b':
				cp = '\b';
				break;
			case 'f':
				cp = '\f';
				break;
			case 'n':
				cp = '\n';
				break;
			case 'r':
				cp = '\r';
				break;
			case 't':
				cp = '\t';
				break;
			case 'u':
				if ((r = parse_u_escape(j, &cp)) != 0)
					return r;
				n += utf8_put(j->buf + n, cp);
				continue;
			default:
				return jfail(j, j->pos, "invalid escape");
			}
			j->buf[n++] = (char)cp;
			j->pos += 2;
			continue;
		}
		if (c == 0)
			return jfail(j, j->pos, "NUL in string");
		if (c < 0x20)
			return jfail(j, j->pos, "control character in string");
		if (c < 0x80) {
			j->buf[n++] = (char)c;
			j->pos++;
			continue;
		}
		if ((u = utf8_len(j->p + j->pos, j->len - j->pos)) == 0)
			return jfail(j, j->pos, "invalid UTF-8");
		memcpy(j->buf + n, j->p + j->pos, u);
		n += u;
		j->pos += u;
	}
	j->buf[n] = '\0';
	*outlen = n;
	return FGW_OK;
}

static int
is_digit(struct jp *j, size_t at)
{
	return at < j->len && j->p[at] >= '0' && j->p[at] <= '9';
}

/* number = [ minus ] int [ frac ] [ exp ] (RFC 8259 section 6). */
static int
parse_number(struct jp *j, cJSON **out)
{
	size_t start = j->pos, at = j->pos, n;
	int integer = 1, neg = 0, r = FGW_ERR_INVALID;
	char tok[NUM_MAX + 1], *end = NULL;
	const char *dp;
	double d;
	cJSON *v = NULL;

	if (j->p[at] == '-') {
		neg = 1;
		at++;
	}
	if (!is_digit(j, at)) {
		jfail(j, at, "digit expected in number");
		goto out;
	}
	if (j->p[at] == '0') {
		at++;
		if (is_digit(j, at)) {
			jfail(j, at, "leading zero in number");
			goto out;
		}
	} else {
		while (is_digit(j, at))
			at++;
	}
	if (at < j->len && j->p[at] == '.') {
		integer = 0;
		at++;
		if (!is_digit(j, at)) {
			jfail(j, at, "digit expected after decimal point");
			goto out;
		}
		while (is_digit(j, at))
			at++;
	}
	if (at < j->len && (j->p[at] == 'e' || j->p[at] == 'E')) {
		integer = 0;
		at++;
		if (at < j->len && (j->p[at] == '+' || j->p[at] == '-'))
			at++;
		if (!is_digit(j, at)) {
			jfail(j, at, "digit expected in exponent");
			goto out;
		}
		while (is_digit(j, at))
			at++;
	}
	if ((n = at - start) > NUM_MAX) {
		jfail(j, start, "number too long");
		goto out;
	}
	memcpy(tok, j->p + start, n);
	tok[n] = '\0';
	if (integer && n - (size_t)neg <= 16) {
		long long iv = 0;
		for (size_t k = (size_t)neg; k < n; k++)
			iv = iv * 10 + (tok[k] - '0');
		if (iv <= INT_EXACT_MAX) {
			if ((v = cJSON_CreateNumber((double)(neg ? -iv : iv))) == NULL) {
				r = jfail(j, start, "out of memory");
				goto out;
			}
			v->type |= INT_TOKEN;
			goto done;
		}
	}
	/* strtod reads the locale's decimal point; the token has '.' */
	dp = localeconv()->decimal_point;
	if (dp != NULL && dp[0] != '.' && dp[0] != '\0' && dp[1] == '\0') {
		char *dot = strchr(tok, '.');
		if (dot != NULL)
			*dot = dp[0];
	}
	errno = 0;
	d = strtod(tok, &end);
	if (end != tok + n) {
		jfail(j, start, "invalid number");
		goto out;
	}
	if (isinf(d) || (errno == ERANGE && fabs(d) > 1.0)) {
		jfail(j, start, "number too large");
		goto out;
	}
	if ((v = cJSON_CreateNumber(d)) == NULL) {
		jfail(j, start, "out of memory");
		goto out;
	}
done:
	j->pos = at;
	*out = v;
	v = NULL;
	r = FGW_OK;
out:
	explicit_bzero(tok, sizeof(tok));
	cJSON_Delete(v);
	return r;
}

static int
key_cmp(const void *a, const void *b)
{
	const struct key_at *x = a, *y = b;
	int c = strcmp(x->key, y->key);
	if (c != 0)
		return c;
	return x->at < y->at ? -1 : x->at > y->at;
}

/* Refuses an object with two equal keys, at the offset of the first key
 * that repeats an earlier one. Sorting keeps this O(n log n). */
static int
check_duplicates(struct jp *j, struct key_at *keys, size_t n)
{
	size_t worst = SIZE_MAX;
	if (n < 2)
		return FGW_OK;
	qsort(keys, n, sizeof(*keys), key_cmp);
	for (size_t i = 1; i < n; i++)
		if (strcmp(keys[i - 1].key, keys[i].key) == 0 && keys[i].at < worst)
			worst = keys[i].at;
	if (worst != SIZE_MAX)
		return jfail(j, worst, "duplicate object key");
	return FGW_OK;
}

static int
parse_object(struct jp *j, int depth, cJSON **out)
{
	cJSON *obj = NULL, *val = NULL;
	const char *kept;
	struct key_at *keys = NULL, *nk;
	size_t nkeys = 0, cap = 0, klen, at;
	char *key = NULL;
	int r;

	if ((obj = cJSON_CreateObject()) == NULL) {
		r = jfail(j, j->pos, "out of memory");
		goto out;
	}
	j->pos++;
	skip_ws(j);
	if (j->pos < j->len && j->p[j->pos] == '}') {
		j->pos++;
		goto done;
	}
	for (;;) {
		skip_ws(j);
		at = j->pos;
		if (at >= j->len || j->p[at] != '"') {
			r = jfail(j, at,
			          at >= j->len ? "unexpected end of text" : "object key expected");
			goto out;
		}
		if ((r = parse_string(j, &klen)) != 0)
			goto out;
		if ((key = malloc(klen + 1)) == NULL) {
			r = jfail(j, at, "out of memory");
			goto out;
		}
		memcpy(key, j->buf, klen + 1);
		skip_ws(j);
		if (j->pos >= j->len || j->p[j->pos] != ':') {
			r = jfail(j, j->pos,
			          j->pos >= j->len ? "unexpected end of text" : "':' expected");
			goto out;
		}
		j->pos++;
		if ((r = parse_value(j, depth, &val)) != 0)
			goto out;
		if (!cJSON_AddItemToObject(obj, key, val)) {
			r = jfail(j, at, "out of memory");
			goto out;
		}
		kept = val->string; /* cJSON's own copy */
		val = NULL;         /* owned by obj */
		fgw_freezero(key, klen);
		key = NULL;
		if (nkeys == cap) {
			cap = cap ? cap * 2 : 8;
			if ((nk = realloc(keys, cap * sizeof(*keys))) == NULL) {
				r = jfail(j, at, "out of memory");
				goto out;
			}
			keys = nk;
		}
		keys[nkeys].key = kept;
		keys[nkeys].at = at;
		nkeys++;
		skip_ws(j);
		if (j->pos < j->len && j->p[j->pos] == ',') {
			j->pos++;
			continue;
		}
		if (j->pos < j->len && j->p[j->pos] == '}') {
			j->pos++;
			break;
		}
		r = jfail(j, j->pos,
		          j->pos >= j->len ? "unexpected end of text" : "',' or '}' expected");
		goto out;
	}
	if ((r = check_duplicates(j, keys, nkeys)) != 0)
		goto out;
done:
	*out = obj;
	obj = NULL;
	r = FGW_OK;
out:
	if (key != NULL) {
		fgw_freezero(key, strlen(key));
	}
	free(keys);
	cJSON_Delete(val);
	cJSON_Delete(obj);
	return r;
}

static int
parse_array(struct jp *j, int depth, cJSON **out)
{
	cJSON *arr = NULL, *val = NULL;
	int r;

	if ((arr = cJSON_CreateArray()) == NULL) {
		r = jfail(j, j->pos, "out of memory");
		goto out;
	}
	j->pos++;
	skip_ws(j);
	if (j->pos < j->len && j->p[j->pos] == ']') {
		j->pos++;
		goto done;
	}
	for (;;) {
		size_t at = j->pos;
		if ((r = parse_value(j, depth, &val)) != 0)
			goto out;
		if (!cJSON_AddItemToArray(arr, val)) {
			r = jfail(j, at, "out of memory");
			goto out;
		}
		val = NULL; /* owned by arr */
		skip_ws(j);
		if (j->pos < j->len && j->p[j->pos] == ',') {
			j->pos++;
			continue;
		}
		if (j->pos < j->len && j->p[j->pos] == ']') {
			j->pos++;
			break;
		}
		r = jfail(j, j->pos,
		          j->pos >= j->len ? "unexpected end of text" : "',' or ']' expected");
		goto out;
	}
done:
	*out = arr;
	arr = NULL;
	r = FGW_OK;
out:
	cJSON_Delete(val);
	cJSON_Delete(arr);
	return r;
}

static int
literal(struct jp *j, const char *word)
{
	size_t n = strlen(word);
	if (j->len - j->pos < n || memcmp(j->p + j->pos, word, n) != 0)
		return 0;
	j->pos += n;
	return 1;
}

/* value = ws ( false / null / true / object / array / number / string ) */
static int
parse_value(struct jp *j, int depth, cJSON **out)
{
	size_t at, n;
	unsigned char c;
	cJSON *v = NULL;

	skip_ws(j);
	at = j->pos;
	if (at >= j->len)
		return jfail(j, at, "unexpected end of text");
	c = j->p[at];
	switch (c) {
	case '{':
	case '[':
		if (depth >= FGW_JSON_MAX_DEPTH)
			return jfail(j, at, "nested too deeply");
		return c == '{' ? parse_object(j, depth + 1, out)
		                : parse_array(j, depth + 1, out);
	case '"':
		if (parse_string(j, &n) != 0)
			return FGW_ERR_INVALID;
		v = cJSON_CreateString(j->buf);
		explicit_bzero(j->buf, n);
		break;
	case 't':
		if (!literal(j, "true"))
			return jfail(j, at, "unexpected character");
		v = cJSON_CreateTrue();
		break;
	case 'f':
		if (!literal(j, "false"))
			return jfail(j, at, "unexpected character");
		v = cJSON_CreateFalse();
		break;
	case 'n':
		if (!literal(j, "null"))
			return jfail(j, at, "unexpected character");
		v = cJSON_CreateNull();
		break;
	default:
		if (c == '-' || (c >= '0' && c <= '9'))
			return parse_number(j, out);
		return jfail(j, at, "unexpected character");
	}
	if (v == NULL)
		return jfail(j, at, "out of memory");
	*out = v;
	return FGW_OK;
}

cJSON *
fgw_json_parse(const char *text, size_t len, struct fgw_json_error *err)
{
	struct jp j;
	cJSON *v = NULL;

	memset(&j, 0, sizeof(j));
	j.p = (const unsigned char *)text;
	j.len = text != NULL ? len : 0;
	if (j.len > 0 && (j.buf = malloc(j.len + 1)) == NULL) {
		jfail(&j, 0, "out of memory");
		goto out;
	}
	if (parse_value(&j, 0, &v) != 0)
		goto out;
	skip_ws(&j);
	if (j.pos != j.len) {
		jfail(&j, j.pos, "unexpected content after the value");
		cJSON_Delete(v);
		v = NULL;
	}
out:
	fgw_freezero(j.buf, j.len + 1);
	if (v == NULL && err != NULL) {
		err->offset = j.fail_at;
		err->reason = j.why != NULL ? j.why : "invalid JSON";
	}
	return v;
}

cJSON *
fgw_json_parse_strict(const char *text, size_t len)
{
	return fgw_json_parse(text, len, NULL);
}

void
fgw_json_error_str(const struct fgw_json_error *err, char *buf, size_t cap)
{
	if (cap == 0)
		return;
	snprintf(buf, cap, "invalid JSON at byte %zu: %s", err->offset,
	         err->reason != NULL ? err->reason : "invalid JSON");
}

int
fgw_json_int(const cJSON *item, int64_t min, int64_t max, int64_t *out)
{
	double d;
	if (item == NULL || !cJSON_IsNumber(item) || !(item->type & INT_TOKEN))
		return FGW_ERR_INVALID;
	d = item->valuedouble;
	/* the flag says how the token looked; the value may since have been
	 * changed with cJSON_SetNumberValue, so check it too */
	if (!(d >= -(double)INT_EXACT_MAX && d <= (double)INT_EXACT_MAX) || d != floor(d))
		return FGW_ERR_INVALID;
	if ((int64_t)d < min || (int64_t)d > max)
		return FGW_ERR_INVALID;
	*out = (int64_t)d;
	return FGW_OK;
}

/* ---- writer ------------------------------------------------------------ */

static void
jw_put(struct fgw_jw *w, const char *s, size_t n)
{
	if (w->failed)
		return;
	if (w->len + n + 1 > w->cap) {
		size_t cap = w->cap ? w->cap : 256;
		char *b;
		while (cap < w->len + n + 1)
			cap *= 2;
		if ((b = realloc(w->buf, cap)) == NULL) {
			free(w->buf);
			w->buf = NULL;
			w->failed = 1;
			return;
		}
		w->buf = b;
		w->cap = cap;
	}
	memcpy(w->buf + w->len, s, n);
	w->len += n;
	w->buf[w->len] = '\0';
}

/* A string in quotes, escaped as cJSON's printer does: the two-character
 * escapes for " \ \b \f \n \r \t, \u00xx for other bytes below 0x20, every
 * other byte (UTF-8 included) as it is. */
static void
jw_string(struct fgw_jw *w, const char *s)
{
	const char *run = s;
	char esc[8];

	jw_put(w, "\"", 1);
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;
		const char *e = NULL;
		if (c >= 0x20 && c != '"' && c != '\\')
			continue;
		jw_put(w, run, (size_t)(s - run));
		switch (c) {
		case '"':
			e = "\\\"";
			break;
		case '\\':
			e = "\\\\";
			break;
		case '\b':
			e = "\\b";
			break;
		case '\f':
			e = "\\f";
			break;
		case '\n':
			e = "\\n";
			break;
		case '\r':
			e = "\\r";
			break;
		case '\t':
			e = "\\t";
			break;
		default:
			snprintf(esc, sizeof(esc), "\\u%04x", c);
			e = esc;
			break;
		}
		jw_put(w, e, strlen(e));
		run = s + 1;
	}
	jw_put(w, run, (size_t)(s - run));
	jw_put(w, "\"", 1);
}

static void
jw_key(struct fgw_jw *w, const char *key)
{
	if (w->comma)
		jw_put(w, ",", 1);
	jw_string(w, key);
	jw_put(w, ":", 1);
	w->comma = 1;
}

void
fgw_jw_begin(struct fgw_jw *w)
{
	memset(w, 0, sizeof(*w));
	jw_put(w, "{", 1);
}

void
fgw_jw_str(struct fgw_jw *w, const char *key, const char *val)
{
	if (val == NULL)
		return;
	jw_key(w, key);
	jw_string(w, val);
}

void
fgw_jw_int(struct fgw_jw *w, const char *key, int64_t v)
{
	char num[32];
	int n;
	double d = (double)v, back;

	/* cJSON prints a number that is an int with %d, others with %1.15g
	 * (%1.17g when that does not read back): for an integer below 10^15
	 * both are its decimal digits. */
	if (v > -1000000000000000LL && v < 1000000000000000LL) {
		n = snprintf(num, sizeof(num), "%" PRId64, v);
	} else {
		/* cJSON's test: reads back within one epsilon */
		n = snprintf(num, sizeof(num), "%1.15g", d);
		if (sscanf(num, "%lg", &back) != 1 ||
		    !(fabs(back - d) <= fmax(fabs(back), fabs(d)) * DBL_EPSILON))
			n = snprintf(num, sizeof(num), "%1.17g", d);
	}
	jw_key(w, key);
	if (n > 0 && (size_t)n < sizeof(num))
		jw_put(w, num, (size_t)n);
	else
		w->failed = 1;
}

void
fgw_jw_raw(struct fgw_jw *w, const char *key, const char *json)
{
	jw_key(w, key);
	jw_put(w, json, strlen(json));
}

void
fgw_jw_open(struct fgw_jw *w, const char *key)
{
	jw_key(w, key);
	jw_put(w, "{", 1);
	w->comma = 0;
}

void
fgw_jw_close(struct fgw_jw *w)
{
	jw_put(w, "}", 1);
	w->comma = 1;
}

char *
fgw_jw_end(struct fgw_jw *w)
{
	char *out;
	jw_put(w, "}", 1);
	if (w->failed) {
		free(w->buf);
		memset(w, 0, sizeof(*w));
		return NULL;
	}
	out = w->buf;
	memset(w, 0, sizeof(*w));
	return out;
}
