/*
 * crypto/wipealloc.c — malloc/realloc/free that wipe a block before it goes
 * back to the allocator. realloc moves by hand so the old block is wiped.
 */
#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <event2/event.h>
#include <sodium.h>

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
	event_set_mem_functions(wipealloc_malloc, wipealloc_realloc,
	                        wipealloc_free);
}
