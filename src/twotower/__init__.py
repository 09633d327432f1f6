"""twotower: two-tower retrieval and ranking for personalized recommendation and search."""

__version__ = "0.1.0"
