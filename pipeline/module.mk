PIPELINE_SRC := pipeline/txn.c pipeline/runner.c pipeline/stages.c
