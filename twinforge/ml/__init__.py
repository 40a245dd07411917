"""Models inside the twins: anomaly detection (per setting cluster), remaining useful
life, power forecasts and their registry. Training modules import torch, scikit-learn
and LightGBM; what the asset hosts import to score (:mod:`twinforge.ml.onnx_scoring`,
:mod:`twinforge.ml.anomaly.scoring`) needs only numpy and onnxruntime."""
