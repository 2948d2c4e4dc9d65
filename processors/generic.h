/*
 * processors/generic.h — the "generic" adapter type: an HTTP JSON
 * processor described by a mapping file (docs/adapters.md, "generic").
 */
#ifndef FGW_PROCESSORS_GENERIC_H
#define FGW_PROCESSORS_GENERIC_H

#include <stddef.h>

#include "processors/adapter.h"

/* Reads and checks the mapping file; on success cfg->type_data holds it
 * (read-only from then on, shared by every reactor) and cfg->seals_reply
 * is set from it. On error fills why. */
int generic_map_load(struct proc_config *cfg, const char *path, struct fgw_why *why);
void generic_map_free(struct proc_config *cfg);

#endif
