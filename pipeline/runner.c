/*
 * pipeline/runner.c — resolves stage orders and drives a transaction
 * through them (the small driver loop of nginx's run_phases).
 *
 * The runner owns a started transaction: the response pipeline's last
 * stage (post, the relay) hands the answer to on_done, and the runner frees
 * the transaction when the loop ends. A suspended stage resumes through a
 * deferred event on the reactor's base, so completions from libcurl or the
 * store writer never recurse into the next stage.
 */
#define LOG_MODULE "pipeline"

#include <stdio.h>
#include <string.h>

#include <event2/event.h>

#include "core/err.h"
#include "core/log.h"
#include "core/util.h"
#include "pipeline/pipeline.h"
#include "pipeline/stages.h"

static const struct stage_type *
stage_find(enum stage_phase phase, const char *name, size_t len)
{
	for (const struct stage_type *const *s = stage_types; *s != NULL; s++)
		if ((*s)->phase == phase && strlen((*s)->name) == len &&
		    strncmp((*s)->name, name, len) == 0)
			return *s;
	return NULL;
}

static int
build_phase(enum stage_phase phase, const char *order, struct pipeline *pl,
            struct fgw_why *why)
{
	const char *p = order;
	pl->n[phase] = 0;
	while (*p != '\0') {
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		while (len > 0 && *p == ' ') {
			p++;
			len--;
		}
		while (len > 0 && p[len - 1] == ' ')
			len--;
		const struct stage_type *st = stage_find(phase, p, len);
		if (st == NULL) {
			fgw_why_set(why, NULL, 0, 0, "unknown %s stage '%.*s'",
			            phase == PHASE_REQUEST ? "request" : "response",
			            (int)(len > 32 ? 32 : len), p);
			return FGW_ERR_INVALID;
		}
		for (int i = 0; i < pl->n[phase]; i++) {
			if (pl->stages[phase][i] == st) {
				fgw_why_set(why, NULL, 0, 0, "stage '%s' listed twice", st->name);
				return FGW_ERR_INVALID;
			}
		}
		if (pl->n[phase] == PIPELINE_MAX_STAGES) {
			fgw_why_set(why, NULL, 0, 0, "too many stages");
			return FGW_ERR_INVALID;
		}
		pl->stages[phase][pl->n[phase]++] = st;
		p += len;
		while (*p == ' ' || *p == ',')
			p++;
	}
	return FGW_OK;
}

static int
has_stage(const struct pipeline *pl, enum stage_phase phase, const struct stage_type *st)
{
	for (int i = 0; i < pl->n[phase]; i++)
		if (pl->stages[phase][i] == st)
			return 1;
	return 0;
}

int
pipeline_build(const char *request_order, const char *response_order,
               struct pipeline *out, struct fgw_why *why)
{
	struct pipeline pl;
	int r;
	memset(&pl, 0, sizeof(pl));
	if ((r = build_phase(PHASE_REQUEST, request_order, &pl, why)) != 0 ||
	    (r = build_phase(PHASE_RESPONSE, response_order, &pl, why)) != 0)
		return r;
	/* The invariants need these: a card is always tokenized and validated,
	 * the processor is always called, the outcome always recorded before
	 * the relay answers, and the relay comes last. */
	if (!has_stage(&pl, PHASE_REQUEST, &stage_token) ||
	    !has_stage(&pl, PHASE_REQUEST, &stage_rule) ||
	    !has_stage(&pl, PHASE_REQUEST, &stage_post)) {
		fgw_why_set(why, NULL, 0, 0,
		            "the request pipeline must include token, rule and post");
		return FGW_ERR_INVALID;
	}
	if (pl.stages[PHASE_REQUEST][pl.n[PHASE_REQUEST] - 1] != &stage_post) {
		fgw_why_set(why, NULL, 0, 0, "post must be the last request stage");
		return FGW_ERR_INVALID;
	}
	if (has_stage(&pl, PHASE_REQUEST, &stage_encrypt)) {
		for (int i = 0; i < pl.n[PHASE_REQUEST]; i++) {
			if (pl.stages[PHASE_REQUEST][i] == &stage_encrypt)
				break;
			if (pl.stages[PHASE_REQUEST][i] == &stage_post) {
				fgw_why_set(why, NULL, 0, 0, "encrypt must come before post");
				return FGW_ERR_INVALID;
			}
		}
	} else {
		fgw_why_set(why, NULL, 0, 0, "the request pipeline must include encrypt");
		return FGW_ERR_INVALID;
	}
	if (!has_stage(&pl, PHASE_RESPONSE, &stage_record) || pl.n[PHASE_RESPONSE] < 2 ||
	    pl.stages[PHASE_RESPONSE][pl.n[PHASE_RESPONSE] - 1] != &stage_relay) {
		fgw_why_set(why, NULL, 0, 0,
		            "the response pipeline must include record and end with post");
		return FGW_ERR_INVALID;
	}
	*out = pl;
	return FGW_OK;
}

/* Applies a stage's return code. Returns 1 to keep looping, 0 to yield. */
static int
advance(struct txn *t, enum stage_rc rc)
{
	switch (rc) {
	case STAGE_NEXT:
		t->stage++;
		return 1;
	case STAGE_SUSPEND:
		return 0;
	case STAGE_AGAIN:
		return 1;
	case STAGE_ERROR:
		if (t->out.state == TXN_STATE_NONE && !t->out.rejected)
			txn_set_outcome(t, TXN_FAILED, "INTERNAL_ERROR",
			                "An unexpected error occurred", 500, t->row_created);
		/* fall through */
	case STAGE_STOP:
		if (t->phase == PHASE_REQUEST) {
			t->phase = PHASE_RESPONSE;
			t->stage = 0;
		} else {
			t->stage++;
		}
		return 1;
	}
	return 1;
}

static void
run(struct txn *t)
{
	const struct pipeline *pl = t->env->pl;
	for (;;) {
		if (t->stage >= pl->n[t->phase]) {
			if (t->phase == PHASE_REQUEST) {
				t->phase = PHASE_RESPONSE;
				t->stage = 0;
				continue;
			}
			txn_free(t);
			return;
		}
		const struct stage_type *st = pl->stages[t->phase][t->stage];
		log_txn_debug(t->id, "stage %s/%s", t->phase ? "response" : "request", st->name);
		if (!advance(t, st->run(t)))
			return;
	}
}

static void
resume_cb(evutil_socket_t fd, short what, void *arg)
{
	struct txn *t = arg;
	char prev[LOG_REQUEST_ID_MAX];
	(void)fd;
	(void)what;
	/* Everything logged for the transaction from here names its request
	 * (run may free t: the id is restored from a copy). */
	fgw_strlcpy(prev, log_request_get(), sizeof(prev));
	log_request_set(t->request_id);
	if (advance(t, t->resume_rc))
		run(t);
	log_request_set(prev);
}

void
pipeline_start(struct txn *t, void (*on_done)(struct txn *, void *), void *arg)
{
	t->on_done = on_done;
	t->done_arg = arg;
	t->phase = PHASE_REQUEST;
	t->stage = 0;
	t->resume_ev = event_new(t->env->base, -1, 0, resume_cb, t);
	if (t->resume_ev == NULL) {
		txn_set_outcome(t, TXN_FAILED, "INTERNAL_ERROR", "An unexpected error occurred",
		                500, 0);
		t->phase = PHASE_RESPONSE;
		t->stage = t->env->pl->n[PHASE_RESPONSE] - 1; /* relay only */
	}
	run(t);
}

void
pipeline_resume(struct txn *t, enum stage_rc rc)
{
	t->resume_rc = rc;
	event_active(t->resume_ev, EV_TIMEOUT, 0);
}
