"""One module per `dapo` command (`dapo X` runs `dapo.pipeline.X`, with `-` read as `_`; `fit` serves `dapo fit` and
`dapo validate`), plus what several commands share: `configs` (fit configs as plain data: load, merge, place),
`baseline` (the RFT baseline the demo compares against) and `plan_costs` (the cost model behind `dapo plan`)."""
