"""softskf: a software SKF library for the tests of card/skf (test infrastructure only).

`build.build_softskf()` compiles softskf.c; `store` exports simulated cards into its key
store; `control` drives it (plugging, vendor behaviours, faults).
"""
