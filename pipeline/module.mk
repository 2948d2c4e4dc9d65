PIPELINE_SRC := pipeline/txn.c pipeline/runner.c pipeline/events.c pipeline/stage_util.c \
                pipeline/stage_token.c pipeline/stage_decrypt.c pipeline/stage_rule.c \
                pipeline/stage_encrypt.c pipeline/stage_post.c pipeline/proc_call.c \
                pipeline/stage_reply.c pipeline/stage_record.c pipeline/stage_relay.c pipeline/settle.c \
                pipeline/risk.c pipeline/reconcile.c pipeline/stage_method.c \
                pipeline/audit_emit.c pipeline/notify.c pipeline/velsync.c
