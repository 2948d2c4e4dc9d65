TOOLS_CTL_SRC := tools/flairctl.c tools/ctl_rules.c tools/flairctl_resv.c
# flair-sandbox: options/router/faults, ledger, charges, 3-D Secure + webhook.
TOOLS_SANDBOX_SRC := tools/sandbox/sandbox.c tools/sandbox/ledger.c \
                     tools/sandbox/charge.c tools/sandbox/threeds.c \
                     tools/sandbox/ops.c tools/sandbox/stripe.c \
                     tools/sandbox/stripe_contract.c
SANDBOX_ROOMS := processors crypto core
