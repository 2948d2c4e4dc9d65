/*
 * processors/route.c — parsing and evaluating the routing table
 * (processors/route.h). Pure functions over the parsed table, so that
 * every reactor evaluates the same read-only table without locks.
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "core/err.h"
#include "core/util.h"
#include "processors/route.h"

#define ROUTE_MAX_WEIGHT 1000000

static int
bad(struct fgw_why *why, const char *reason, const char *what)
{
	fgw_why_set(why, "route", 0, 0, "%s%s%s", reason, what[0] ? " " : "", what);
	return FGW_ERR_INVALID;
}

/* A comma list of tokens of exactly `len` letters (len 0: 2..20 letters,
 * digits, '_' or '-'), normalised to upper or lower case. */
static int
list_copy(const char *v, size_t len, int upper, char *out, size_t cap)
{
	size_t n = strlen(v), tok = 0;

	if (n == 0 || n >= cap)
		return FGW_ERR_INVALID;
	for (size_t i = 0; i <= n; i++) {
		unsigned char c = (unsigned char)v[i];
		if (c == ',' || c == '\0') {
			if (tok == 0 || (len != 0 && tok != len) || (len == 0 && tok < 2))
				return FGW_ERR_INVALID;
			tok = 0;
			out[i] = (char)c;
			continue;
		}
		if (len != 0 ? !isalpha(c) : !(isalnum(c) || c == '_' || c == '-'))
			return FGW_ERR_INVALID;
		out[i] = (char)(upper ? toupper(c) : tolower(c));
		tok++;
	}
	return FGW_OK;
}

int
proc_route_parse(const char *line, struct proc_route *out, struct fgw_why *why)
{
	char buf[600], *save = NULL, *w;
	int64_t v;

	memset(out, 0, sizeof(*out));
	if (line == NULL || fgw_strlcpy(buf, line, sizeof(buf)) != FGW_OK)
		return bad(why, "line too long", "");
	if ((w = strtok_r(buf, " \t", &save)) == NULL ||
	    fgw_strlcpy(out->processor, w, sizeof(out->processor)) != FGW_OK ||
	    strchr(w, '=') != NULL)
		return bad(why, "needs \"PROCESSOR [key=value...]\"", "");
	while ((w = strtok_r(NULL, " \t", &save)) != NULL) {
		char *eq = strchr(w, '=');
		const char *val;
		if (eq == NULL || eq[1] == '\0')
			return bad(why, "expected key=value, got", w);
		*eq = '\0';
		val = eq + 1;
		if (strcmp(w, "currency") == 0) {
			if (out->currencies[0] ||
			    list_copy(val, 3, 1, out->currencies, sizeof(out->currencies)) != 0)
				return bad(why, "currency wants ISO codes like EUR,GBP:", val);
		} else if (strcmp(w, "country") == 0) {
			if (out->countries[0] ||
			    list_copy(val, 2, 1, out->countries, sizeof(out->countries)) != 0)
				return bad(why, "country wants ISO codes like DE,FR:", val);
		} else if (strcmp(w, "brand") == 0) {
			if (out->brands[0] ||
			    list_copy(val, 0, 0, out->brands, sizeof(out->brands)) != 0)
				return bad(why, "brand wants names like visa,mastercard:", val);
		} else if (strcmp(w, "amount_min") == 0 || strcmp(w, "amount_max") == 0) {
			int64_t *dst = w[7] == 'm' && w[8] == 'i' ? &out->amount_min
			                                          : &out->amount_max;
			if (*dst != 0 || fgw_parse_i64(val, 1, INT64_MAX / 2, &v) != FGW_OK)
				return bad(why, "amount bounds are whole minor units >= 1:", val);
			*dst = v;
		} else if (strcmp(w, "weight") == 0) {
			if (out->weight != 0 || fgw_parse_i64(val, 1, ROUTE_MAX_WEIGHT, &v) != FGW_OK)
				return bad(why, "weight wants 1..1000000:", val);
			out->weight = (int)v;
		} else {
			return bad(why, "unknown key", w);
		}
	}
	if (out->amount_min != 0 && out->amount_max != 0 && out->amount_min > out->amount_max)
		return bad(why, "amount_min is above amount_max", "");
	return FGW_OK;
}

/* Whether item (case-insensitive) is one of the comma list's tokens. */
static int
in_list(const char *list, const char *item)
{
	size_t n = strlen(item);
	const char *p = list;

	if (list[0] == '\0')
		return 1;
	if (n == 0)
		return 0;
	while (*p != '\0') {
		const char *end = strchr(p, ',');
		size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
		if (len == n && strncasecmp(p, item, n) == 0)
			return 1;
		if (end == NULL)
			break;
		p = end + 1;
	}
	return 0;
}

static int
matches(const struct proc_route *r, const char *currency, const char *brand,
        const char *country, int64_t amount)
{
	return in_list(r->currencies, currency != NULL ? currency : "") &&
	       in_list(r->brands, brand != NULL ? brand : "") &&
	       in_list(r->countries, country != NULL ? country : "") &&
	       (r->amount_min == 0 || amount >= r->amount_min) &&
	       (r->amount_max == 0 || amount <= r->amount_max);
}

const struct proc_route *
proc_routes_pick(const struct proc_routes *rs, const char *currency, const char *brand,
                 const char *country, int64_t amount, uint32_t rnd)
{
	int64_t total = 0, at;
	int first = -1;

	if (rs == NULL)
		return NULL;
	for (int i = 0; i < rs->n; i++) {
		if (!matches(&rs->r[i], currency, brand, country, amount))
			continue;
		if (first < 0)
			first = i;
		if (rs->r[i].weight > 0)
			total += rs->r[i].weight;
	}
	if (first < 0 || rs->r[first].weight == 0)
		return first < 0 ? NULL : &rs->r[first];
	/* rnd / 1e6 of the total weight, walked in table order. */
	at = (int64_t)rnd % 1000000 * total / 1000000;
	for (int i = first; i < rs->n; i++) {
		if (rs->r[i].weight == 0 || !matches(&rs->r[i], currency, brand, country, amount))
			continue;
		if (at < rs->r[i].weight)
			return &rs->r[i];
		at -= rs->r[i].weight;
	}
	return &rs->r[first];
}
