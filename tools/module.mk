TOOLS_CTL_SRC := tools/flairctl.c
TOOLS_SANDBOX_SRC := tools/sandbox/sandbox.c
SANDBOX_ROOMS := processors crypto core
