"""Machine learning: anomaly detection (IsolationForest, LOF, autoencoders), remaining
useful life (LSTM), load forecasting, vision inspection (timm to ONNX to onnxruntime,
Grad-CAM, Ray Serve deployment) and the model registry. Does not import runtime.
"""
