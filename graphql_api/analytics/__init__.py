"""Download analytics: the rollup write path, event queries, stats and duration histograms."""
