/*
 * core/freezero.c — fgw_freezero (core/util.h), in a file of its own: it
 * needs libc only, so code that links core alone (the JSON parser's
 * differential test, fuzz targets) does not pull in util.c's libsodium.
 */
#include <stdlib.h>
#include <string.h>

#include "core/util.h"

void
fgw_freezero(void *p, size_t len)
{
	if (p == NULL)
		return;
	explicit_bzero(p, len);
	free(p);
}
