/*
 * store/txnmoves.h — the states transactions took that the listeners have
 * not been told of yet (table txn_moves, migration 16). The database
 * writes a row in the same commit as every state a transaction takes
 * (triggers on transactions), so the side effects derived from the state
 * (webhook events, e-mails, reservations) can never be lost to a crash
 * between the state's commit and theirs.
 */
#ifndef FGW_STORE_TXNMOVES_H
#define FGW_STORE_TXNMOVES_H

#include <stdint.h>

#include "store/store.h"

struct store_txn_move {
	int64_t seq;
	char txn_id[40];
	char status[24];
	int64_t at; /* the transaction's updated_at when it took the state */
};

/* The listeners were told txn_id is in status (their own jobs were
 * submitted before this one, so they commit no later): the rows go.
 * done may be NULL. */
int store_txn_moves_done(struct store *st, struct store_waker *w, const char *txn_id,
                         const char *status, store_done_fn done, void *arg);

/* The same, as the guard of a publish's store group (store_commit.guard):
 * submitted first in the group, it deletes the move's row, and when there
 * is none (another publish of the same move, on this instance or another,
 * deleted it first) it fails FGW_ERR_NOT_FOUND and the rest of the group —
 * the listeners' jobs — is not run (FGW_ERR_EXISTS). So each move's side
 * effects are committed once, by whichever publish deletes its row. */
int store_txn_moves_take(struct store *st, struct store_waker *w, const char *txn_id,
                         const char *status, store_done_fn done, void *arg);

/* Up to max rows written before `before` (ms, their `at`), oldest first;
 * *n the count. */
int store_txn_moves_due(struct store_reader *rd, int64_t before,
                        struct store_txn_move *out, int max, int *n);

#endif
