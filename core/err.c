/* core/err.c — names for FGW_ERR_* codes. */
#include <stdarg.h>
#include <stdio.h>

#include "core/err.h"

const char *
fgw_strerror(int err)
{
	switch (err) {
	case FGW_OK:
		return "success";
	case FGW_ERR_INTERNAL:
		return "internal error";
	case FGW_ERR_NOMEM:
		return "out of memory";
	case FGW_ERR_INVALID:
		return "invalid input";
	case FGW_ERR_NOT_FOUND:
		return "not found";
	case FGW_ERR_EXISTS:
		return "already exists";
	case FGW_ERR_IO:
		return "I/O error";
	case FGW_ERR_CRYPTO:
		return "cryptographic check failed";
	case FGW_ERR_DB:
		return "database error";
	case FGW_ERR_TOO_LARGE:
		return "too large";
	case FGW_ERR_TIMEOUT:
		return "timed out";
	case FGW_ERR_STATE:
		return "invalid state";
	case FGW_ERR_AUTH:
		return "authentication failed";
	case FGW_ERR_CONFLICT:
		return "conflict";
	case FGW_ERR_UNAVAILABLE:
		return "unavailable";
	case FGW_ERR_SHUTDOWN:
		return "shutting down";
	default:
		return "unknown error";
	}
}

void
fgw_why_set(struct fgw_why *why, const char *where, int line, int col, const char *fmt,
            ...)
{
	va_list ap;
	if (why == NULL)
		return;
	snprintf(why->where, sizeof(why->where), "%s", where ? where : "");
	why->line = line;
	why->col = col;
	va_start(ap, fmt);
	vsnprintf(why->msg, sizeof(why->msg), fmt, ap);
	va_end(ap);
}

const char *
fgw_why_format(const struct fgw_why *why, char *buf, size_t len)
{
	if (len == 0)
		return buf;
	if (why->where[0] != '\0' && why->line > 0 && why->col > 0)
		snprintf(buf, len, "%s:%d:%d: %s", why->where, why->line, why->col, why->msg);
	else if (why->where[0] != '\0' && why->line > 0)
		snprintf(buf, len, "%s:%d: %s", why->where, why->line, why->msg);
	else if (why->where[0] != '\0')
		snprintf(buf, len, "%s: %s", why->where, why->msg);
	else
		snprintf(buf, len, "%s", why->msg);
	return buf;
}
