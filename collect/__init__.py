"""Behaviour policies, dataset recipes and the Minari dataset writer (``dynamite-collect``)."""
