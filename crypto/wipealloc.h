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
/* Installs the hooks into libevent and cJSON. */
void wipealloc_install(void);

#endif
