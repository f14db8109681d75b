"""Data: scene data sets (Cityscapes layout) and the small image sets of the two-task study."""
