"""The paper's experiments on the scene network, one command each: the scene study (its presets
and runs), Table 1, Figure 2, Appendix B, the units test and the ablations, and the scene's
step cost."""
