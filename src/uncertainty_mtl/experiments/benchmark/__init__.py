"""The methods benchmark's machinery: the methods tables (the scene's and the two-task
problem's), the tuned protocol (rate search, successive halving, the choice on the selection
split) and the paired statistics."""
