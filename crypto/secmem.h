/*
 * crypto/secmem.h — guarded buffers for sensitive values (PAN, CVC, keys,
 * opened sealed boxes). Allocated with sodium_malloc (guard pages, mlock),
 * always NUL-terminated one byte past len, wiped and freed by secbuf_free.
 */
#ifndef FGW_CRYPTO_SECMEM_H
#define FGW_CRYPTO_SECMEM_H

#include <stddef.h>

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

#endif
