/*
 * core/txnstate.c — state names and the transition table.
 */
#include <stddef.h>
#include <string.h>

#include "core/txnstate.h"

/* Indexed by enum txn_state. */
static const char *const names[TXN_STATE_COUNT] = {
	[TXN_STATE_NONE] = "",           [TXN_POSTING] = "posting",
	[TXN_PROCESSING] = "processing", [TXN_REQUIRES_ACTION] = "requires_action",
	[TXN_SUCCEEDED] = "succeeded",   [TXN_DECLINED] = "declined",
	[TXN_FAILED] = "failed",         [TXN_AUTHORIZED] = "authorized",
	[TXN_CANCELED] = "canceled",     [TXN_PARTIALLY_REFUNDED] = "partially_refunded",
	[TXN_REFUNDED] = "refunded",
};

/* Every move a transaction may make. Add a state above and its moves
 * here; a state with no move out of it is final. */
static const enum txn_state moves[][2] = {
	{ TXN_POSTING, TXN_PROCESSING },
	{ TXN_POSTING, TXN_REQUIRES_ACTION },
	{ TXN_POSTING, TXN_SUCCEEDED },
	{ TXN_POSTING, TXN_DECLINED },
	{ TXN_POSTING, TXN_FAILED },
	{ TXN_POSTING, TXN_AUTHORIZED },
	{ TXN_PROCESSING, TXN_REQUIRES_ACTION },
	{ TXN_PROCESSING, TXN_SUCCEEDED },
	{ TXN_PROCESSING, TXN_DECLINED },
	{ TXN_PROCESSING, TXN_FAILED },
	{ TXN_PROCESSING, TXN_AUTHORIZED },
	{ TXN_REQUIRES_ACTION, TXN_PROCESSING },
	{ TXN_REQUIRES_ACTION, TXN_SUCCEEDED },
	{ TXN_REQUIRES_ACTION, TXN_DECLINED },
	{ TXN_REQUIRES_ACTION, TXN_FAILED },
	{ TXN_REQUIRES_ACTION, TXN_AUTHORIZED },
	{ TXN_AUTHORIZED, TXN_SUCCEEDED }, /* captured */
	{ TXN_AUTHORIZED, TXN_CANCELED },
	{ TXN_SUCCEEDED, TXN_PARTIALLY_REFUNDED },
	{ TXN_SUCCEEDED, TXN_REFUNDED },
	{ TXN_PARTIALLY_REFUNDED, TXN_REFUNDED },
	/* A second partial refund keeps the state; the refunds table holds
	 * the amounts. */
	{ TXN_PARTIALLY_REFUNDED, TXN_PARTIALLY_REFUNDED },
};

#define N_MOVES ((int)(sizeof(moves) / sizeof(moves[0])))

const char *
txn_state_name(enum txn_state s)
{
	if ((int)s < 0 || s >= TXN_STATE_COUNT)
		return "";
	return names[s];
}

enum txn_state
txn_state_of(const char *name)
{
	if (name == NULL || name[0] == '\0')
		return TXN_STATE_NONE;
	for (int i = TXN_STATE_NONE + 1; i < TXN_STATE_COUNT; i++)
		if (strcmp(name, names[i]) == 0)
			return (enum txn_state)i;
	return TXN_STATE_NONE;
}

bool
txn_state_known(enum txn_state s)
{
	return s > TXN_STATE_NONE && s < TXN_STATE_COUNT;
}

bool
txn_state_may_move(enum txn_state from, enum txn_state to)
{
	if (!txn_state_known(from) || !txn_state_known(to))
		return false;
	for (int i = 0; i < N_MOVES; i++)
		if (moves[i][0] == from && moves[i][1] == to)
			return true;
	return false;
}

bool
txn_state_final(enum txn_state s)
{
	if (!txn_state_known(s))
		return false;
	for (int i = 0; i < N_MOVES; i++)
		if (moves[i][0] == s)
			return false;
	return true;
}

const enum txn_state (*txn_state_moves(int *n))[2]
{
	*n = N_MOVES;
	return moves;
}
