/*
 * pipeline/audit_emit.h — the one call every feature uses to add an audit
 * event that is not part of a transaction's own store job (refunds,
 * webhooks in and out, reservations, rules reloads, admin actions, ...).
 *
 * Fire and forget: the event is queued to the store writer and committed
 * in the next group commit, chained and later checkpointed like every
 * other event; a failure is logged, never returned to a payment. When the
 * event belongs with a state change, pass it to that store job instead
 * (store_txn_finish / store_submit_custom take audit events), so both
 * commit together. See docs/audit.md for the catalogue of types.
 */
#ifndef FGW_PIPELINE_AUDIT_EMIT_H
#define FGW_PIPELINE_AUDIT_EMIT_H

struct store;
struct store_waker;

/* actor: client id, JWT subject, "operator:NAME" or "system"; source: the
 * remote address or "local"; type: "area.verb" (docs/audit.md); resource:
 * what it is about (txn id, file, key id); outcome: "success", "failure"
 * or a state; details_json: a masked JSON object or NULL — never a PAN,
 * CVC, key or secret. w may be NULL off a reactor (the completion then
 * runs on the writer thread and only logs). Returns 0 when queued. */
int audit_emit(struct store *st, struct store_waker *w, const char *actor,
               const char *source, const char *type, const char *resource,
               const char *outcome, const char *details_json);

#endif
