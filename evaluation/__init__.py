"""Online evaluation of trained runs in the DLCMDP simulators (``dynamite-eval``)."""
