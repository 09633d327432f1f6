"""The two towers, their similarity, the retrieval loss with its samplers, and the trainer."""
