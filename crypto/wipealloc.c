/*
 * crypto/wipealloc.c — malloc/realloc/free that wipe a block before it goes
 * back to the allocator. realloc moves by hand so the old block is wiped.
 */
#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <event2/event.h>
#include <sodium.h>

#include "core/err.h"
#include "crypto/wipealloc.h"

void *
wipealloc_malloc(size_t n)
{
	return malloc(n);
}

void
wipealloc_free(void *p)
{
	if (p == NULL)
		return;
	sodium_memzero(p, malloc_usable_size(p));
	free(p);
}

void *
wipealloc_realloc(void *p, size_t n)
{
	void *q;
	size_t old;
	if (p == NULL)
		return malloc(n);
	if (n == 0) {
		wipealloc_free(p);
		return NULL;
	}
	old = malloc_usable_size(p);
	if ((q = malloc(n)) == NULL)
		return NULL;
	memcpy(q, p, old < n ? old : n);
	wipealloc_free(p);
	return q;
}

void
wipealloc_install(void)
{
	cJSON_Hooks hooks = { wipealloc_malloc, wipealloc_free };
	cJSON_InitHooks(&hooks);
	event_set_mem_functions(wipealloc_malloc, wipealloc_realloc, wipealloc_free);
}

void *
wipealloc_calloc(size_t n, size_t size)
{
	return calloc(n, size);
}

char *
wipealloc_strdup(const char *s)
{
	return strdup(s);
}

int
wipealloc_curl_global_init(void)
{
	return curl_global_init_mem(CURL_GLOBAL_DEFAULT, wipealloc_malloc, wipealloc_free,
	                            wipealloc_realloc, wipealloc_strdup,
	                            wipealloc_calloc) == CURLE_OK
	           ? FGW_OK
	           : FGW_ERR_INTERNAL;
}
