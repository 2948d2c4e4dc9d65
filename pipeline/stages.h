/*
 * pipeline/stages.h — the stage types (private to the pipeline room).
 * Request phase: token, decrypt, rule, encrypt, post.
 * Response phase: decrypt (reply), record, post (relay).
 */
#ifndef FGW_PIPELINE_STAGES_H
#define FGW_PIPELINE_STAGES_H

#include "pipeline/pipeline.h"

extern const struct stage_type stage_token;
extern const struct stage_type stage_decrypt;
extern const struct stage_type stage_rule;
extern const struct stage_type stage_encrypt;
extern const struct stage_type stage_post;
extern const struct stage_type stage_reply_decrypt;
extern const struct stage_type stage_record;
extern const struct stage_type stage_relay;

/* NULL-terminated table of all stage types, looked up by (phase, name). */
extern const struct stage_type *const stage_types[];

#endif
