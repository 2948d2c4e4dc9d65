/*
 * pipeline/stage_encrypt.c — request stage "encrypt": seals the card fields
 * the processor needs to the processor's key, then wipes PAN and CVC. A
 * processor whose key says x25519-box (and whose adapter type speaks it)
 * gets an authenticated box from the current gateway box key instead: no
 * X25519 per message, and the reply box proves the processor wrote it.
 */
#define LOG_MODULE "pipeline"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <sodium.h>

#include "core/card.h"
#include "core/err.h"
#include "core/log.h"
#include "core/util.h"
#include "crypto/box.h"
#include "crypto/keys.h"
#include "crypto/sealed.h"
#include "crypto/secmem.h"
#include "crypto/vault.h"
#include "pipeline/pipeline.h"
#include "pipeline/stages.h"
#include "processors/httpc.h"

/* Appends s JSON-escaped (holder names are printable; quotes and
 * backslashes are escaped). Returns the new length or 0 on overflow. */
static size_t
put_escaped(unsigned char *dst, size_t o, size_t cap, const char *s)
{
	for (; *s; s++) {
		if (o + 3 >= cap)
			return 0;
		if (*s == '"' || *s == '\\')
			dst[o++] = '\\';
		dst[o++] = (unsigned char)*s;
	}
	return o;
}

static enum stage_rc
encrypt_run(struct txn *t)
{
	struct txn_card *c = &t->req->card;
	const struct proc_config *pc;
	struct secbuf *buf = NULL;
	size_t cap, o;
	int n, r = FGW_ERR_INTERNAL;

	/* A saved card a processor holds can be charged only there. */
	if (t->req->method_processor[0] != '\0' && t->inst == NULL) {
		struct proc_instance *mi = pipeline_proc_find(t->env, t->req->method_processor);
		if (mi == NULL || !mi->type->takes_processor_method) {
			txn_reject(
			    t, "PAYMENT_METHOD_PROCESSOR",
			    "This saved payment method is held by a processor this "
			    "gateway does not charge it at (it needs the processor that holds it)",
			    400);
			return STAGE_STOP;
		}
		t->inst = mi;
	}
	stage_choose_proc(t);
	pc = txn_proc(t);
	if (t->req->client_confirms) {
		if (txn_proc_type(t)->client_confirms)
			return STAGE_NEXT;
		txn_reject(t, "PROCESSOR_NOT_SUPPORTED",
		           "confirmWith stripe_js needs a stripe processor, and this "
		           "payment goes to another",
		           400);
		return STAGE_STOP;
	}
	if (t->req->processor_method[0] != '\0')
		return txn_proc_type(t)->takes_processor_method
		           ? STAGE_NEXT
		           : stage_invalid(
		                 t, "stripePaymentMethod needs a stripe processor, and this "
		                    "payment goes to another");
	/* A processor that takes the card's clear fields over TLS gets them
	 * from guarded memory when post builds its request (stage_post.c
	 * wipes them once it is handed to the HTTP client). */
	if (txn_proc_type(t)->needs_clear_card)
		return c->pan != NULL ? STAGE_NEXT : stage_invalid(t, "card is required");
	if (!pc->has_pubkey) {
		log_txn_error(t->id, "processor %s has no public key configured", pc->name);
		return STAGE_ERROR;
	}
	if (c->pan == NULL)
		return stage_invalid(t, "card is required");
	cap = c->pan->len + (c->cvc ? c->cvc->len : 0) + 2 * strlen(c->holder) + 128;
	if ((r = secbuf_alloc(&buf, cap)) != 0)
		return STAGE_ERROR;
	/* Built by hand in guarded memory: the PAN never enters a heap
	 * JSON tree on its way to the processor. */
	n = snprintf((char *)buf->data, cap,
	             "{\"number\":\"%s\",\"expMonth\":%d,\"expYear\":%d",
	             (const char *)c->pan->data, c->exp_month, c->exp_year);
	if (n < 0 || (size_t)n >= cap)
		goto out;
	o = (size_t)n;
	if (c->cvc != NULL) {
		n = snprintf((char *)buf->data + o, cap - o, ",\"cvc\":\"%s\"",
		             (const char *)c->cvc->data);
		if (n < 0 || (size_t)n >= cap - o)
			goto out;
		o += (size_t)n;
	}
	if (c->holder[0]) {
		n = snprintf((char *)buf->data + o, cap - o, ",\"holderName\":\"");
		if (n < 0 || (size_t)n >= cap - o)
			goto out;
		if ((o = put_escaped(buf->data, o + (size_t)n, cap, c->holder)) == 0)
			goto out;
		buf->data[o++] = '"';
	}
	if (o + 2 > cap)
		goto out;
	buf->data[o++] = '}';
	buf->data[o] = '\0';
	if (pc->pubkey.alg == SEALED_ALG_BOX && txn_proc_type(t)->speaks_box) {
		/* The reply key named in the request is the one boxed from. */
		if ((r = keyring_box_current(t->env->kr, t->reply_key_id, sizeof(t->reply_key_id),
		                             t->reply_pk)) == 0 &&
		    (r = box_seal_b64(t->env->kr, t->reply_key_id, pc->pubkey.pk, buf->data, o,
		                      &t->sealed_card_b64)) == 0)
			t->card_boxed = 1;
	} else {
		r = sealed_seal_b64(pc->pubkey.pk, buf->data, o, &t->sealed_card_b64);
	}
out:
	secbuf_free(buf);
	/* The processor payload is sealed: the clear PAN and CVC are no
	 * longer needed anywhere. */
	secbuf_free(c->pan);
	secbuf_free(c->cvc);
	c->pan = NULL;
	c->cvc = NULL;
	if (r != 0) {
		log_txn_error(t->id, "sealing for processor failed: %s", fgw_strerror(r));
		return STAGE_ERROR;
	}
	return STAGE_NEXT;
}

const struct stage_type stage_encrypt = { "encrypt", PHASE_REQUEST, encrypt_run };
