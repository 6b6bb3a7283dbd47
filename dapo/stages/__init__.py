"""The data-making stages, callable from a command or from a callback at fit start: Stage A (`stage_a`: sample
solutions, MC-estimate every state's value, with its engine in `mc_rollouts` and shard bookkeeping in `shards`),
Stage B (`stage_b`: critic values and advantages of candidate actions, in `candidate_advantages`) and evaluation
(generate, grade, compare)."""
