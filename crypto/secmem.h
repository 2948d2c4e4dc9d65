/*
 * crypto/secmem.h — guarded buffers for sensitive values (PAN, CVC, keys,
 * opened sealed boxes). Allocated with sodium_malloc (guard pages, mlock),
 * always NUL-terminated one byte past len, wiped and freed by secbuf_free.
 * Also the two ways secrets enter and leave files (KEK, shares, the
 * sandbox's secret key), so that they never pass through ordinary heap.
 */
#ifndef FGW_CRYPTO_SECMEM_H
#define FGW_CRYPTO_SECMEM_H

#include <stddef.h>

#include "core/err.h"

struct secbuf {
	unsigned char *data; /* len bytes + a NUL */
	size_t len;
};

/* Returns 0 and a zeroed buffer of len bytes in *out, or FGW_ERR_NOMEM. */
int secbuf_alloc(struct secbuf **out, size_t len);
/* Copies n bytes of s into a new guarded buffer. */
int secbuf_from(struct secbuf **out, const void *s, size_t n);
/* Wipes and frees; NULL is fine. */
void secbuf_free(struct secbuf *b);
/* Process hygiene: disables core dumps (RLIMIT_CORE 0, PR_SET_DUMPABLE 0).
 * Returns 0 or FGW_ERR_IO. */
int secmem_harden_process(void);

/* Reads a file of exactly len raw bytes into a new guarded buffer.
 * Refuses anything but a regular file whose mode gives group and others no
 * access at all. Returns 0 or a negative FGW_ERR_* code: FGW_ERR_NOT_FOUND
 * (no such file), FGW_ERR_INVALID (not a regular file, a mode open to
 * group or others, not exactly len bytes) or FGW_ERR_IO; why (NULL: no
 * detail) gets the path as where and the check that failed as msg, a
 * phrase to follow the file's name ("is not a regular file"). */
int secbuf_read_secret_file(const char *path, size_t len, struct secbuf **out,
                            struct fgw_why *why);
/* Creates path exclusively (O_EXCL, mode 0600) holding b's bytes and
 * fsyncs it: an existing secret is never overwritten (FGW_ERR_EXISTS). */
int secbuf_write_secret_file(const char *path, const struct secbuf *b);

#endif
