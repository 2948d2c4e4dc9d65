/*
 * rules/eval.c — evaluates a compiled set against one transaction.
 *
 * Conditions use three-valued logic: a test on a missing value (no
 * customer country, a BIN not in the table, no velocity store) is
 * "unknown", `and`/`or`/`not` follow Kleene's rules, and a rule fires only
 * when its condition is true. So `card.country != customer.country` does
 * not fire when either country is unknown, and neither does
 * `not (card.country == customer.country)`.
 *
 * Everything derived from the input (card country, parsed IP, velocity
 * keys and results) is computed at most once per evaluation, lazily, into
 * a context on the stack: evaluation does not allocate.
 */
#include <stdio.h>
#include <string.h>

#include "core/card.h"
#include "core/err.h"
#include "core/util.h"
#include "rules/rules_int.h"

enum { TV_FALSE = 0, TV_TRUE = 1, TV_UNKNOWN = 2 };

struct ectx {
	const struct rules *r;
	const struct rules_input *in;
	struct velocity *v;
	int64_t now;
	int hour, weekday, threeds, mode;
	const char *bin; /* NULL unless 1..19 digits */
	size_t binlen;
	const char *brand;
	const char *country;
	int country_done;
	const char *email_domain;
	int ip_state; /* 0: not parsed yet, 1: ok, -1: missing */
	struct ip128 ip;
	int vkey_state[VELOCITY_NDIMS];
	uint64_t vc_have;
	char vkey[VELOCITY_NDIMS][VELOCITY_KEY_MAX + 1];
	struct velocity_stats vc[RULES_VSLOTS];
};

static const char *
nonempty(const char *s)
{
	return s && *s ? s : NULL;
}

static void
lower_copy(char *dst, size_t cap, const char *src)
{
	size_t i;
	for (i = 0; i + 1 < cap && src[i]; i++)
		dst[i] = (src[i] >= 'A' && src[i] <= 'Z') ? (char)(src[i] + 32) : src[i];
	dst[i] = '\0';
}

/* Copies src after prefix into buf (cut to fit), lower-cased if lower. */
static void
key_copy(char *buf, size_t cap, const char *prefix, const char *src, int lower)
{
	size_t n = strlen(prefix);
	memcpy(buf, prefix, n);
	if (lower)
		lower_copy(buf + n, cap - n, src);
	else
		fgw_strlcpy(buf + n, src, cap - n);
}

int
rules_velocity_key(const struct rules_input *in, enum velocity_dim dim, char *buf,
                   size_t cap)
{
	const char *s;
	struct ip128 ip;

	if (cap < 16)
		return -1;
	switch (dim) {
	case VELOCITY_CARD:
		if ((s = nonempty(in->fingerprint)) == NULL)
			return -1;
		key_copy(buf, cap, "", s, 0);
		return 0;
	case VELOCITY_CUSTOMER:
		if ((s = nonempty(in->customer_id)) != NULL)
			key_copy(buf, cap, "id:", s, 0);
		else if ((s = nonempty(in->email)) != NULL)
			key_copy(buf, cap, "email:", s, 1);
		else
			return -1;
		return 0;
	case VELOCITY_IP:
		if ((s = nonempty(in->ip)) == NULL || rules_parse_ip(s, &ip) != 0)
			return -1;
		if (ip.hi == 0 && (ip.lo >> 32) == 0xffff)
			snprintf(buf, cap, "%u.%u.%u.%u", (unsigned)(ip.lo >> 24) & 255,
			         (unsigned)(ip.lo >> 16) & 255, (unsigned)(ip.lo >> 8) & 255,
			         (unsigned)ip.lo & 255);
		else /* one IPv6 subscriber usually holds a whole /64 */
			snprintf(buf, cap, "%x:%x:%x:%x::/64", (unsigned)(ip.hi >> 48),
			         (unsigned)(ip.hi >> 32) & 0xffff, (unsigned)(ip.hi >> 16) & 0xffff,
			         (unsigned)ip.hi & 0xffff);
		return 0;
	case VELOCITY_EMAIL:
		if ((s = nonempty(in->email)) == NULL)
			return -1;
		key_copy(buf, cap, "", s, 1);
		return 0;
	default:
		return -1;
	}
}

static void
ctx_init(struct ectx *c, const struct rules *r, const struct rules_input *in,
         struct velocity *v)
{
	int64_t day, ms;
	const char *s;
	size_t n = 0;

	c->r = r;
	c->in = in;
	c->v = v;
	c->now = in->now_ms ? in->now_ms : fgw_now_ms();
	day = c->now / 86400000;
	ms = c->now % 86400000;
	if (ms < 0) {
		ms += 86400000;
		day--;
	}
	c->hour = (int)(ms / 3600000);
	c->weekday = (int)(((day % 7) + 7 + 3) % 7); /* 1970-01-01 was a Thursday */
	c->threeds = 0;
	if ((s = nonempty(in->threeds)) != NULL)
		for (int i = 0; rules_enum_values[EK_THREEDS][i]; i++)
			if (rules_ascii_casecmp(rules_enum_values[EK_THREEDS][i], s) == 0)
				c->threeds = i;
	c->mode = (s = nonempty(in->mode)) != NULL &&
	          rules_ascii_casecmp(s, "development") == 0;
	c->bin = NULL;
	c->binlen = 0;
	if ((s = nonempty(in->bin)) != NULL && rules_digits(s, &n) && n <= 19) {
		c->bin = s;
		c->binlen = n;
	}
	c->brand = nonempty(in->brand);
	if (c->brand == NULL && c->bin)
		c->brand = card_brand_name(card_brand_of(c->bin, c->binlen));
	c->country = NULL;
	c->country_done = 0;
	c->email_domain = NULL;
	if ((s = nonempty(in->email)) != NULL && (s = strrchr(s, '@')) != NULL)
		c->email_domain = nonempty(s + 1);
	c->ip_state = 0;
	memset(c->vkey_state, 0, sizeof(c->vkey_state));
	c->vc_have = 0;
}

static const char *
get_str(struct ectx *c, int attr)
{
	const struct rules_input *in = c->in;
	switch (attr) {
	case AT_CURRENCY:
		return nonempty(in->currency);
	case AT_CARD_BRAND:
		return c->brand;
	case AT_CARD_COUNTRY:
		if (!c->country_done) {
			c->country_done = 1;
			if (c->bin)
				c->country = rules_bintable_country(&c->r->bins, c->bin, c->binlen);
		}
		return c->country;
	case AT_CUSTOMER_COUNTRY:
		return nonempty(in->customer_country);
	case AT_CUSTOMER_ID:
		return nonempty(in->customer_id);
	case AT_EMAIL:
		return nonempty(in->email);
	case AT_EMAIL_DOMAIN:
		return c->email_domain;
	case AT_PROCESSOR:
		return nonempty(in->processor);
	case AT_FINGERPRINT:
		return nonempty(in->fingerprint);
	default:
		return NULL;
	}
}

static const struct ip128 *
get_ip(struct ectx *c)
{
	if (c->ip_state == 0) {
		const char *s = nonempty(c->in->ip);
		c->ip_state = s && rules_parse_ip(s, &c->ip) == 0 ? 1 : -1;
	}
	return c->ip_state == 1 ? &c->ip : NULL;
}

static const char *
vel_key(struct ectx *c, int dim)
{
	if (c->vkey_state[dim] == 0)
		c->vkey_state[dim] = rules_velocity_key(c->in, (enum velocity_dim)dim,
		                                        c->vkey[dim], sizeof(c->vkey[dim])) == 0
		                         ? 1
		                         : -1;
	return c->vkey_state[dim] == 1 ? c->vkey[dim] : NULL;
}

static int
vel_stats(struct ectx *c, const struct operand *o, struct velocity_stats *st)
{
	const char *key;
	if (c->v == NULL || (key = vel_key(c, o->dim)) == NULL)
		return 0;
	if (o->vslot >= RULES_VSLOTS)
		return velocity_query(c->v, (enum velocity_dim)o->dim, key, c->now, o->window_ms,
		                      st) == FGW_OK;
	if (!((c->vc_have >> o->vslot) & 1)) {
		/* first use of this dimension: every window of it in one pass */
		const struct vgroup *g = &c->r->vgroups[o->dim];
		struct velocity_stats res[RULES_VSLOTS];
		if (velocity_query_windows(c->v, (enum velocity_dim)o->dim, key, c->now,
		                           g->window_ms, g->n, res) != FGW_OK)
			return 0;
		for (uint32_t i = 0; i < g->n; i++) {
			c->vc[g->slot[i]] = res[i];
			c->vc_have |= 1ULL << g->slot[i];
		}
	}
	*st = c->vc[o->vslot];
	return 1;
}

/* 1 and *v when present. */
static int
get_int(struct ectx *c, const struct operand *o, int64_t *v)
{
	struct velocity_stats st;
	switch (o->kind) {
	case OK_CONST:
		*v = o->ival;
		return 1;
	case OK_FN:
		if (!vel_stats(c, o, &st))
			return 0;
		/* count and sum include the transaction being decided (it is
		 * recorded only after the decision); declines are earlier ones */
		if (o->fn == FN_COUNT)
			*v = st.count + 1;
		else if (o->fn == FN_SUM) {
			if (__builtin_add_overflow(st.sum, c->in->amount > 0 ? c->in->amount : 0, v))
				*v = INT64_MAX;
		} else
			*v = st.declines;
		return 1;
	default:
		switch (o->attr) {
		case AT_AMOUNT:
			*v = c->in->amount;
			return 1;
		case AT_HOUR:
			*v = c->hour;
			return 1;
		default:
			return 0;
		}
	}
}

static int64_t
get_enum(const struct ectx *c, const struct operand *o)
{
	if (o->kind == OK_CONST)
		return o->ival;
	switch (o->attr) {
	case AT_WEEKDAY:
		return c->weekday;
	case AT_THREEDS:
		return c->threeds;
	case AT_MODE:
		return c->mode;
	case AT_CARD_SAVED:
		return c->in->card_saved != 0;
	default:
		return -1;
	}
}

static int
present(struct ectx *c, const struct operand *o)
{
	if (o->kind == OK_FN)
		return c->v != NULL && vel_key(c, o->dim) != NULL;
	switch (rules_attrs[o->attr].type) {
	case RT_STR:
		return get_str(c, o->attr) != NULL;
	case RT_BIN:
		return c->bin != NULL;
	case RT_IP:
		return get_ip(c) != NULL;
	default:
		return 1;
	}
}

static int
tv(int b)
{
	return b ? TV_TRUE : TV_FALSE;
}

static int
cmp_result(int op, int d)
{
	switch (op) {
	case OP_EQ:
		return tv(d == 0);
	case OP_NE:
		return tv(d != 0);
	case OP_LT:
		return tv(d < 0);
	case OP_LE:
		return tv(d <= 0);
	case OP_GT:
		return tv(d > 0);
	default:
		return tv(d >= 0);
	}
}

static int
eval_cmp(struct ectx *c, const struct node *n)
{
	int d;
	switch (n->type) {
	case RT_INT: {
		int64_t a, b;
		if (!get_int(c, &n->lhs, &a) || !get_int(c, &n->rhs, &b))
			return TV_UNKNOWN;
		d = a < b ? -1 : a > b;
		break;
	}
	case RT_STR: {
		const char *a = get_str(c, n->lhs.attr);
		const char *b = n->rhs.kind == OK_CONST ? n->rhs.sval : get_str(c, n->rhs.attr);
		if (a == NULL || b == NULL)
			return TV_UNKNOWN;
		d = rules_ascii_casecmp(a, b) != 0;
		break;
	}
	case RT_BIN:
		if (c->bin == NULL)
			return TV_UNKNOWN;
		d = n->rhs.kind == OK_CONST ? strcmp(c->bin, n->rhs.sval) != 0 : 0;
		break;
	case RT_IP: {
		const struct ip128 *a = get_ip(c);
		if (a == NULL)
			return TV_UNKNOWN;
		d = n->rhs.kind == OK_CONST ? (a->hi != n->rhs.ip.hi || a->lo != n->rhs.ip.lo)
		                            : 0;
		break;
	}
	default: /* RT_ENUM, RT_BOOL */
		d = get_enum(c, &n->lhs) != get_enum(c, &n->rhs);
		break;
	}
	return cmp_result(n->op, d);
}

static int
eval_in(struct ectx *c, const struct node *n)
{
	const struct rset *s = &c->r->sets[n->a];
	int hit;
	switch (s->kind) {
	case ST_STR:
	case ST_GLOB: {
		const char *v = get_str(c, n->lhs.attr);
		if (v == NULL)
			return TV_UNKNOWN;
		hit = s->kind == ST_STR ? rules_set_has_str(s, v) : rules_set_glob_any(s, v);
		break;
	}
	case ST_BIN:
		if (c->bin == NULL)
			return TV_UNKNOWN;
		hit = rules_set_has_bin(s, c->bin, c->binlen);
		break;
	case ST_CIDR: {
		const struct ip128 *ip = get_ip(c);
		if (ip == NULL)
			return TV_UNKNOWN;
		hit = rules_set_has_ip(s, ip);
		break;
	}
	default: {
		int64_t v;
		if (!get_int(c, &n->lhs, &v))
			return TV_UNKNOWN;
		hit = rules_set_has_int(s, v);
		break;
	}
	}
	return tv(hit != n->negate);
}

static int
eval_node(struct ectx *c, uint32_t idx)
{
	const struct node *n = &c->r->nodes[idx];
	int res, t, decides;
	switch (n->kind) {
	case N_AND:
	case N_OR:
		/* Three-valued: one kid with the deciding value (false for AND,
		 * true for OR) decides; else any unknown kid makes it unknown. */
		decides = n->kind == N_AND ? TV_FALSE : TV_TRUE;
		res = n->kind == N_AND ? TV_TRUE : TV_FALSE;
		for (uint32_t i = 0; i < n->b; i++) {
			if ((t = eval_node(c, c->r->kids[n->a + i])) == decides)
				return decides;
			if (t == TV_UNKNOWN)
				res = TV_UNKNOWN;
		}
		return res;
	case N_NOT:
		t = eval_node(c, n->a);
		return t == TV_UNKNOWN ? t : (t == TV_TRUE ? TV_FALSE : TV_TRUE);
	case N_CMP:
		return eval_cmp(c, n);
	case N_IN:
		return eval_in(c, n);
	case N_ENUM_IN:
		return tv((((n->mask >> get_enum(c, &n->lhs)) & 1) != 0) != n->negate);
	case N_PRESENT:
		return tv(present(c, &n->lhs) != n->negate);
	case N_BOOL:
		return tv(get_enum(c, &n->lhs) != 0);
	default:
		return TV_UNKNOWN;
	}
}

int
rules_eval(const struct rules *r, const struct rules_input *in, struct velocity *v,
           struct rules_decision *out)
{
	struct ectx c;
	size_t flen = 0;

	if (out)
		memset(out, 0, sizeof(*out));
	if (r == NULL || in == NULL || out == NULL)
		return FGW_ERR_INVALID;
	out->action = RULES_ALLOW;
	ctx_init(&c, r, in, v);
	if (v && r->max_window_ms > 0)
		velocity_ensure_retention(v, r->max_window_ms);
	for (size_t i = 0; i < r->nrules; i++) {
		const struct rrule *ru = &r->rules[i];
		size_t idlen;
		if (eval_node(&c, ru->cond) != TV_TRUE)
			continue;
		if (out->nfired++ == 0) {
			out->action = (enum rules_action)ru->action;
			memcpy(out->code, ru->code, sizeof(out->code));
			memcpy(out->rule_id, ru->id, sizeof(out->rule_id));
		}
		idlen = strlen(ru->id);
		if (flen + (flen ? 1 : 0) + idlen < sizeof(out->fired)) {
			if (flen)
				out->fired[flen++] = ',';
			memcpy(out->fired + flen, ru->id, idlen + 1);
			flen += idlen;
		}
	}
	return FGW_OK;
}

static int64_t
record_time(const struct rules_input *in)
{
	return in->now_ms ? in->now_ms : fgw_now_ms();
}

/* The payment in every velocity dimension it has a key for: recorded
 * (declined or not), or only its earlier record marked declined. Every
 * dimension is tried; the first error is returned. */
static int
record_dims(const struct rules_input *in, struct velocity *v, int mark_only, int declined)
{
	char key[VELOCITY_KEY_MAX + 1];
	int64_t now = record_time(in);
	int rc = FGW_OK;

	for (int d = 0; d < VELOCITY_NDIMS; d++) {
		int r2;
		if (rules_velocity_key(in, (enum velocity_dim)d, key, sizeof(key)) != 0)
			continue;
		r2 = mark_only ? velocity_mark_declined(v, (enum velocity_dim)d, key, now)
		               : velocity_record(v, (enum velocity_dim)d, key, now, in->amount,
		                                 declined);
		if (r2 != FGW_OK && rc == FGW_OK)
			rc = r2;
	}
	return rc;
}

int
rules_record(const struct rules_input *in, struct velocity *v, int declined)
{
	if (in == NULL || v == NULL || in->amount < 0)
		return FGW_ERR_INVALID;
	return record_dims(in, v, 0, declined);
}

int
rules_record_decline(const struct rules_input *in, struct velocity *v)
{
	if (in == NULL || v == NULL)
		return FGW_ERR_INVALID;
	return record_dims(in, v, 1, 0);
}
