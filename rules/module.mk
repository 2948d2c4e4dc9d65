# rules/: the rules language (parse.c), the sets and BIN table (sets.c), the
# evaluator (eval.c), the velocity store (velocity.c) and the public API.
RULES_SRC := rules/rules.c rules/parse.c rules/sets.c rules/eval.c rules/velocity.c
