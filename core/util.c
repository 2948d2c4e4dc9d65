/*
 * core/util.c — clocks, ids, time formatting, parsing, base64 and files.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "core/err.h"
#include "core/util.h"

static _Atomic int64_t clock_offset_ms;

int64_t
fgw_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 +
	       atomic_load(&clock_offset_ms);
}

void
fgw_clock_set_offset_ms(int64_t offset_ms)
{
	atomic_store(&clock_offset_ms, offset_ms);
}

int64_t
fgw_clock_offset_ms(void)
{
	return atomic_load(&clock_offset_ms);
}

int64_t
fgw_mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char base62[] =
    "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/* n uniformly random base62 characters. One getrandom for the whole run,
 * not one per character: the profile showed randombytes_uniform's syscall
 * per character as a quarter of a reactor's CPU. Bytes >= 248 (4 * 62)
 * are rejected so every character stays uniform; twice n bytes leave n to
 * spare, and a refill covers the (vanishingly rare) run of rejects. */
static void
random_base62(char *out, size_t n)
{
	unsigned char rnd[2 * FGW_ID_RANDOM_CHARS];
	size_t i = 0, k = sizeof(rnd);
	while (i < n) {
		if (k == sizeof(rnd)) {
			randombytes_buf(rnd, sizeof(rnd));
			k = 0;
		}
		unsigned char b = rnd[k++];
		if (b < 248)
			out[i++] = base62[b % 62];
	}
	sodium_memzero(rnd, sizeof(rnd));
}

int
fgw_random_id(const char *prefix, char *out, size_t outlen)
{
	size_t plen = strlen(prefix);
	int64_t t = fgw_now_ms();
	if (outlen < plen + FGW_ID_CHARS + 1)
		return FGW_ERR_TOO_LARGE;
	memcpy(out, prefix, plen);
	/* Fixed-width time, most significant digit first: the alphabet is in
	 * ASCII order, so ids sort by creation time and a new row's primary
	 * key lands next to the last one's instead of on a random page. */
	if (t < 0)
		t = 0;
	if (t > FGW_ID_TIME_MAX)
		t = FGW_ID_TIME_MAX;
	for (int i = FGW_ID_TIME_CHARS - 1; i >= 0; i--) {
		out[plen + (size_t)i] = base62[t % 62];
		t /= 62;
	}
	random_base62(out + plen + FGW_ID_TIME_CHARS, FGW_ID_RANDOM_CHARS);
	out[plen + FGW_ID_CHARS] = '\0';
	return FGW_OK;
}

int64_t
fgw_id_time_ms(const char *chars)
{
	int64_t t = 0;
	for (int i = 0; i < FGW_ID_TIME_CHARS; i++) {
		const char *p = chars[i] ? strchr(base62, chars[i]) : NULL;
		if (p == NULL)
			return -1;
		t = t * 62 + (p - base62);
	}
	return t;
}

int
fgw_iso8601(int64_t ms, char *out, size_t outlen)
{
	struct tm tm;
	time_t secs = (time_t)(ms / 1000);
	if (gmtime_r(&secs, &tm) == NULL)
		return FGW_ERR_INVALID;
	int n = snprintf(out, outlen, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900,
	                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
	return (n < 0 || (size_t)n >= outlen) ? FGW_ERR_TOO_LARGE : FGW_OK;
}

int
fgw_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out)
{
	char *end = NULL;
	long long v;
	if (s == NULL || *s == '\0')
		return FGW_ERR_INVALID;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
		return FGW_ERR_INVALID;
	*out = v;
	return FGW_OK;
}

int
fgw_b64_encode(const void *in, size_t len, char **out)
{
	size_t cap = sodium_base64_encoded_len(len, sodium_base64_VARIANT_ORIGINAL);
	char *s = malloc(cap);
	if (s == NULL)
		return FGW_ERR_NOMEM;
	sodium_bin2base64(s, cap, in, len, sodium_base64_VARIANT_ORIGINAL);
	*out = s;
	return FGW_OK;
}

int
fgw_b64_decode(const char *in, size_t inlen, unsigned char **out, size_t *outlen)
{
	size_t cap = inlen / 4 * 3 + 3, got = 0;
	const char *end = NULL;
	unsigned char *buf = malloc(cap ? cap : 1);
	if (buf == NULL)
		return FGW_ERR_NOMEM;
	if (sodium_base642bin(buf, cap, in, inlen, NULL, &got, &end,
	                      sodium_base64_VARIANT_ORIGINAL) != 0 ||
	    end != in + inlen) {
		free(buf);
		return FGW_ERR_INVALID;
	}
	*out = buf;
	*outlen = got;
	return FGW_OK;
}

void
fgw_hex(const unsigned char *in, size_t len, char *out)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < len; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * len] = '\0';
}

int
fgw_read_file(const char *path, size_t max, char **out, size_t *outlen)
{
	int fd, r = FGW_ERR_IO;
	char *buf = NULL;
	size_t len = 0, cap = 4096;
	ssize_t n;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return errno == ENOENT ? FGW_ERR_NOT_FOUND : FGW_ERR_IO;
	if ((buf = malloc(cap + 1)) == NULL) {
		r = FGW_ERR_NOMEM;
		goto out;
	}
	for (;;) {
		if (len == cap) {
			char *nb;
			if (cap >= max) {
				r = FGW_ERR_TOO_LARGE;
				goto out;
			}
			cap = cap * 2 > max ? max : cap * 2;
			if ((nb = realloc(buf, cap + 1)) == NULL) {
				r = FGW_ERR_NOMEM;
				goto out;
			}
			buf = nb;
		}
		n = read(fd, buf + len, cap - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			goto out;
		if (n == 0)
			break;
		len += (size_t)n;
		if (len > max) {
			r = FGW_ERR_TOO_LARGE;
			goto out;
		}
	}
	buf[len] = '\0';
	*out = buf;
	buf = NULL;
	if (outlen)
		*outlen = len;
	r = FGW_OK;
out:
	free(buf);
	close(fd);
	return r;
}

int
fgw_read_secret_file(const char *path, size_t max, char **out, size_t *outlen)
{
	size_t len = 0;
	int r = fgw_read_file(path, max, out, &len);
	if (r != FGW_OK)
		return r;
	while (len > 0 && ((*out)[len - 1] == '\n' || (*out)[len - 1] == '\r'))
		(*out)[--len] = '\0';
	if (outlen)
		*outlen = len;
	return FGW_OK;
}

int
fgw_write_file_atomic(const char *path, const void *data, size_t len, int mode)
{
	char tmp[PATH_MAX];
	int fd, n;
	const char *p = data;

	n = snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
	if (n < 0 || (size_t)n >= sizeof(tmp))
		return FGW_ERR_TOO_LARGE;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd < 0)
		return FGW_ERR_IO;
	while (len > 0) {
		ssize_t w = write(fd, p, len);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			close(fd);
			unlink(tmp);
			return FGW_ERR_IO;
		}
		p += w;
		len -= (size_t)w;
	}
	if (fchmod(fd, (mode_t)mode) != 0 || fsync(fd) != 0 || close(fd) != 0) {
		unlink(tmp);
		return FGW_ERR_IO;
	}
	if (rename(tmp, path) != 0) {
		unlink(tmp);
		return FGW_ERR_IO;
	}
	return FGW_OK;
}

int
fgw_mkdirs(const char *path, int mode)
{
	char buf[PATH_MAX];
	if (fgw_strlcpy(buf, path, sizeof(buf)) != FGW_OK)
		return FGW_ERR_TOO_LARGE;
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, (mode_t)mode) != 0 && errno != EEXIST)
			return FGW_ERR_IO;
		*p = '/';
	}
	if (mkdir(buf, (mode_t)mode) != 0 && errno != EEXIST)
		return FGW_ERR_IO;
	return FGW_OK;
}

int
fgw_strlcpy(char *dst, const char *src, size_t cap)
{
	size_t n = strlen(src);
	if (cap == 0)
		return FGW_ERR_TOO_LARGE;
	if (n >= cap) {
		memcpy(dst, src, cap - 1);
		dst[cap - 1] = '\0';
		return FGW_ERR_TOO_LARGE;
	}
	memcpy(dst, src, n + 1);
	return FGW_OK;
}

int
fgw_parse_bool(const char *s, long long *out)
{
	static const char *const yes[] = { "1", "yes", "on", "true" };
	static const char *const no[] = { "0", "no", "off", "false" };

	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (strcmp(s, yes[i]) == 0) {
			*out = 1;
			return FGW_OK;
		}
		if (strcmp(s, no[i]) == 0) {
			*out = 0;
			return FGW_OK;
		}
	}
	return FGW_ERR_INVALID;
}
