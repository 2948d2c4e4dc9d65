RULES_SRC := rules/rules.c
