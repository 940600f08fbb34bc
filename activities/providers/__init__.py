"""Action providers: one module per CodePipeline provider, each exposing Temporal activities."""
