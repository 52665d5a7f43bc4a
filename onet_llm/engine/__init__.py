"""Engines that run the labelling elsewhere than this process (Ray Data)."""
