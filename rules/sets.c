/*
 * rules/sets.c — the values lists compile into, and the BIN table.
 *
 * Text sets are sorted arrays of lower-case strings (case-insensitive
 * binary search); BIN sets are ranges grouped by digit count so a BIN
 * matches a prefix or a range of its first L digits; CIDR sets are merged
 * 128-bit ranges (IPv4 lives in ::ffff:0:0/96, so one table holds both
 * families); number sets are merged ranges. All lookups are binary
 * searches over arrays built once at load.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "rules/rules_int.h"

static inline int
lc(int c)
{
	return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
}

int
rules_ascii_casecmp(const char *a, const char *b)
{
	const unsigned char *x = (const unsigned char *)a, *y = (const unsigned char *)b;
	for (;; x++, y++) {
		int d = lc(*x) - lc(*y);
		if (d != 0 || *x == '\0')
			return d;
	}
}

void
rules_ascii_lower(char *s)
{
	for (; *s; s++)
		*s = (char)lc((unsigned char)*s);
}

/* ---- IP addresses and CIDR ------------------------------------------- */

static struct ip128
ip_from_bytes(const unsigned char b[16])
{
	struct ip128 ip = { 0, 0 };
	for (int i = 0; i < 8; i++) {
		ip.hi = (ip.hi << 8) | b[i];
		ip.lo = (ip.lo << 8) | b[8 + i];
	}
	return ip;
}

static void
ip_to_bytes(const struct ip128 *ip, unsigned char b[16])
{
	for (int i = 0; i < 8; i++) {
		b[i] = (unsigned char)(ip->hi >> (56 - 8 * i));
		b[8 + i] = (unsigned char)(ip->lo >> (56 - 8 * i));
	}
}

/* Parses an address; v4 is set to 1 for IPv4. */
static int
parse_ip_fam(const char *s, struct ip128 *out, int *v4)
{
	unsigned char b[16];
	if (inet_pton(AF_INET, s, b + 12) == 1) {
		memset(b, 0, 10);
		b[10] = b[11] = 0xff;
		*v4 = 1;
	} else if (inet_pton(AF_INET6, s, b) == 1) {
		*v4 = 0;
	} else {
		return -1;
	}
	*out = ip_from_bytes(b);
	return 0;
}

int
rules_parse_ip(const char *s, struct ip128 *out)
{
	int v4;
	return parse_ip_fam(s, out, &v4);
}

static int
ip_cmp(const struct ip128 *a, const struct ip128 *b)
{
	if (a->hi != b->hi)
		return a->hi < b->hi ? -1 : 1;
	if (a->lo != b->lo)
		return a->lo < b->lo ? -1 : 1;
	return 0;
}

static struct ip128
prefix_mask(int bits)
{
	struct ip128 m = { 0, 0 };
	if (bits >= 64) {
		m.hi = ~0ULL;
		m.lo = bits >= 128 ? ~0ULL : (bits == 64 ? 0 : ~0ULL << (128 - bits));
	} else if (bits > 0) {
		m.hi = ~0ULL << (64 - bits);
	}
	return m;
}

int
rules_parse_cidr(const char *s, struct iprange *out, struct fgw_why *why)
{
	char addr[INET6_ADDRSTRLEN + 8];
	const char *slash = strchr(s, '/');
	size_t alen = slash ? (size_t)(slash - s) : strlen(s);
	struct ip128 ip, m;
	int v4, bits, maxbits;

	if (alen == 0 || alen >= sizeof(addr)) {
		fgw_why_set(why, NULL, 0, 0, "'%.60s' is not an IP address or CIDR range", s);
		return FGW_ERR_INVALID;
	}
	memcpy(addr, s, alen);
	addr[alen] = '\0';
	if (parse_ip_fam(addr, &ip, &v4) != 0) {
		fgw_why_set(why, NULL, 0, 0, "'%.60s' is not an IP address or CIDR range", s);
		return FGW_ERR_INVALID;
	}
	maxbits = v4 ? 32 : 128;
	bits = maxbits;
	if (slash) {
		const char *p = slash + 1;
		if (*p == '\0' || strlen(p) > 3) {
			fgw_why_set(why, NULL, 0, 0, "bad prefix length in '%.60s'", s);
			return FGW_ERR_INVALID;
		}
		bits = 0;
		for (; *p; p++) {
			if (*p < '0' || *p > '9') {
				fgw_why_set(why, NULL, 0, 0, "bad prefix length in '%.60s'", s);
				return FGW_ERR_INVALID;
			}
			bits = bits * 10 + (*p - '0');
		}
		if (bits > maxbits) {
			fgw_why_set(why, NULL, 0, 0, "prefix length /%d is over /%d in '%.60s'", bits,
			            maxbits, s);
			return FGW_ERR_INVALID;
		}
	}
	m = prefix_mask(v4 ? 96 + bits : bits);
	if ((ip.hi & ~m.hi) != 0 || (ip.lo & ~m.lo) != 0) {
		unsigned char b[16];
		char net[INET6_ADDRSTRLEN];
		struct ip128 n = { ip.hi & m.hi, ip.lo & m.lo };
		ip_to_bytes(&n, b);
		if (inet_ntop(v4 ? AF_INET : AF_INET6, v4 ? b + 12 : b, net, sizeof(net)) == NULL)
			net[0] = '\0';
		fgw_why_set(why, NULL, 0, 0, "'%.60s' has host bits set (did you mean '%s/%d'?)",
		            s, net, bits);
		return FGW_ERR_INVALID;
	}
	out->lo = ip;
	out->hi.hi = ip.hi | ~m.hi;
	out->hi.lo = ip.lo | ~m.lo;
	return 0;
}

/* ---- numbers and BIN ranges ------------------------------------------- */

int
rules_digits(const char *s, size_t *len)
{
	size_t n = 0;
	while (s[n] >= '0' && s[n] <= '9')
		n++;
	if (len)
		*len = n;
	return n > 0 && s[n] == '\0';
}

static int
parse_u(const char *s, size_t n, int64_t *out)
{
	int64_t v = 0;
	if (n == 0 || n > 18)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	*out = v;
	return 0;
}

int
rules_parse_binrange(const char *s, struct binrange *out, const char **why)
{
	const char *dash = strchr(s, '-');
	size_t n1 = dash ? (size_t)(dash - s) : strlen(s), n2;
	int64_t a, b;

	*why = "a BIN is 1 to 12 digits, or a range such as 400000-499999";
	if (n1 == 0 || n1 > RULES_BIN_MAX || parse_u(s, n1, &a) != 0)
		return -1;
	b = a;
	if (dash) {
		n2 = strlen(dash + 1);
		if (parse_u(dash + 1, n2, &b) != 0)
			return -1;
		if (n2 != n1) {
			*why = "both ends of a BIN range need the same number of digits";
			return -1;
		}
		if (b < a) {
			*why = "a BIN range must go from low to high";
			return -1;
		}
	}
	out->lo = (uint64_t)a;
	out->hi = (uint64_t)b;
	out->len = (uint8_t)n1;
	return 0;
}

int
rules_parse_irange(const char *s, struct irange *out, const char **why)
{
	const char *dash = strchr(s, '-');
	size_t n1 = dash ? (size_t)(dash - s) : strlen(s);
	int64_t a, b;

	*why = "expected a whole number or a range such as 10-20";
	if (parse_u(s, n1, &a) != 0)
		return -1;
	b = a;
	if (dash) {
		if (parse_u(dash + 1, strlen(dash + 1), &b) != 0)
			return -1;
		if (b < a) {
			*why = "a range must go from low to high";
			return -1;
		}
	}
	out->lo = a;
	out->hi = b;
	return 0;
}

/* ---- glob ------------------------------------------------------------- */

/* '*' any run, '?' one character; pat is lower-case. Linear-time greedy
 * matching with one backtrack point, so hostile patterns stay cheap. */
int
rules_glob(const char *pat, const char *s)
{
	const char *star = NULL, *resume = NULL;
	while (*s) {
		if (*pat == '*') {
			star = pat++;
			resume = s;
		} else if (*pat != '\0' && (*pat == '?' || *pat == lc((unsigned char)*s))) {
			pat++;
			s++;
		} else if (star) {
			pat = star + 1;
			s = ++resume;
		} else {
			return 0;
		}
	}
	while (*pat == '*')
		pat++;
	return *pat == '\0';
}

/* ---- building and searching sets -------------------------------------- */

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int
cmp_bin(const void *a, const void *b)
{
	const struct binrange *x = a, *y = b;
	if (x->len != y->len)
		return x->len < y->len ? -1 : 1;
	if (x->lo != y->lo)
		return x->lo < y->lo ? -1 : 1;
	return 0;
}

static int
cmp_iprange(const void *a, const void *b)
{
	return ip_cmp(&((const struct iprange *)a)->lo, &((const struct iprange *)b)->lo);
}

static int
cmp_irange(const void *a, const void *b)
{
	const struct irange *x = a, *y = b;
	return x->lo < y->lo ? -1 : x->lo > y->lo;
}

static void
ip_inc(struct ip128 *x)
{
	if (++x->lo == 0)
		x->hi++;
}

int
rules_set_finish(struct rset *s)
{
	size_t i, w = 0;
	if (s->n == 0)
		return FGW_OK;
	switch (s->kind) {
	case ST_STR:
		qsort(s->u.str, s->n, sizeof(*s->u.str), cmp_str);
		for (i = 0; i < s->n; i++)
			if (w == 0 || strcmp(s->u.str[w - 1], s->u.str[i]) != 0)
				s->u.str[w++] = s->u.str[i];
		s->n = w;
		break;
	case ST_GLOB:
		break;
	case ST_BIN:
		qsort(s->u.bin, s->n, sizeof(*s->u.bin), cmp_bin);
		for (i = 0; i < s->n; i++) {
			struct binrange *cur = &s->u.bin[i], *last = w ? &s->u.bin[w - 1] : NULL;
			if (last && last->len == cur->len && cur->lo <= last->hi + 1) {
				if (cur->hi > last->hi)
					last->hi = cur->hi;
			} else {
				s->u.bin[w++] = *cur;
			}
		}
		s->n = w;
		memset(s->off, 0, sizeof(s->off));
		for (i = 0; i < s->n; i++)
			s->off[s->u.bin[i].len + 1]++;
		for (i = 1; i < RULES_BIN_MAX + 2; i++)
			s->off[i] += s->off[i - 1];
		break;
	case ST_CIDR:
		qsort(s->u.ip, s->n, sizeof(*s->u.ip), cmp_iprange);
		for (i = 0; i < s->n; i++) {
			struct iprange *cur = &s->u.ip[i], *last = w ? &s->u.ip[w - 1] : NULL;
			struct ip128 next = { 0, 0 };
			if (last) {
				next = last->hi;
				ip_inc(&next);
			}
			if (last && (ip_cmp(&cur->lo, &next) <= 0 ||
			             (last->hi.hi == ~0ULL && last->hi.lo == ~0ULL))) {
				if (ip_cmp(&cur->hi, &last->hi) > 0)
					last->hi = cur->hi;
			} else {
				s->u.ip[w++] = *cur;
			}
		}
		s->n = w;
		break;
	case ST_INT:
		qsort(s->u.num, s->n, sizeof(*s->u.num), cmp_irange);
		for (i = 0; i < s->n; i++) {
			struct irange *cur = &s->u.num[i], *last = w ? &s->u.num[w - 1] : NULL;
			if (last && cur->lo <= last->hi + 1) {
				if (cur->hi > last->hi)
					last->hi = cur->hi;
			} else {
				s->u.num[w++] = *cur;
			}
		}
		s->n = w;
		break;
	default:
		return FGW_ERR_INTERNAL;
	}
	return FGW_OK;
}

/* Compares v case-insensitively against a lower-case entry. */
static int
cmp_lc(const char *v, const char *entry)
{
	const unsigned char *x = (const unsigned char *)v, *y = (const unsigned char *)entry;
	for (;; x++, y++) {
		int d = lc(*x) - *y;
		if (d != 0 || *x == '\0')
			return d;
	}
}

int
rules_set_has_str(const struct rset *s, const char *v)
{
	size_t lo = 0, hi = s->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int d = cmp_lc(v, s->u.str[mid]);
		if (d == 0)
			return 1;
		if (d < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return 0;
}

int
rules_set_glob_any(const struct rset *s, const char *v)
{
	for (size_t i = 0; i < s->n; i++)
		if (rules_glob(s->u.str[i], v))
			return 1;
	return 0;
}

int
rules_set_has_bin(const struct rset *s, const char *bin, size_t len)
{
	uint64_t v = 0;
	for (size_t l = 1; l <= len && l <= RULES_BIN_MAX; l++) {
		size_t lo = s->off[l], hi = s->off[l + 1];
		v = v * 10 + (uint64_t)(bin[l - 1] - '0');
		/* last range whose lo <= v */
		while (lo < hi) {
			size_t mid = lo + (hi - lo) / 2;
			if (s->u.bin[mid].lo <= v)
				lo = mid + 1;
			else
				hi = mid;
		}
		if (lo > s->off[l] && s->u.bin[lo - 1].hi >= v)
			return 1;
	}
	return 0;
}

int
rules_set_has_ip(const struct rset *s, const struct ip128 *ip)
{
	size_t lo = 0, hi = s->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (ip_cmp(&s->u.ip[mid].lo, ip) <= 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo > 0 && ip_cmp(&s->u.ip[lo - 1].hi, ip) >= 0;
}

int
rules_set_has_int(const struct rset *s, int64_t v)
{
	size_t lo = 0, hi = s->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (s->u.num[mid].lo <= v)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo > 0 && s->u.num[lo - 1].hi >= v;
}

void
rules_set_free(struct rset *s)
{
	switch (s->kind) {
	case ST_STR:
	case ST_GLOB:
		free(s->u.str);
		break;
	case ST_BIN:
		free(s->u.bin);
		break;
	case ST_CIDR:
		free(s->u.ip);
		break;
	case ST_INT:
		free(s->u.num);
		break;
	default:
		break;
	}
	s->n = 0;
}

/* ---- BIN table ----------------------------------------------------------- */

static int
cmp_binent(const void *a, const void *b)
{
	const struct binent *x = a, *y = b;
	if (x->len != y->len)
		return x->len < y->len ? -1 : 1;
	if (x->v != y->v)
		return x->v < y->v ? -1 : 1;
	return x->line < y->line ? -1 : x->line > y->line;
}

static const char *
skip_blank(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t'))
		p++;
	return p;
}

/* One CSV line [p, end): "prefix,country[,ignored...]". */
static int
bintable_line(struct bintable *t, size_t *cap, const char *p, const char *end,
              const char *file, int line, int *header_ok, struct fgw_why *err)
{
	const char *f1, *f1e, *f2, *f2e, *q;
	struct binent e;

	f1 = skip_blank(p, end);
	if (f1 == end || *f1 == '#')
		return FGW_OK;
	for (f1e = f1; f1e < end && *f1e != ','; f1e++)
		;
	q = f1e;
	while (q > f1 && (q[-1] == ' ' || q[-1] == '\t'))
		q--;
	if (q == f1 || *f1 < '0' || *f1 > '9') {
		if (*header_ok) {
			*header_ok = 0;
			return FGW_OK; /* a header line such as "bin_prefix,country" */
		}
	}
	*header_ok = 0;
	memset(&e, 0, sizeof(e));
	if (q == f1 || (size_t)(q - f1) > RULES_BIN_MAX) {
		fgw_why_set(err, file, line, (int)(f1 - p) + 1, "a BIN prefix is 1 to %d digits",
		            RULES_BIN_MAX);
		return FGW_ERR_INVALID;
	}
	for (const char *c = f1; c < q; c++) {
		if (*c < '0' || *c > '9') {
			fgw_why_set(err, file, line, (int)(f1 - p) + 1,
			            "a BIN prefix is 1 to %d digits", RULES_BIN_MAX);
			return FGW_ERR_INVALID;
		}
		e.v = e.v * 10 + (uint64_t)(*c - '0');
	}
	e.len = (uint8_t)(q - f1);
	if (f1e == end) {
		fgw_why_set(err, file, line, (int)(f1e - p) + 1,
		            "expected ',' and a country code after the BIN prefix");
		return FGW_ERR_INVALID;
	}
	f2 = skip_blank(f1e + 1, end);
	for (f2e = f2; f2e < end && *f2e != ',' && *f2e != ' ' && *f2e != '\t'; f2e++)
		;
	if (f2e - f2 != 2 || !((f2[0] | 0x20) >= 'a' && (f2[0] | 0x20) <= 'z') ||
	    !((f2[1] | 0x20) >= 'a' && (f2[1] | 0x20) <= 'z')) {
		fgw_why_set(err, file, line, (int)(f2 - p) + 1,
		            "expected a two-letter country code such as US");
		return FGW_ERR_INVALID;
	}
	e.cc[0] = (char)(f2[0] & ~0x20);
	e.cc[1] = (char)(f2[1] & ~0x20);
	e.line = (uint32_t)line;
	if (t->n == *cap) {
		size_t nc = *cap ? *cap * 2 : 64;
		struct binent *nv = realloc(t->v, nc * sizeof(*nv));
		if (nv == NULL)
			return FGW_ERR_NOMEM;
		t->v = nv;
		*cap = nc;
	}
	t->v[t->n++] = e;
	return FGW_OK;
}

int
rules_bintable_load(struct bintable *t, const char *text, const char *file,
                    struct fgw_why *err)
{
	size_t cap = 0;
	int line = 1, header_ok = 1, r;
	const char *p = text;

	memset(t, 0, sizeof(*t));
	while (*p) {
		const char *end = strchr(p, '\n');
		const char *le;
		if (end == NULL)
			end = p + strlen(p);
		le = end;
		if (le > p && le[-1] == '\r')
			le--;
		if ((r = bintable_line(t, &cap, p, le, file, line, &header_ok, err)) != FGW_OK)
			goto fail;
		p = *end ? end + 1 : end;
		line++;
	}
	if (t->n)
		qsort(t->v, t->n, sizeof(*t->v), cmp_binent);
	for (size_t i = 1; i < t->n; i++) {
		if (t->v[i].len == t->v[i - 1].len && t->v[i].v == t->v[i - 1].v) {
			fgw_why_set(err, file, (int)t->v[i].line, 1,
			            "duplicate BIN prefix (first on line %u)", t->v[i - 1].line);
			r = FGW_ERR_INVALID;
			goto fail;
		}
	}
	for (size_t i = 0; i < t->n; i++)
		t->off[t->v[i].len + 1]++;
	for (size_t i = 1; i < RULES_BIN_MAX + 2; i++)
		t->off[i] += t->off[i - 1];
	return FGW_OK;
fail:
	rules_bintable_free(t);
	return r;
}

const char *
rules_bintable_country(const struct bintable *t, const char *bin, size_t len)
{
	uint64_t pv[RULES_BIN_MAX + 1];
	size_t maxl = len < RULES_BIN_MAX ? len : RULES_BIN_MAX;

	if (t->n == 0)
		return NULL;
	pv[0] = 0;
	for (size_t l = 1; l <= maxl; l++)
		pv[l] = pv[l - 1] * 10 + (uint64_t)(bin[l - 1] - '0');
	for (size_t l = maxl; l >= 1; l--) {
		size_t lo = t->off[l], hi = t->off[l + 1];
		while (lo < hi) {
			size_t mid = lo + (hi - lo) / 2;
			if (t->v[mid].v == pv[l])
				return t->v[mid].cc;
			if (t->v[mid].v < pv[l])
				lo = mid + 1;
			else
				hi = mid;
		}
	}
	return NULL;
}

void
rules_bintable_free(struct bintable *t)
{
	free(t->v);
	memset(t, 0, sizeof(*t));
}
