"""Anomaly detection per setting cluster: the molding practice (training data chosen by
lot quality, K-Means setting clusters, MinMax scaling with clipping, thresholds from the
training error distribution, the nearest trained cluster for a setting never trained),
and the same machinery for any interface (e.g. each machine's power)."""
