"""Second stage: candidate features and the LightGBM LambdaRank ranker that orders retrieval's top-N."""
