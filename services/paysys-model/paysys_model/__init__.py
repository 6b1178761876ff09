"""paysys_model: trains the risk engine's model from the data feed and evaluates models.

The loop (docs/risk-model.md): the data feed exports every decision with the feature values
the engine served (`features`, `features_version`) and the disputes that arrived later;
`train` turns the mature, approved payments into labeled rows, trains LightGBM on the older
days, calibrates, picks the threshold for a target false-positive rate on the newest days and
writes a model directory (model.txt + model-card.json) that the Rust engine loads;
`evaluate` compares the champion and a shadow challenger on labeled data.
"""

import os

# LightGBM's OpenMP threads otherwise spin while they wait for work: on a machine whose cores
# are busy with other processes (CI, a shared build host) that spinning took 45x the time of a
# 200-tree fit (108 s instead of 2.4 s for 76,000 rows, the same model.txt byte for byte).
# Set before lightgbm (and its OpenMP runtime) is loaded; a value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
