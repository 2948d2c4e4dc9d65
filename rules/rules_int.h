/*
 * rules/rules_int.h — private to rules/: the compiled form that the parser
 * (parse.c) builds, the sets and BIN table (sets.c), and the evaluator
 * (eval.c) walks.
 *
 * A compiled set is flat arrays: rules point at condition nodes, and/or
 * nodes point at a run of child indices in kids[], membership tests point
 * at sets[]. Strings live in an arena freed with the set.
 */
#ifndef FGW_RULES_RULES_INT_H
#define FGW_RULES_RULES_INT_H

#include <stdatomic.h>
#include <stdint.h>

#include "rules/rules.h"

#define RULES_MAX_DEPTH 64    /* nesting of parentheses and `not` */
#define RULES_VSLOTS 64       /* velocity results cached per evaluation */
#define RULES_MAX_WINDOWS 256 /* distinct (dimension, window) pairs */
#define RULES_BIN_MAX 12      /* digits in a BIN prefix */
#define RULES_STR_MAX 1024    /* a string literal or list entry */
#define RULES_NAME_MAX 64     /* identifiers */
#define RULES_MAX_WINDOW_MS (90LL * 24 * 3600 * 1000)

enum rtype { RT_INT, RT_STR, RT_BIN, RT_IP, RT_ENUM, RT_BOOL };
/* What a text value of an attribute must look like. */
enum skind { SK_ANY, SK_COUNTRY, SK_CURRENCY, SK_BRAND, SK_N };
enum ekind { EK_NONE, EK_WEEKDAY, EK_THREEDS, EK_MODE, EK_BOOL };

enum attr {
	AT_AMOUNT,
	AT_CURRENCY,
	AT_CARD_BRAND,
	AT_CARD_BIN,
	AT_CARD_COUNTRY,
	AT_CARD_SAVED,
	AT_CUSTOMER_COUNTRY,
	AT_CUSTOMER_ID,
	AT_IP,
	AT_EMAIL,
	AT_EMAIL_DOMAIN,
	AT_PROCESSOR,
	AT_HOUR,
	AT_WEEKDAY,
	AT_THREEDS,
	AT_MODE,
	AT_FINGERPRINT,
	AT_DECLINES,
	AT_NATTRS
};
enum fn { FN_COUNT, FN_SUM, FN_DECLINES };

struct attr_info {
	const char *name;
	uint8_t type, skind, ekind;
	int64_t min, max; /* RT_INT literals */
};
extern const struct attr_info rules_attrs[AT_NATTRS];
/* Names of the values of an enum kind, NULL-terminated. */
extern const char *const *const rules_enum_values[];

struct ip128 {
	uint64_t hi, lo;
};
struct iprange {
	struct ip128 lo, hi;
};
struct binrange {
	uint64_t lo, hi;
	uint8_t len;
};
struct irange {
	int64_t lo, hi;
};

enum setkind { ST_STR, ST_BIN, ST_CIDR, ST_INT, ST_GLOB };

struct rset {
	uint8_t kind;
	size_t n;
	union {
		char **str; /* ST_STR sorted, ST_GLOB in order; lower-case */
		struct binrange *bin;
		struct iprange *ip;
		struct irange *num;
	} u;
	uint32_t off[RULES_BIN_MAX + 2]; /* ST_BIN: length L at [off[L], off[L+1]) */
};

struct binent {
	uint64_t v;
	uint32_t line;
	uint8_t len;
	char cc[3];
};
struct bintable {
	struct binent *v;
	size_t n;
	uint32_t off[RULES_BIN_MAX + 2];
};

enum okind { OK_ATTR, OK_FN, OK_CONST };
struct operand {
	uint8_t kind, attr, fn, dim;
	uint16_t vslot;    /* OK_FN: result cache slot, or 0xffff */
	int64_t window_ms; /* OK_FN */
	int64_t ival;      /* OK_CONST: INT, ENUM index, BOOL */
	const char *sval;  /* OK_CONST: STR (lower-case), BIN digits */
	struct ip128 ip;   /* OK_CONST: IP */
};

enum nkind { N_AND, N_OR, N_NOT, N_CMP, N_IN, N_ENUM_IN, N_PRESENT, N_BOOL };
enum cmpop { OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE };

struct node {
	uint8_t kind, op, negate, type;
	uint32_t a, b; /* AND/OR: kids[a .. a+b); NOT: a = child; IN: a = set */
	uint64_t mask; /* N_ENUM_IN: bit per enum value */
	struct operand lhs, rhs;
};

struct rrule {
	char id[32];
	char code[40];
	const char *desc;
	uint32_t cond;
	uint8_t action;
	int line, col;
};

struct vslot {
	uint8_t dim;
	int64_t window_ms;
};

/* The cached velocity windows of one dimension, ascending, so one query
 * per dimension fills every slot of it. */
struct vgroup {
	uint32_t n;
	uint8_t slot[RULES_VSLOTS];
	int64_t window_ms[RULES_VSLOTS];
};

struct arena_chunk;

struct rules {
	atomic_int refs;
	struct rrule *rules;
	size_t nrules;
	struct node *nodes;
	size_t nnodes;
	uint32_t *kids;
	size_t nkids;
	struct rset *sets;
	size_t nsets;
	struct vslot *vslots;
	size_t nvslots;
	struct vgroup vgroups[VELOCITY_NDIMS];
	struct bintable bins;
	int64_t max_window_ms;
	struct arena_chunk *arena;
};

/* parse.c */
int rules_compile(struct rules *r, const char *text, const char *name,
                  const char *base_dir, const struct rules_load_opts *opts,
                  struct fgw_why *err);
char *rules_arena_strdup(struct rules *r, const char *s, size_t n);
void rules_arena_free(struct arena_chunk *a);

/* sets.c */
int rules_ascii_casecmp(const char *a, const char *b);
void rules_ascii_lower(char *s);
int rules_parse_ip(const char *s, struct ip128 *out);
/* 0, or FGW_ERR_INVALID with why filled. */
int rules_parse_cidr(const char *s, struct iprange *out, struct fgw_why *why);
int rules_parse_binrange(const char *s, struct binrange *out, const char **why);
int rules_parse_irange(const char *s, struct irange *out, const char **why);
int rules_digits(const char *s, size_t *len);
int rules_glob(const char *pat, const char *s);
/* Sorts, drops duplicates and merges ranges; builds the BIN offsets. */
int rules_set_finish(struct rset *s);
int rules_set_has_str(const struct rset *s, const char *v);
int rules_set_has_bin(const struct rset *s, const char *bin, size_t len);
int rules_set_has_ip(const struct rset *s, const struct ip128 *ip);
int rules_set_has_int(const struct rset *s, int64_t v);
int rules_set_glob_any(const struct rset *s, const char *v);
void rules_set_free(struct rset *s);
int rules_bintable_load(struct bintable *t, const char *text, const char *file,
                        struct fgw_why *err);
const char *rules_bintable_country(const struct bintable *t, const char *bin, size_t len);
void rules_bintable_free(struct bintable *t);

/* eval.c */
int rules_velocity_key(const struct rules_input *in, enum velocity_dim dim, char *buf,
                       size_t cap);


#endif
