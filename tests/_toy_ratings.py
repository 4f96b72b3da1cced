"""A small random ratings table shared by the RatingsCompleter tests."""

import numpy as np


def toy_ratings(n_users=12, n_items=10, seed=0):
    """``(users, items, ratings)``: about 60% of a user x item grid, ratings
    ``round(3 + N(0, 1))`` clipped to 1..5."""
    rng = np.random.default_rng(seed)
    users, items = np.meshgrid(np.arange(n_users), np.arange(n_items), indexing="ij")
    keep = rng.random(users.shape) < 0.6
    users, items = users[keep], items[keep]
    ratings = np.clip(np.round(3 + rng.standard_normal(users.size)), 1, 5)
    return users, items, ratings
