/*
 * crypto/secmem.c — guarded buffers (sodium_malloc: guard pages, mlock,
 * wiped by sodium_free), secret files read and written straight into and
 * out of those buffers, and the process hardening that keeps secrets out
 * of core dumps.
 *
 * The struct itself is ordinary heap (a pointer and a length are not
 * secret); only the bytes behind data live in guarded memory.
 *
 * Guarded regions are recycled. sodium_malloc costs an mmap, two mprotects
 * and an mlock, and sodium_free an munlock and an munmap with a TLB
 * shootdown on every core: the profile of the full pipeline showed a fifth
 * of flairgw's CPU in those calls, for the handful of small secrets each
 * transaction holds. Buffers of at most SECMEM_CLASS_MAX bytes therefore
 * come from power-of-two size classes; a released region is wiped whole
 * (sodium_memzero) and kept, still guarded and locked, on a free list of at
 * most SECMEM_CACHE_PER_CLASS regions. The data pointer is placed so the
 * buffer still ends where sodium_malloc would have put it, against the
 * trailing guard page, so an overrun still faults.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "core/err.h"
#include "crypto/secmem.h"

#define SECMEM_CLASS_MIN_SHIFT 5 /* 32 bytes */
#define SECMEM_CLASSES 8         /* 32 .. 4096 bytes */
#define SECMEM_CLASS_MAX ((size_t)1 << (SECMEM_CLASS_MIN_SHIFT + SECMEM_CLASSES - 1))
#define SECMEM_CACHE_PER_CLASS 256

/* What secbuf_alloc hands out: the public part first, so a struct secbuf *
 * converts back to this. region is what sodium_malloc returned; cls is the
 * size class index, or -1 for a region sized exactly (not recycled). */
struct secbuf_impl {
	struct secbuf pub;
	unsigned char *region;
	int cls;
	struct secbuf_impl *next; /* on a free list */
};

static pthread_mutex_t cache_mu = PTHREAD_MUTEX_INITIALIZER;
static struct secbuf_impl *cache[SECMEM_CLASSES];
static int cache_n[SECMEM_CLASSES];

static int
size_class(size_t n)
{
	int c = 0;
	if (n > SECMEM_CLASS_MAX)
		return -1;
	while (((size_t)1 << (SECMEM_CLASS_MIN_SHIFT + c)) < n)
		c++;
	return c;
}

int
secbuf_alloc(struct secbuf **out, size_t len)
{
	struct secbuf_impl *b = NULL;
	size_t cap;
	int cls, r = FGW_ERR_NOMEM;

	*out = NULL;
	if (len == SIZE_MAX)
		return FGW_ERR_TOO_LARGE;
	cls = size_class(len + 1);
	cap = cls < 0 ? len + 1 : (size_t)1 << (SECMEM_CLASS_MIN_SHIFT + cls);
	if (cls >= 0) {
		pthread_mutex_lock(&cache_mu);
		if ((b = cache[cls]) != NULL) {
			cache[cls] = b->next;
			cache_n[cls]--;
		}
		pthread_mutex_unlock(&cache_mu);
	}
	if (b == NULL) {
		if ((b = calloc(1, sizeof(*b))) == NULL)
			goto out;
		if ((b->region = sodium_malloc(cap)) == NULL)
			goto out;
		/* sodium_malloc fills with 0xdb; the contract is a zeroed buffer
		 * (a recycled region was wiped whole when it was released). */
		sodium_memzero(b->region, cap);
		b->cls = cls;
	}
	b->next = NULL;
	/* End the buffer (and its NUL) at the end of the region, next to the
	 * guard page, as sodium_malloc(len + 1) itself would. */
	b->pub.data = b->region + (cap - (len + 1));
	b->pub.len = len;
	*out = &b->pub;
	b = NULL; /* owned by the caller now */
	r = FGW_OK;
out:
	free(b);
	return r;
}

int
secbuf_from(struct secbuf **out, const void *s, size_t n)
{
	int r;

	if ((r = secbuf_alloc(out, n)) != FGW_OK)
		return r;
	if (n > 0)
		memcpy((*out)->data, s, n);
	return FGW_OK;
}

void
secbuf_free(struct secbuf *pub)
{
	struct secbuf_impl *b = (struct secbuf_impl *)pub;
	int kept = 0;

	if (b == NULL)
		return;
	if (b->cls >= 0) {
		/* Wiped before it is kept: a recycled region holds no old secret. */
		sodium_memzero(b->region, (size_t)1 << (SECMEM_CLASS_MIN_SHIFT + b->cls));
		b->pub.data = NULL;
		b->pub.len = 0;
		pthread_mutex_lock(&cache_mu);
		if (cache_n[b->cls] < SECMEM_CACHE_PER_CLASS) {
			b->next = cache[b->cls];
			cache[b->cls] = b;
			cache_n[b->cls]++;
			kept = 1;
		}
		pthread_mutex_unlock(&cache_mu);
	}
	if (kept)
		return;
	/* sodium_free wipes the whole region before unmapping it. */
	sodium_free(b->region);
	free(b);
}

int
secmem_harden_process(void)
{
	struct rlimit rl = { 0, 0 };

	if (setrlimit(RLIMIT_CORE, &rl) != 0)
		return FGW_ERR_IO;
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
		return FGW_ERR_IO;
	return FGW_OK;
}

int
secbuf_read_secret_file(const char *path, size_t len, struct secbuf **out,
                        struct fgw_why *why)
{
	struct secbuf *b = NULL;
	struct stat st;
	size_t got = 0;
	int fd = -1, r = FGW_ERR_IO;

	*out = NULL;
	fgw_why_set(why, path, 0, 0, "cannot be read");
	/* O_NONBLOCK: a FIFO planted at the path must not hang start-up. */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0) {
		if (errno == ENOENT) {
			fgw_why_set(why, path, 0, 0, "not found");
			r = FGW_ERR_NOT_FOUND;
		}
		goto out;
	}
	/* Checks run on the opened descriptor, so the file cannot be swapped
	 * between the check and the read. */
	if (fstat(fd, &st) != 0)
		goto out;
	if (!S_ISREG(st.st_mode)) {
		fgw_why_set(why, path, 0, 0, "is not a regular file");
		r = FGW_ERR_INVALID;
		goto out;
	}
	if ((st.st_mode & 077) != 0) {
		fgw_why_set(why, path, 0, 0, "is accessible by group or others (chmod 600 it)");
		r = FGW_ERR_INVALID;
		goto out;
	}
	if (st.st_size < 0 || (unsigned long long)st.st_size != len) {
		fgw_why_set(why, path, 0, 0, "must hold exactly %zu raw bytes", len);
		r = FGW_ERR_INVALID;
		goto out;
	}
	if ((r = secbuf_alloc(&b, len)) != FGW_OK)
		goto out;
	while (got < len) {
		ssize_t n = read(fd, b->data + got, len - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			/* Shrunk under us: treat as the wrong size. */
			if (n == 0)
				fgw_why_set(why, path, 0, 0, "must hold exactly %zu raw bytes", len);
			r = n == 0 ? FGW_ERR_INVALID : FGW_ERR_IO;
			goto out;
		}
		got += (size_t)n;
	}
	*out = b;
	b = NULL; /* owned by the caller now */
	fgw_why_set(why, path, 0, 0, "%s", "");
	r = FGW_OK;
out:
	if (fd >= 0)
		close(fd);
	secbuf_free(b);
	return r;
}

int
secbuf_write_secret_file(const char *path, const struct secbuf *b)
{
	const unsigned char *p = b->data;
	size_t left = b->len;
	int fd, r = FGW_ERR_IO;

	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return errno == EEXIST ? FGW_ERR_EXISTS : FGW_ERR_IO;
	while (left > 0) {
		ssize_t n = write(fd, p, left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			goto out;
		p += n;
		left -= (size_t)n;
	}
	/* The umask may only have removed bits; make the mode exact. */
	if (fchmod(fd, 0600) != 0 || fsync(fd) != 0)
		goto out;
	r = FGW_OK;
out:
	if (close(fd) != 0 && r == FGW_OK)
		r = FGW_ERR_IO;
	if (r != FGW_OK)
		unlink(path);
	return r;
}
