"""Ray Tune sweeps over config keys: the search space, the trial function and the final report."""
