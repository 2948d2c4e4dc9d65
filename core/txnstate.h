/*
 * core/txnstate.h — the states a transaction takes and the one table of
 * moves between them. The database and the API keep the states' names
 * (text); code compares states as enum txn_state, converted at the edge
 * with txn_state_of / txn_state_name, never by comparing names.
 *
 * States only move forward: a move is allowed when the table lists it, and
 * a state with no move out of it is final. pipeline/settle.c (txn_settle)
 * checks every move against this table before it writes, and the store's
 * writer checks again against the committed state.
 */
#ifndef FGW_CORE_TXNSTATE_H
#define FGW_CORE_TXNSTATE_H

#include <stdbool.h>

enum txn_state {
	TXN_STATE_NONE = 0,  /* not a state: an unknown or missing name */
	TXN_POSTING,         /* written ahead, the processor is being asked */
	TXN_PROCESSING,      /* the processor's answer is unknown yet */
	TXN_REQUIRES_ACTION, /* waiting for the customer (3-D Secure) */
	TXN_SUCCEEDED,
	TXN_DECLINED,
	TXN_FAILED,
	TXN_AUTHORIZED, /* authorize-only: waits for capture or cancel */
	TXN_CANCELED,
	TXN_PARTIALLY_REFUNDED,
	TXN_REFUNDED,
	TXN_STATE_COUNT
};

/* The state's name as stored and answered; "" for TXN_STATE_NONE or a
 * value out of range. */
const char *txn_state_name(enum txn_state s);
/* The state named name; TXN_STATE_NONE for NULL or an unknown name. */
enum txn_state txn_state_of(const char *name);
/* True for every state above (not TXN_STATE_NONE). */
bool txn_state_known(enum txn_state s);
/* True when a transaction may move from `from` to `to` (the table). */
bool txn_state_may_move(enum txn_state from, enum txn_state to);
/* True when no move leaves s. */
bool txn_state_final(enum txn_state s);
/* The moves of the table, for tests and documentation: *n pairs. */
const enum txn_state (*txn_state_moves(int *n))[2];

#endif
