/*
 * rules/rules.h — the rules engine: a small language for risk analysts
 * (docs/rules.md), compiled once into an immutable set, evaluated per
 * transaction without allocating.
 *
 * Evaluation is first-match: rules are tried in file order and the first
 * rule whose condition holds decides the action; when none holds the
 * answer is allow. Every rule is still evaluated so that the decision can
 * list all the rules that matched, for the audit trail.
 *
 * A compiled set is reference counted and never changes, so any number of
 * threads may evaluate it at once and a reload can swap in a new set while
 * evaluations finish on the old one (rules_slot does that swap safely).
 *
 * Velocity counters live in a separate store (rules/velocity.h) shared by
 * every thread: rules_eval reads it, rules_record writes it.
 */
#ifndef FGW_RULES_RULES_H
#define FGW_RULES_RULES_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"
#include "rules/velocity.h"

struct rules;
struct rules_slot;

enum rules_action {
	RULES_ALLOW = 0,
	RULES_REVIEW,      /* allowed, flagged for a person to look at */
	RULES_REQUIRE_3DS, /* go on only with 3-D Secure */
	RULES_DECLINE      /* refused with a reason code */
};

struct rules_load_opts {
	const char *base_dir;  /* relative list/BIN-table paths; NULL: the
	                          rules file's directory (or the name's) */
	int no_files;          /* 1: refuse `file` and `bin_table` (fuzzing,
	                          untrusted text) */
	size_t max_file_bytes; /* per file read; 0: 16 MiB */
};

/* What a transaction looks like to the rules. Strings may be NULL or ""
 * (the attribute is then missing). No PAN: only the BIN. */
struct rules_input {
	int64_t amount;               /* minor units */
	const char *currency;         /* "USD" */
	const char *brand;            /* "Visa"; NULL: derived from bin */
	const char *bin;              /* first 6 (or 8) digits */
	const char *customer_country; /* "US" */
	const char *ip;               /* "203.0.113.7" or "2001:db8::1" */
	const char *email;
	const char *processor;
	const char *fingerprint; /* card fingerprint (hex) */
	const char *customer_id;
	const char *threeds; /* none, required, authenticated, failed */
	const char *mode;    /* "development"; anything else counts
	                                 as production */
	int card_saved;      /* 1: a saved (vaulted) card */
	int64_t now_ms;      /* transaction time; 0: the clock now */
	const char *txn_id;  /* the transaction's id, or NULL: lets the
	                        gateway tell its own attempts from other
	                        instances' (pipeline/velsync.h) */
};

struct rules_decision {
	enum rules_action action;
	char code[40];    /* decline code; "" for other actions */
	char rule_id[32]; /* the deciding rule; "" when no rule matched */
	char fired[256];  /* every matching rule id in file order, comma-
	                     separated; as many whole ids as fit */
	int nfired;       /* how many rules matched */
};

/* Compiles a rules file. On error returns FGW_ERR_INVALID (or NOMEM,
 * NOT_FOUND, IO, TOO_LARGE for the file itself), fills *err when err is
 * not NULL and sets *out to NULL: a file with any error is refused whole.
 * On success *out holds one reference. opts may be NULL. */
int rules_load_file(const char *path, const struct rules_load_opts *opts,
                    struct rules **out, struct fgw_why *err);
/* Same, from text; name is used in error messages. */
int rules_load_string(const char *text, const char *name,
                      const struct rules_load_opts *opts, struct rules **out,
                      struct fgw_why *err);

/* Reference counting; rules_unref frees on the last reference. Both are
 * thread-safe and accept NULL. rules_ref returns r. */
struct rules *rules_ref(struct rules *r);
void rules_unref(struct rules *r);

/* Decides for in. v may be NULL (velocity values are then missing).
 * count() and sum() include this transaction, declines() only earlier
 * ones. Does not allocate and does not record anything; raises the
 * store's retention to the set's longest window. 0 or FGW_ERR_INVALID. */
int rules_eval(const struct rules *r, const struct rules_input *in, struct velocity *v,
               struct rules_decision *out);
/* Records this attempt under every velocity dimension the input has a key
 * for (card = fingerprint, customer = customer id else e-mail, ip = the
 * IPv4 address or IPv6 /64, email). Call once per attempt after
 * rules_eval, with the same in->now_ms; declined: 1 if it was declined
 * already (by the rules). Also the way to replay history at start.
 * 0 or a negative FGW_ERR_* code. */
int rules_record(const struct rules_input *in, struct velocity *v, int declined);
/* The attempt recorded at in->now_ms was declined later (processor). */
int rules_record_decline(const struct rules_input *in, struct velocity *v);

/* "allow", "review", "require_3ds", "decline". */
const char *rules_action_name(enum rules_action a);
/* One line for people: action, code, deciding rule and its description,
 * and what else fired. Returns buf. */
const char *rules_describe_decision(const struct rules *r, const struct rules_decision *d,
                                    char *buf, size_t len);
/* Number of rules in the set. */
size_t rules_count(const struct rules *r);
/* Longest velocity window the set uses (0 when none): what the velocity
 * store must retain and how far back a replay must go. */
int64_t rules_max_window_ms(const struct rules *r);

/* A place holding the current set, for reloads: get takes a reference
 * under a lock (NULL when the slot is empty), set swaps atomically and
 * drops the slot's old reference. rules_slot_new takes over the caller's
 * reference to initial (may be NULL) when it succeeds; rules_slot_set
 * takes over r's. */
int rules_slot_new(struct rules *initial, struct rules_slot **out);
struct rules *rules_slot_get(struct rules_slot *s);
void rules_slot_set(struct rules_slot *s, struct rules *r);
void rules_slot_free(struct rules_slot *s);

#endif
