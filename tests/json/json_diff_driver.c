/*
 * tests/json/json_diff_driver.c — feeds core/json.c texts for the
 * differential test (tests/integration/test_json_diff.py).
 *
 * Reads records "<length>\n<bytes>" from stdin until EOF and answers each
 * with one line: "0 <offset>" when fgw_json_parse refused it, or
 * "1 <kinds> <json>" when it parsed: kinds has one letter per number in
 * document order (i: fgw_json_int reads it, f: it does not, "-" when
 * there are none) and json is the tree printed exactly (numbers with 17
 * digits: cJSON's printer rounds to 15), for comparing values.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cjson/cJSON.h>

#include "core/json.h"

static void
kinds(const cJSON *v, FILE *out, int *n)
{
	int64_t x;
	if (cJSON_IsNumber(v)) {
		fputc(fgw_json_int(v, INT64_MIN, INT64_MAX, &x) == 0 ? 'i' : 'f', out);
		(*n)++;
	}
	for (const cJSON *c = v->child; c != NULL; c = c->next)
		kinds(c, out, n);
}

static void
put_string(const char *s)
{
	putchar('"');
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			printf("\\%c", *p);
		else if (*p < 0x20)
			printf("\\u%04x", *p);
		else
			putchar(*p);
	}
	putchar('"');
}

static void
put_value(const cJSON *v)
{
	const cJSON *c;
	if (cJSON_IsNumber(v)) {
		printf("%.17g", v->valuedouble);
	} else if (cJSON_IsString(v)) {
		put_string(v->valuestring);
	} else if (cJSON_IsTrue(v)) {
		fputs("true", stdout);
	} else if (cJSON_IsFalse(v)) {
		fputs("false", stdout);
	} else if (cJSON_IsNull(v)) {
		fputs("null", stdout);
	} else {
		int obj = cJSON_IsObject(v);
		putchar(obj ? '{' : '[');
		for (c = v->child; c != NULL; c = c->next) {
			if (c != v->child)
				putchar(',');
			if (obj) {
				put_string(c->string);
				putchar(':');
			}
			put_value(c);
		}
		putchar(obj ? '}' : ']');
	}
}

int
main(void)
{
	size_t len;
	char *buf;
	while (scanf("%zu", &len) == 1 && getchar() == '\n') {
		struct fgw_json_error e;
		cJSON *v;
		if ((buf = malloc(len + 1)) == NULL || fread(buf, 1, len, stdin) != len)
			return 2;
		if ((v = fgw_json_parse(buf, len, &e)) == NULL) {
			printf("0 %zu\n", e.offset);
		} else {
			int n = 0;
			fputs("1 ", stdout);
			kinds(v, stdout, &n);
			fputs(n ? " " : "- ", stdout);
			put_value(v);
			putchar('\n');
			cJSON_Delete(v);
		}
		free(buf);
		fflush(stdout);
	}
	return 0;
}
