/*
 * pipeline/audit_emit.c — see pipeline/audit_emit.h.
 */
#define LOG_MODULE "audit"

#include "core/err.h"
#include "core/log.h"
#include "pipeline/audit_emit.h"
#include "store/store.h"

static void
emitted(void *arg, int rc)
{
	(void)arg;
	if (rc != 0)
		log_error("audit event not recorded: %s", fgw_strerror(rc));
}

int
audit_emit(struct store *st, struct store_waker *w, const char *actor, const char *source,
           const char *type, const char *resource, const char *outcome,
           const char *details_json)
{
	struct store_audit a = { actor, source, type, resource, outcome, details_json };
	int r = store_audit_append(st, w,
	                           &(struct store_commit){
	                               .audit = &a, .n_audit = 1, .done = emitted });
	if (r != 0)
		log_error("audit event %s not queued: %s", type ? type : "?", fgw_strerror(r));
	return r;
}
