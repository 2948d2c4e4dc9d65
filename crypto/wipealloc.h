/*
 * crypto/wipealloc.h — allocator hooks that wipe memory before freeing it.
 *
 * Request bodies pass through libevent's buffers and cJSON's nodes before
 * the card fields are moved into guarded memory. Installing these hooks
 * into libevent (event_set_mem_functions) and cJSON (cJSON_InitHooks) at
 * start-up means no freed heap block keeps a copy of a PAN or CVC.
 * Call wipealloc_install() once, before any event_base is created.
 */
#ifndef FGW_CRYPTO_WIPEALLOC_H
#define FGW_CRYPTO_WIPEALLOC_H

#include <stddef.h>

void *wipealloc_malloc(size_t n);
void *wipealloc_realloc(void *p, size_t n);
void wipealloc_free(void *p);
void *wipealloc_calloc(size_t n, size_t size);
char *wipealloc_strdup(const char *s);
/* Installs the hooks into libevent and cJSON. */
void wipealloc_install(void);
/* curl_global_init with these allocators: libcurl's send buffers (a
 * processor request may carry card fields over TLS) are wiped when freed.
 * Returns 0 or FGW_ERR_INTERNAL. */
int wipealloc_curl_global_init(void);

#endif
