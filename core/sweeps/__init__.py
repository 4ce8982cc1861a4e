"""Sweeps (loss tournaments): the spec and its children, the state rules, the leaderboard."""
