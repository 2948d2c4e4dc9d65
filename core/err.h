/*
 * core/err.h — the one error-code convention of flairgw.
 *
 * Functions return 0 (FGW_OK) on success or a negative FGW_ERR_* code.
 * Nothing returns 1-for-success. fgw_strerror() names a code for logs.
 */
#ifndef FGW_CORE_ERR_H
#define FGW_CORE_ERR_H

#include <stddef.h>

#define FGW_OK 0

enum fgw_err {
	FGW_ERR_INTERNAL = -1,     /* a bug or an impossible state */
	FGW_ERR_NOMEM = -2,        /* allocation failed */
	FGW_ERR_INVALID = -3,      /* bad input (argument, body, file) */
	FGW_ERR_NOT_FOUND = -4,    /* no such row, key, route, file */
	FGW_ERR_EXISTS = -5,       /* already there */
	FGW_ERR_IO = -6,           /* read/write/socket failure */
	FGW_ERR_CRYPTO = -7,       /* authentication of ciphertext or MAC failed */
	FGW_ERR_DB = -8,           /* SQLite said no */
	FGW_ERR_TOO_LARGE = -9,    /* over a configured size limit */
	FGW_ERR_TIMEOUT = -10,     /* a deadline passed */
	FGW_ERR_STATE = -11,       /* not allowed in the current state */
	FGW_ERR_AUTH = -12,        /* credentials missing or wrong */
	FGW_ERR_CONFLICT = -13,    /* concurrent or contradictory request */
	FGW_ERR_UNAVAILABLE = -14, /* a dependency is down */
	FGW_ERR_SHUTDOWN = -15,    /* refused because we are stopping */
	FGW_ERR_LAST = -16
};

const char *fgw_strerror(int err);

/*
 * Error detail: the code says what kind of failure it was (callers branch
 * on it); a struct fgw_why says, for a person, why. A function that can
 * explain a refusal takes `struct fgw_why *why` as its last parameter
 * (NULL: no detail wanted) and fills it with fgw_why_set before it returns
 * its negative code. msg never echoes card data or secrets.
 */
struct fgw_why {
	char where[256]; /* what was wrong: a field, file or directive; "" */
	int line, col;   /* 1-based position in a file; 0 when none */
	char msg[512];
};

/* Fills why (NULL is fine): where may be NULL ("" then). */
void fgw_why_set(struct fgw_why *why, const char *where, int line, int col,
                 const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* "where:line:col: msg" (as much of it as is known: "where:line: msg",
 * "where: msg", "msg") into buf; returns buf. */
const char *fgw_why_format(const struct fgw_why *why, char *buf, size_t len);

#endif
