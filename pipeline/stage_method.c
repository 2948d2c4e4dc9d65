/*
 * pipeline/stage_method.c — paying with a stored card (paymentMethodId):
 * finds the customer's saved method or one-time token, and decrypts its
 * vault entry into guarded memory for the rest of the request pipeline.
 * A stored card has no CVC (it was never kept). The rows are read through
 * store_read, off the reactor on PostgreSQL, while the stage is suspended;
 * the card is decrypted on the reactor once they are in.
 */
#define LOG_MODULE "pipeline"

#include <stdlib.h>
#include <string.h>

#include "core/card.h"
#include "core/err.h"
#include "core/log.h"
#include "core/util.h"
#include "crypto/keys.h"
#include "crypto/sealed.h"
#include "crypto/secmem.h"
#include "crypto/vault.h"
#include "pipeline/pipeline.h"
#include "pipeline/stages.h"
#include "store/methods.h"

static enum stage_rc
not_found(struct txn *t)
{
	txn_reject(t, "PAYMENT_METHOD_NOT_FOUND", "Payment method not found", 404);
	return STAGE_STOP;
}

/* What the stage reads for paymentMethodId, through store_read (off the
 * reactor on PostgreSQL): the saved method, then the vault entry it names
 * (or the token's own). The transaction points at it while the stage is
 * suspended and frees it (txn_method_read_free). */
struct method_read {
	struct txn *t; /* resumed by done; fn never touches it */
	char customer[192];
	char token[64];
	int state; /* READ_* */
	int rc;    /* the read's result */
	int saved; /* a "pm_…" method was found */
	struct store_method m;
	struct store_vault_entry ve;
	char *blob; /* vault_encrypt() output, malloc'ed */
	/* A key ring reload (a key not seen yet), run the same way. */
	struct keyring *kr;
	struct fgw_why why;
};

enum { READ_RUNNING = 1, READ_DONE, READ_RELOADING, READ_RELOADED, READ_USED };

void
txn_method_read_free(struct method_read *mr)
{
	if (mr == NULL)
		return;
	free(mr->blob);
	fgw_freezero(mr, sizeof(*mr));
}

/* On a read thread (PostgreSQL) or in place (SQLite): only mr's fields. */
static int
method_read_run(struct store_reader *rd, void *arg)
{
	struct method_read *mr = arg;
	const char *token = mr->token;
	int r;

	if (strncmp(token, "pm_", 3) == 0) {
		if ((r = store_method_get(rd, mr->customer, token, &mr->m)) != 0)
			return r;
		mr->saved = 1;
		/* The processor holds the card: no vault entry. */
		if (mr->m.processor_method[0] != '\0')
			return FGW_OK;
		token = mr->m.token;
	}
	return store_vault_get(rd, token, &mr->ve, &mr->blob);
}

static void
method_read_done(void *arg, int rc)
{
	struct method_read *mr = arg;

	mr->rc = rc;
	mr->state = READ_DONE;
	pipeline_resume(mr->t, STAGE_AGAIN);
}

/* The key ring locks itself and is shared by every thread (its reload
 * reads the file or its own connection, outside the ring's lock): a read
 * thread may reload it as the reactor would, without waiting on it. */
static int
ring_reload_run(struct store_reader *rd, void *arg)
{
	struct method_read *mr = arg;

	(void)rd;
	return keyring_reload(mr->kr, &mr->why);
}

static void
ring_reload_done(void *arg, int rc)
{
	struct method_read *mr = arg;

	mr->rc = rc;
	mr->state = READ_RELOADED;
	pipeline_resume(mr->t, STAGE_AGAIN);
}

/* Starts the read; the stage runs again when it is done. */
static enum stage_rc
method_read_start(struct txn *t)
{
	struct method_read *mr;

	if ((mr = calloc(1, sizeof(*mr))) == NULL)
		return STAGE_ERROR;
	mr->t = t;
	mr->state = READ_RUNNING;
	fgw_strlcpy(mr->customer, t->req->customer_id, sizeof(mr->customer));
	fgw_strlcpy(mr->token, t->req->payment_method_id, sizeof(mr->token));
	if (store_read(t->env->store, t->env->waker, t->env->reader, method_read_run, mr,
	               method_read_done) != 0) {
		txn_method_read_free(mr);
		return STAGE_ERROR;
	}
	t->method_read = mr; /* freed with t, even while the read runs */
	return STAGE_SUSPEND;
}

enum stage_rc
stage_load_method(struct txn *t)
{
	struct txn_request *rq = t->req;
	struct method_read *mr = t->method_read;
	struct store_vault_entry *ve;
	struct secbuf *pan = NULL;
	enum stage_rc rc;
	int r;

	if (rq->payment_method_id[0] == '\0' || rq->card.pan != NULL || t->vaulted)
		return STAGE_NEXT;
	if (rq->customer_id[0] == '\0' || t->env->reader == NULL)
		return not_found(t);
	if (mr == NULL) {
		if ((rc = method_read_start(t)) == STAGE_ERROR)
			goto fail;
		return rc;
	}
	if (mr->state == READ_USED)
		return STAGE_NEXT;
	ve = &mr->ve;
	if (mr->state == READ_RELOADED) {
		mr->state = READ_USED;
		if (mr->rc == 0) {
			r = vault_decrypt(t->env->kr, ve->token, mr->blob, &pan);
		} else {
			log_txn_warn(t->id, "key ring reload refused: %s", mr->why.msg);
			r = FGW_ERR_NOT_FOUND;
		}
		goto decrypted;
	}
	if (mr->state != READ_DONE)
		goto fail; /* not resumed by its read: cannot happen */
	mr->state = READ_USED;
	if (mr->saved)
		t->method_saved = 1;
	if (mr->rc == FGW_ERR_NOT_FOUND) {
		rc = not_found(t);
		goto out;
	}
	if (mr->rc != 0)
		goto fail;
	if (mr->saved && mr->m.processor_method[0] != '\0') {
		const struct store_method *m = &mr->m;
		/* The processor holds the card: nothing to decrypt; the charge
		 * names its card and customer there. */
		if (fgw_strlcpy(rq->processor_method, m->processor_method,
		                sizeof(rq->processor_method)) != 0 ||
		    fgw_strlcpy(rq->processor_customer, m->processor_customer,
		                sizeof(rq->processor_customer)) != 0 ||
		    fgw_strlcpy(rq->method_processor, m->processor,
		                sizeof(rq->method_processor)) != 0)
			goto fail;
		/* No vault entry: the token stage's fresh token names nothing. */
		t->token[0] = '\0';
		fgw_strlcpy(t->brand, m->brand, sizeof(t->brand));
		fgw_strlcpy(t->last4, m->last4, sizeof(t->last4));
		rq->card.exp_month = m->exp_month;
		rq->card.exp_year = m->exp_year;
		rc = STAGE_NEXT;
		goto out;
	}
	/* Scoping: only the customer's own entry, and a one-time one only
	 * while it lives. */
	if (strcmp(ve->customer_id, rq->customer_id) != 0 ||
	    (!ve->saved && ve->expires_at != 0 && ve->expires_at <= fgw_now_ms())) {
		rc = not_found(t);
		goto out;
	}
	if (ve->saved && !t->method_saved)
		t->method_saved = 1;
	r = vault_decrypt(t->env->kr, ve->token, mr->blob, &pan);
	if (r == FGW_ERR_NOT_FOUND) {
		/* A key this process has not seen yet: flairctl rotated and
		 * rewrapped before the key ring watch noticed. Re-read the ring
		 * now (a small local file, or one row of the PostgreSQL store,
		 * no dearer than the vault read just made; off the reactor like
		 * it) rather than fail the payment; the blob waits for it. */
		mr->kr = t->env->kr;
		mr->state = READ_RELOADING;
		if (store_read(t->env->store, t->env->waker, t->env->reader, ring_reload_run, mr,
		               ring_reload_done) == 0)
			return STAGE_SUSPEND;
		mr->state = READ_USED;
	}
decrypted:
	if (r != 0) {
		log_txn_error(t->id, "vault decrypt failed for key %s: %s", ve->key_id,
		              fgw_strerror(r));
		goto fail;
	}
	rq->card.pan = pan;
	pan = NULL; /* owned by the card now */
	rq->card.exp_month = ve->exp_month;
	rq->card.exp_year = ve->exp_year;
	fgw_strlcpy(t->token, ve->token, sizeof(t->token));
	fgw_strlcpy(t->fingerprint, ve->fingerprint, sizeof(t->fingerprint));
	fgw_strlcpy(t->brand, ve->brand, sizeof(t->brand));
	fgw_strlcpy(t->bin, ve->bin, sizeof(t->bin));
	fgw_strlcpy(t->last4, ve->last4, sizeof(t->last4));
	fgw_strlcpy(t->vault_key_id, ve->key_id, sizeof(t->vault_key_id));
	t->vaulted = 1;
	t->vault_reused = 1;
	rc = STAGE_NEXT;
	goto out;
fail:
	txn_set_outcome(t, TXN_FAILED, "INTERNAL_ERROR", "The stored card could not be read",
	                500, 0);
	rc = STAGE_ERROR;
out:
	secbuf_free(pan);
	if (mr != NULL) {
		/* The vault blob is not needed after this: gone now, not at
		 * the end of the payment. */
		free(mr->blob);
		mr->blob = NULL;
	}
	return rc;
}

static int
card_err(struct fgw_why *why, const char *field, const char *msg)
{
	fgw_why_set(why, field, 0, 0, "%s", msg);
	return FGW_ERR_INVALID;
}

int
txn_card_to_vault(struct keyring *kr, const struct sealed_card_policy *pol,
                  struct txn_request *rq, struct store_vault_entry *ve, char **blob,
                  struct fgw_why *why)
{
	struct secbuf *plain = NULL;
	const struct secbuf *pan;
	int r;

	memset(ve, 0, sizeof(*ve));
	*blob = NULL;
	if (rq->has_encrypted && rq->card.pan == NULL) {
		r = sealed_open_b64(kr, rq->enc_key_id, rq->enc_data, strlen(rq->enc_data),
		                    &plain);
		if (r == FGW_ERR_NOT_FOUND) {
			r = card_err(why, "encryptedCard.keyId", "is not a current gateway key");
			goto out;
		}
		if (r != 0) {
			r = card_err(why, "encryptedCard.data", "does not open with that key");
			goto out;
		}
		if ((r = txn_card_parse_sealed((const char *)plain->data, plain->len, pol,
		                               fgw_now_ms(), &rq->card, why)) != 0)
			goto out;
	}
	/* A saved card is charged later without its CVC: drop it now. */
	secbuf_free(rq->card.cvc);
	rq->card.cvc = NULL;
	if ((pan = rq->card.pan) == NULL) {
		r = card_err(why, "card", "is required");
		goto out;
	}
	if (!card_pan_ok((const char *)pan->data, pan->len)) {
		r = card_err(why, "card.number", "is not a valid card number");
		goto out;
	}
	if (!card_expiry_ok(rq->card.exp_month, rq->card.exp_year, fgw_now_ms())) {
		r = card_err(why, "card", "has expired");
		goto out;
	}
	card_bin_last4((const char *)pan->data, pan->len, ve->bin, ve->last4);
	fgw_strlcpy(ve->brand,
	            card_brand_name(card_brand_of((const char *)pan->data, pan->len)),
	            sizeof(ve->brand));
	ve->exp_month = rq->card.exp_month;
	ve->exp_year = rq->card.exp_year;
	ve->saved = 1;
	if ((r = vault_new_token(ve->token, sizeof(ve->token))) != 0 ||
	    (r = vault_fingerprint(kr, (const char *)pan->data, pan->len, ve->fingerprint)) !=
	        0 ||
	    (r = vault_encrypt(kr, ve->token, pan, blob)) != 0 ||
	    (r = vault_blob_key_id(*blob, ve->key_id, sizeof(ve->key_id))) != 0)
		goto out;
	ve->blob = *blob;
	r = FGW_OK;
out:
	secbuf_free(plain);
	if (r != 0) {
		free(*blob);
		*blob = NULL;
	}
	return r;
}
