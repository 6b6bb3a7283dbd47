"""Lightning callbacks (installed as dapo.callbacks): Stage A rollouts and benchmark evaluation."""
