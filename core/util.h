/*
 * core/util.h — small helpers every room uses: clocks (with a test clock
 * offset), random identifiers, ISO 8601 times, checked integer parsing,
 * base64 and hex. Base64 here is the standard alphabet with padding.
 */
#ifndef FGW_CORE_UTIL_H
#define FGW_CORE_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* Wall clock in ms since the epoch, plus the offset set for tests. */
int64_t fgw_now_ms(void);
/* Shifts fgw_now_ms() by offset_ms (an injectable clock for tests). */
void fgw_clock_set_offset_ms(int64_t offset_ms);
int64_t fgw_clock_offset_ms(void);
/* Monotonic clock in ms, for timeouts and durations. */
int64_t fgw_mono_ms(void);

/* Ids are prefix + 24 base62 characters (0-9A-Za-z): 8 for the creation
 * time in ms (most significant first, so ids sort by time; good until the
 * year 8888) and 16 random ones (95 bits). */
#define FGW_ID_CHARS 24
#define FGW_ID_TIME_CHARS 8
#define FGW_ID_RANDOM_CHARS 16
#define FGW_ID_TIME_MAX 218340105584895LL /* 62^8 - 1 */
/* Writes prefix + a new id (see above). Returns 0 or FGW_ERR_TOO_LARGE
 * when out is too small (needs strlen(prefix) + 25). */
int fgw_random_id(const char *prefix, char *out, size_t outlen);
/* The creation time (ms) encoded by an id's characters after its prefix,
 * or -1 when they are not base62. */
int64_t fgw_id_time_ms(const char *chars);

/* Formats ms since the epoch as "2024-01-01T12:15:00Z" (needs 21 bytes). */
int fgw_iso8601(int64_t ms, char *out, size_t outlen);

/* Parses a whole decimal string into [min, max]. 0 or FGW_ERR_INVALID. */
int fgw_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out);
/* A configuration yes/no: 1, yes, on, true or 0, no, off, false into *out
 * (1 or 0). FGW_ERR_INVALID for anything else. */
int fgw_parse_bool(const char *s, long long *out);

/* Base64 (standard, padded). *out is malloc'ed and NUL-terminated. */
int fgw_b64_encode(const void *in, size_t len, char **out);
/* Decodes into malloc'ed *out; FGW_ERR_INVALID on bad input. */
int fgw_b64_decode(const char *in, size_t inlen, unsigned char **out, size_t *outlen);

/* Lower-case hex of len bytes into out (needs 2*len+1). */
void fgw_hex(const unsigned char *in, size_t len, char *out);
/* The value of one hex digit (either case), or -1 for any other c.
 * Inline: core/json.c uses it and links without the rest of util.c
 * (libsodium). */
static inline int
fgw_hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Reads a whole file (at most max bytes) into malloc'ed, NUL-terminated
 * *out. FGW_ERR_NOT_FOUND, FGW_ERR_IO or FGW_ERR_TOO_LARGE. */
int fgw_read_file(const char *path, size_t max, char **out, size_t *outlen);
/* fgw_read_file for a secret: trailing CR and LF are not part of it (the
 * newline an editor or `echo` leaves), so every reader of a secret file
 * (daemon, flairctl, sandbox) sees the same bytes. */
int fgw_read_secret_file(const char *path, size_t max, char **out, size_t *outlen);
/* Wipes len bytes at p (explicit_bzero: the compiler may not drop it)
 * and frees p; NULL is fine. The one way a heap secret is released
 * (OpenSSH's freezero): a key, a secret file's text, a card's field. */
void fgw_freezero(void *p, size_t len);
/* Writes data to path atomically (tmp + fsync + rename) with mode. */
int fgw_write_file_atomic(const char *path, const void *data, size_t len, int mode);
/* mkdir -p with mode for created directories. */
int fgw_mkdirs(const char *path, int mode);

/* Bounded copy; returns FGW_ERR_TOO_LARGE if src did not fit. */
int fgw_strlcpy(char *dst, const char *src, size_t cap);

#endif
